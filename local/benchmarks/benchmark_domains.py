#!/usr/bin/env python3
"""Resident memory of serving N domains: one base model with N stacked tuners against N models.

For N = 1, 3, 10 random tuner-only files (adapters of --size, or LoRA of rank --size) on the base
model of --base-ckpt, each configuration is loaded in a fresh Python process: either the base once
with the N tuners stacked (zipformer.tuners.domains, as decode.py --tuners loads them) or N separate
tuned models (the base weights in each, as N decode.py processes or N one-domain models would
hold). The process runs one encoder forward pass per model (a 5 s utterance) so that PyTorch's
scratch memory is counted, frees what it can, and reports its resident memory (RSS) and the part
above the interpreter with PyTorch imported.

Usage:
  ./local/benchmarks/benchmark_domains.py                                   # adapters of dim 16, pretrained/base.pt
  ./local/benchmarks/benchmark_domains.py --tuner lora --size 8 --domains 1,3,10
"""
import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Dict, List

import torch
from torch import nn

from zipformer.checkpoints.checkpoint import read_model_file
from zipformer.checkpoints.config import flags_given
from zipformer.checkpoints.loader import ModelLoader
from zipformer.core.errors import UserError, exit_on_user_error
from zipformer.core.params import AttributeDict
from zipformer.decoding import session as decoding
from zipformer.model.flags import add_model_arguments
from zipformer.model.frontend import FEATURE_DIM, frontend_params
from zipformer.training.memory import release_freed_memory, resident_memory_mb
from zipformer.tuners.decode_main import TunerDecodeRecipe
from zipformer.tuners.domains import DomainsRecipe
from zipformer.tuners.files import save_tuner_file
from zipformer.tuners.recipes import TunerDecodingRecipe, get_tuned_model
from zipformer.tuners.stacking import domains_selected
from zipformer.tuners.tuner import Tuner
from zipformer_adapter.adapter import AdapterTuner
from zipformer_lora.lora import LoraTuner

TUNERS = {"adapters": AdapterTuner(), "lora": LoraTuner()}
MODES = ("stacked", "separate")
FRAMES = 500  # one 5 s utterance per forward pass


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base-ckpt", type=Path, default=Path("pretrained/base.pt"), help="The base model.")
    parser.add_argument("--tuner", choices=tuple(TUNERS), default="adapters")
    parser.add_argument("--size", type=int, default=16, help="Adapter dim or LoRA rank of every domain.")
    parser.add_argument("--domains", type=str, default="1,3,10", help="The numbers of domains to measure.")
    parser.add_argument("--measure", nargs=2, metavar=("MODE", "SPEC"), help=argparse.SUPPRESS)
    return parser


def model_params(base_ckpt: Path, tuner: Tuner, size: int) -> AttributeDict:
    """The base's shape (its stored configuration) with the tuner switched on at `size`."""
    parser = argparse.ArgumentParser()
    add_model_arguments(parser)
    weights = read_model_file(base_ckpt, flag="--base-ckpt")
    params = AttributeDict(vars(parser.parse_args([])))
    params.update(weights.model_config or {})
    params.update(feature_dim=FEATURE_DIM, blank_id=0, vocab_size=weights.state_dict["decoder.embedding.weight"].shape[0])
    params.update({tuner.switch: True, tuner.size: size, "lora_alpha": 4.0})
    return params


def write_random_tuners(base_ckpt: Path, tuner: Tuner, size: int, count: int, out_dir: Path) -> List[Path]:
    """`count` tuner-only files on the base, with random weights (the memory does not depend on them)."""
    params = model_params(base_ckpt, tuner, size)
    model = get_tuned_model(params, tuner)
    base = read_model_file(base_ckpt, flag="--base-ckpt")
    model.load_state_dict({**model.state_dict(), **base.state_dict})
    info = {"batch_idx_train": 0, "average_period": 1, "vocabulary": base.vocabulary,
            "model_config": {**(base.model_config or {}), tuner.switch: True, tuner.size: size, "lora_alpha": 4.0}}
    files = []
    for k in range(count):
        with torch.no_grad():
            for name, param in model.named_parameters():
                if tuner.is_tuner_key(name):
                    param.normal_(0.0, 0.05)
        files.append(out_dir / f"{tuner.file_prefix}domain{k}.pt")
        save_tuner_file(files[-1], model, None, info, tuner)
    return files


