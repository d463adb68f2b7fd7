#!/usr/bin/env python3
"""The three-domain table of `./run.sh --domains`: $exp_root/domains/summary.md (printed too).

Each test set (source, target, target_b) decoded by the base model, by each target domain's
adapters alone, by the one mixed-domain decode (every utterance with its own domain's adapters,
source with none: decode.py --tuners ... --mixed-domains 1), and by the one ONNX encoder for every
domain (onnxruntime, fp32 and int8). The mixed decode must give each test set exactly what its own
domain gives alone: the table says whether the hypotheses are identical.
"""
import argparse
from datetime import datetime
from pathlib import Path
from typing import Dict, List, Optional

from local.reports.result_files import GREEDY, fmt, read_wer, same_hyps
from zipformer.core.atomic import atomic_write_text

TEST_SETS = ("source", "target", "target_b")
DOMAIN_OF = {"source": "base", "target": "target", "target_b": "target_b"}  # run.sh's --cut-domains
REGISTRY = "target-target_b"  # the --tuners names, in order


def build_table(exp_root: Path, adapter_dim: int, adapter_epochs: int) -> str:
    alone = f"epoch-{adapter_epochs}-avg-1-*-adapters-dim-{adapter_dim}"
    sources = {
        "base": (exp_root / "base" / GREEDY, "epoch-99-avg-1-*"),
        "target": (exp_root / f"adapter_dim{adapter_dim}" / GREEDY, alone),
        "target_b": (exp_root / f"adapter_dim{adapter_dim}_target_b" / GREEDY, alone),
        "mixed": (exp_root / "domains" / GREEDY, f"*-adapters-domains-{REGISTRY}-mixed"),
        "onnx": (exp_root / "domains" / GREEDY, f"onnx-domains-{REGISTRY}"),
        "onnx_int8": (exp_root / "domains" / GREEDY, f"onnx-domains-{REGISTRY}.int8"),
    }
    wers: Dict[str, Dict[str, Optional[float]]] = {
        name: {s: read_wer(res_dir, s, pattern) for s in TEST_SETS} for name, (res_dir, pattern) in sources.items()
    }

    def same_as_alone(test_set: str) -> str:
        (mixed_dir, mixed), (own_dir, own) = sources["mixed"], sources[DOMAIN_OF[test_set]]
        return same_hyps(mixed_dir, own_dir, mixed, own, test_set)

    lines: List[str] = [
        f"# Several domains on one base ({datetime.now():%Y-%m-%d %H:%M})",
        "",
        "WER % (greedy search) of each test set. Mixed: one decode of the three test sets shuffled",
        "together, each utterance with its own domain's adapters (source: none); ONNX: one encoder",
        "for every domain, a domain index per utterance (onnxruntime).",
        "",
        "| test set | its domain | base model | target adapters | target_b adapters | mixed batch | "
        "same hypotheses as its domain alone | one ONNX encoder fp32 | int8 |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for s in TEST_SETS:
        cells = [fmt(wers[name][s]) for name in ("base", "target", "target_b", "mixed")]
        cells += [same_as_alone(s), fmt(wers["onnx"][s]), fmt(wers["onnx_int8"][s])]
        lines.append(f"| {s} | {DOMAIN_OF[s]} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--exp-root", type=Path, default=Path("exp"))
    parser.add_argument("--adapter-dim", type=int, default=8)
    parser.add_argument("--adapter-epochs", type=int, required=True)
    args = parser.parse_args()
    table = build_table(args.exp_root, args.adapter_dim, args.adapter_epochs)
    out = args.exp_root / "domains" / "summary.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, table)
    print(table)
    print(f"(written to {out})")


if __name__ == "__main__":
    main()
