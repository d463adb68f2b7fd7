#!/usr/bin/env python3
"""Start a causal (streaming) Zipformer from a trained non-causal one of the same shape.

  ./local/model_tools/causal_warm_start.py --checkpoint exp/base/noncausal.pt --out exp/causal_init.pt
  ./zipformer/train.py --finetune-ckpt exp/causal_init.pt --chunk-size 16,32,64,-1 ...

A causal model differs from a non-causal one only in its convolution modules: each depthwise
kernel k becomes a ChunkCausalDepthwiseConv1d, out = chunkwise_conv(x)·(1 + chunkwise_conv_scale)
+ causal_conv(x). Every other tensor is copied. The non-causal kernel becomes the chunkwise one,
the scale starts at 0 and the causal (left-context) kernel at 0, so in full context
(--chunk-size -1) the new model computes the old model's function exactly; within chunks the
convolutions start without left context, which training then learns.

The output carries the configuration of the input with causal=True, so training needs no shape
flags, and the input's vocabulary fingerprint.
"""
import argparse
import re
from pathlib import Path
from typing import Dict

import torch

from zipformer.checkpoints.checkpoint import read_model_file
from zipformer.core.atomic import write_atomically
from zipformer.core.errors import UserError, exit_on_user_error
from zipformer.model.builder import is_causal_state_dict

StateDict = Dict[str, torch.Tensor]
_CONV = re.compile(r"\.conv_module[12]\.depthwise_conv\.(weight|bias)$")


def causal_state_dict(non_causal: StateDict, dtype: torch.dtype = torch.float32) -> StateDict:
    """Map a non-causal state_dict to a causal one (see the module docstring).

    For each `...depthwise_conv.weight` (C, 1, k) and `.bias` (C,):
      chunkwise_conv.weight, .bias = weight, bias;  causal_conv.weight (C, 1, (k+1)/2) = 0,
      causal_conv.bias = 0;  chunkwise_conv_scale (2, C, k) = 0. Floating tensors become `dtype`.
    """
    out: StateDict = {}
    for key, value in non_causal.items():
        value = value.to(dtype) if value.is_floating_point() else value
        if not _CONV.search(key):
            out[key] = value
            continue
        prefix, name = key.rsplit(".", 1)
        if name == "weight":
            channels, _, kernel = value.shape
            out[f"{prefix}.chunkwise_conv_scale"] = torch.zeros(2, channels, kernel, dtype=dtype)
            out[f"{prefix}.causal_conv.weight"] = torch.zeros(channels, 1, (kernel + 1) // 2, dtype=dtype)
            out[f"{prefix}.causal_conv.bias"] = torch.zeros(channels, dtype=dtype)
        out[f"{prefix}.chunkwise_conv.{name}"] = value
    return out


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, required=True, help="A non-causal model file (pretrained.pt, epoch-N.pt).")
    parser.add_argument("--out", type=Path, required=True, help="The causal model file to write.")
    parser.add_argument(
        "--dtype", choices=("float32", "float16"), default="float32",
        help="float16 halves the file (how pretrained/ ships models; loading casts back to float32).",
    )
    return parser


def main() -> None:
    args = get_parser().parse_args()
    with exit_on_user_error():
        loaded = read_model_file(args.checkpoint, flag="--checkpoint")
        if is_causal_state_dict(loaded.state_dict) is not False:
            raise UserError(f"--checkpoint {args.checkpoint} is not a non-causal Zipformer: nothing to convert")
        if not loaded.model_config:
            raise UserError(
                f"--checkpoint {args.checkpoint} records no model configuration: stamp it first with "
                "./local/model_tools/stamp_model_config.py"
            )
    converted = {
        "model": causal_state_dict(loaded.state_dict, getattr(torch, args.dtype)),
        "model_config": {**loaded.model_config, "causal": True},
        "vocabulary": loaded.vocabulary,
    }
    write_atomically(args.out, lambda tmp: torch.save(converted, tmp))
    print(f"wrote {args.out}: the causal model of {args.checkpoint} ({len(converted['model'])} tensors)")


if __name__ == "__main__":
    main()