def load_models(mode: str, spec: str, base_ckpt: Path, tuner: Tuner) -> List[nn.Module]:
    """The models that serve the domains of `spec`, loaded as decode.py loads them: one with the
    tuners stacked (--tuners), or one per domain (--base-ckpt with each tuner-only file)."""
    parser = decoding.get_parser(TunerDecodeRecipe(tuner))
    if mode == "stacked":
        loaders = [(DomainsRecipe(tuner), ["--tuners", spec])]
    else:
        loaders = [(TunerDecodingRecipe(tuner), [f"--{tuner.file_prefix}ckpt", item.split("=", 1)[1]])
                   for item in spec.split(",")]
    models = []
    for recipe, flags in loaders:
        argv = ["--base-ckpt", str(base_ckpt), f"--{tuner.switch.replace('_', '-')}", "1", *flags]
        params = AttributeDict({**frontend_params(), **vars(parser.parse_args(argv))})
        models.append(ModelLoader(params, recipe, flags_given(parser, argv), tokens=None).build())
    return models


def measure(mode: str, spec: str, base_ckpt: Path, tuner: Tuner) -> Dict[str, float]:
    """In this (fresh) process: load the models, run each once, report resident memory in MB."""
    release_freed_memory()
    start = resident_memory_mb()
    models = load_models(mode, spec, base_ckpt, tuner)
    x = torch.randn(1, FRAMES, FEATURE_DIM)
    x_lens = torch.tensor([FRAMES])
    with torch.no_grad():
        for model in models:
            if mode == "stacked":
                with domains_selected(model, tuner, torch.zeros(1, dtype=torch.int64)):
                    model.forward_encoder(x, x_lens)
            else:
                model.forward_encoder(x, x_lens)
    release_freed_memory()
    rss = resident_memory_mb()
    parameters = sum(p.numel() for model in models for p in model.parameters())
    return {"rss_mb": rss, "models_mb": rss - start, "parameters": parameters}


def run_fresh(mode: str, spec: str, args: argparse.Namespace) -> Dict[str, float]:
    command = [sys.executable, __file__, "--base-ckpt", str(args.base_ckpt), "--tuner", args.tuner,
               "--size", str(args.size), "--measure", mode, spec]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"measuring {mode} failed:\n{result.stderr[-2000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    args = get_parser().parse_args()
    tuner = TUNERS[args.tuner]
    with exit_on_user_error():
        if args.measure:
            print(json.dumps(measure(args.measure[0], args.measure[1], args.base_ckpt, tuner)))
            return
        counts = [int(n) for n in args.domains.split(",")]
        if min(counts) < 1:
            raise UserError(f"--domains {args.domains}: give numbers of domains >= 1")
        with tempfile.TemporaryDirectory() as tmp:
            files = write_random_tuners(args.base_ckpt, tuner, args.size, max(counts), Path(tmp))
            rows = []
            for n in counts:
                spec = ",".join(f"domain{k}={files[k]}" for k in range(n))
                rows.append((n, {mode: run_fresh(mode, spec, args) for mode in MODES}))
    print(f"{args.base_ckpt}, {tuner.name} of {tuner.size.split('_')[-1]} {args.size}; resident memory (RSS) of a fresh "
          "process after loading and one 5 s forward pass per model, MB (above the interpreter with PyTorch: in brackets)")
    print("domains\tone base + N stacked tuners\tN separate models\tparameters (stacked / separate)")
    for n, result in rows:
        stacked, separate = result["stacked"], result["separate"]
        cells = [f"{r['rss_mb']:.0f} ({r['models_mb']:.0f})" for r in (stacked, separate)]
        counts = f"{stacked['parameters'] / 1e6:.2f}M / {separate['parameters'] / 1e6:.2f}M"
        print("\t".join([str(n), *cells, counts]))


if __name__ == "__main__":
    main()
