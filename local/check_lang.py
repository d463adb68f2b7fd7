#!/usr/bin/env python3
"""Make sure data/lang_bpe_500 holds the BPE model the base model was trained with.

The target domain keeps the source model's tokens. If the prepared bpe.model differs from the one
shipped with the base model (e.g. another version of Debian's fortunes text), the shipped one and
its tokens.txt replace it, with a warning: token ids must match the model.
"""
import argparse
import filecmp
import shutil
import sys
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--bpe-model", type=Path, required=True, help="the prepared bpe.model")
    parser.add_argument("--expected", type=Path, required=True, help="the bpe.model shipped with the base model")
    args = parser.parse_args()
    if not args.expected.is_file():
        raise SystemExit(f"error: {args.expected} not found: the base model's bpe.model must ship beside it")
    if args.bpe_model.is_file() and filecmp.cmp(args.bpe_model, args.expected, shallow=False):
        print(f"{args.bpe_model} is the base model's BPE model")
        return
    print(f"warning: {args.bpe_model} differs from the base model's {args.expected}; using the base model's", file=sys.stderr)
    args.bpe_model.parent.mkdir(parents=True, exist_ok=True)
    for name in ("bpe.model", "tokens.txt"):
        tmp = args.bpe_model.parent / f".{name}.tmp"
        shutil.copyfile(args.expected.parent / name, tmp)
        tmp.replace(args.bpe_model.parent / name)


if __name__ == "__main__":
    main()
