"""Record icefall's ScaledAdam + Eden trajectories on tests/optim_cases.py's problems.

A developer tool, run once (the result, icefall_optim_reference.pt, is committed): it needs
icefall's optim.py, which is not a dependency of this project. Set-up, in a virtual environment
of its own (never the project's):

    python3 -m venv /tmp/icefall-venv
    /tmp/icefall-venv/bin/pip install torch==2.13.0       # the CPU build
    /tmp/icefall-venv/bin/pip install --no-deps zipformer==0.1.3
    /tmp/icefall-venv/bin/python tests/data/record_icefall_optim.py

zipformer==0.1.3 (PyPI, Apache-2.0, by icefall's authors) ships icefall's
egs/librispeech/ASR/zipformer/optim.py as zipformer/modules/optim.py. Its package __init__ pulls
in the whole recipe and its dependencies, so only optim.py is loaded, with the one name it
imports from zipformer.utils (fix_random_seed, used by its self-test only) stubbed.
"""
import argparse
import importlib.util
import logging
import sys
import types
from pathlib import Path

import torch

DATA_DIR = Path(__file__).resolve().parent
OUTPUT = DATA_DIR / "icefall_optim_reference.pt"
SOURCE = "zipformer==0.1.3 (PyPI): zipformer/modules/optim.py, icefall's egs/librispeech/ASR/zipformer/optim.py"


def load_file(name: str, path: Path) -> types.ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def load_icefall_optim() -> types.ModuleType:
    package = importlib.util.find_spec("zipformer")  # found, not imported
    optim_py = Path(package.submodule_search_locations[0]) / "modules" / "optim.py" if package else None
    if optim_py is None or not optim_py.is_file():
        raise SystemExit("icefall's optim.py not found: pip install --no-deps zipformer==0.1.3 in this environment")
    utils = types.ModuleType("zipformer.utils")
    utils.fix_random_seed = torch.manual_seed
    sys.modules["zipformer"] = types.ModuleType("zipformer")
    sys.modules["zipformer.utils"] = utils
    return load_file("icefall_optim", optim_py)


def icefall_threshold(optimizer: torch.optim.Optimizer) -> float | None:
    """icefall keeps the threshold in the state of one tensor of each group."""
    found = [s["model_norm_threshold"] for s in optimizer.state.values() if "model_norm_threshold" in s]
    if len(found) > 1:
        raise RuntimeError("one threshold per group: record clipping cases with one group only")
    return found[0] if found else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", type=Path, default=OUTPUT)
    args = parser.parse_args()
    icefall = load_icefall_optim()
    cases = load_file("optim_cases", DATA_DIR.parent / "optim_cases.py")
    torch.set_num_threads(1)
    logging.disable(logging.WARNING)  # icefall logs every threshold estimate as a warning
    reference = {
        "source": SOURCE,
        "torch": str(torch.__version__),
        "cases": {
            name: cases.replay(case, icefall.ScaledAdam, icefall.Eden, icefall_threshold)
            for name, case in cases.CASES.items()
        },
    }
    torch.save(reference, args.output)
    print(f"wrote {args.output}: {', '.join(reference['cases'])}")


if __name__ == "__main__":
    main()
