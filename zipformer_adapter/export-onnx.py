#!/usr/bin/env python3
"""Export an adapter fine-tuned Zipformer transducer to ONNX for sherpa-onnx, adapters baked in.

Usage (the seed tutorial's command):
  ./zipformer_adapter/export-onnx.py --tokens data/lang_bpe_500/tokens.txt \\
      --use-averaged-model 0 --epoch 20 --avg 1 \\
      --exp-dir zipformer_adapter/exp_giga_finetune_adapters1_adapter_dim16 \\
      --use-adapters 1 --adapter-dim 16 [model-shape flags as in training]
  # an adapter-only file on top of the base model it was trained on:
  ./zipformer_adapter/export-onnx.py --tokens ... --exp-dir DIR --adapter-dim 16 \\
      --base-ckpt pretrained.pt --adapter-ckpt DIR/adapter-epoch-20.pt

Writes {exp_dir}/{encoder,decoder,joiner}-epoch-20-avg-1.onnx (with --adapter-ckpt:
-{adapter file stem}) and *.int8.onnx. The encoder's metadata records the adapters: use_adapters,
adapter_dim, adapter_positions, num_adapters, adapter_fingerprint and base_fingerprint.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse  # noqa: E402
from typing import Dict, List, Optional  # noqa: E402

from zipformer import onnx_export  # noqa: E402
from zipformer.checkpoint import checkpoint_suffix  # noqa: E402
from zipformer.onnx_export import StateDict  # noqa: E402
from zipformer.utils import AttributeDict  # noqa: E402
from zipformer_adapter.adapter import (  # noqa: E402
    ADAPTER_POSITIONS,
    adapter_fingerprint,
    adapter_state_dict,
    base_fingerprint,
)
from zipformer_adapter.decoding_recipe import AdapterDecodingRecipe  # noqa: E402


def adapter_metadata(params: AttributeDict, state_dict: StateDict) -> Dict[str, str]:
    """What the encoder file contains: which adapters, and fingerprints of the weights."""
    metadata = {"use_adapters": str(int(params.use_adapters)), "base_fingerprint": base_fingerprint(state_dict)}
    if params.use_adapters:
        adapters = adapter_state_dict(state_dict)
        metadata.update(
            adapter_dim=str(params.adapter_dim),
            adapter_positions=",".join(ADAPTER_POSITIONS),
            num_adapters=str(sum(k.endswith("in_proj.weight") for k in adapters)),
            adapter_fingerprint=adapter_fingerprint(state_dict),
        )
    return metadata


def file_suffix(params: AttributeDict) -> str:
    return Path(params.adapter_ckpt).stem if params.adapter_ckpt else checkpoint_suffix(params)


def get_parser() -> argparse.ArgumentParser:
    return onnx_export.get_parser(AdapterDecodingRecipe(), "zipformer_adapter/exp")


def main(argv: Optional[List[str]] = None) -> Dict[str, Path]:
    return onnx_export.main(AdapterDecodingRecipe(), "zipformer_adapter/exp", adapter_metadata, file_suffix, argv)


if __name__ == "__main__":
    main()
