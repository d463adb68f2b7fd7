#!/usr/bin/env python3
"""Write a pretrained model file ({"model": state_dict}, icefall's pretrained.pt format) from a training run.

  ./local/export_base_model.py --exp-dir exp/base/train --epoch 40 --avg 10 --out exp/base/pretrained.pt

Averages like decode.py (--use-averaged-model by default). --dtype float16 halves the file, which
is how the small base model is shipped in pretrained/ (it is loaded back into float32).
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse  # noqa: E402
import os  # noqa: E402

import torch  # noqa: E402

from zipformer.checkpoint import load_averaged_state_dict  # noqa: E402
from zipformer.utils import exit_on_user_error, str2bool  # noqa: E402


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
        raise SystemExit("error: pass --epoch N or --iter N: which checkpoints to export")
    with exit_on_user_error():
        state_dict, description = load_averaged_state_dict(vars(args))
    dtype = getattr(torch, args.dtype)
    state_dict = {k: v.to(dtype) if v.is_floating_point() else v for k, v in state_dict.items()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_name(args.out.name + ".tmp")
    torch.save({"model": state_dict}, tmp)
    os.replace(tmp, args.out)
    print(f"wrote {args.out} ({args.out.stat().st_size / 2**20:.1f} MB, {args.dtype}) from {description}")


if __name__ == "__main__":
    main()
