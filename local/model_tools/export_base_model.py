#!/usr/bin/env python3
"""Write a pretrained model file from a training run: icefall's pretrained.pt format, plus what it is.

  ./local/model_tools/export_base_model.py --exp-dir exp/base/train --epoch 40 --avg 10 --out exp/base/pretrained.pt

The file holds {"model": state_dict, "model_config": ..., "vocabulary": ...}: icefall's scripts read
its "model", this project's scripts also its configuration (no shape flags needed). Averages like
decode.py (--use-averaged-model by default). --dtype float16 halves the file, which is how the
small base model is shipped in pretrained/ (it is loaded back into float32).
"""
import argparse
from pathlib import Path

import torch

from zipformer.checkpoints.averaging import load_averaged_state_dict
from zipformer.core.atomic import write_atomically
from zipformer.core.errors import exit_on_user_error, fail
from zipformer.core.flag_types import str2bool


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--exp-dir", type=Path, required=True)
    parser.add_argument("--epoch", type=int, default=0, help="Use epoch-N.pt files (or --iter).")
    parser.add_argument("--iter", type=int, default=0)
    parser.add_argument("--avg", type=int, default=1)
    parser.add_argument("--use-averaged-model", type=str2bool, default=True)
    parser.add_argument("--dtype", choices=("float32", "float16"), default="float32")
    parser.add_argument("--out", type=Path, required=True)
    return parser


def main() -> None:
    args = get_parser().parse_args()
    if args.epoch < 1 and args.iter < 1:
        fail("pass --epoch N or --iter N: which checkpoints to export")
    with exit_on_user_error():
        weights = load_averaged_state_dict(vars(args))
    dtype = getattr(torch, args.dtype)
    state_dict = {k: v.to(dtype) if v.is_floating_point() else v for k, v in weights.state_dict.items()}
    pretrained = {"model": state_dict, "model_config": weights.model_config, "vocabulary": weights.vocabulary}
    write_atomically(args.out, lambda tmp: torch.save(pretrained, tmp))
    print(f"wrote {args.out} ({args.out.stat().st_size / 2**20:.1f} MB, {args.dtype}) from {weights.description}")


if __name__ == "__main__":
    main()
