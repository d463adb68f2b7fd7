#!/usr/bin/env python3
"""Give a model file that records no configuration (icefall's pretrained.pt) its configuration.

  ./local/model_tools/stamp_model_config.py --checkpoint icefall-.../exp/pretrained.pt \
      --bpe-model icefall-.../data/lang_bpe_500/bpe.model [the model-shape flags it was trained with] \
      --out exp/pretrained-with-config.pt

The flags are checked first: the model they describe must load the weights strictly. The output
holds the same weights plus "model_config" and "vocabulary", so decode.py, export-onnx.py,
pretrained.py and fine-tuning need no shape flags for it, and refuse another BPE model.
"""
import argparse
from pathlib import Path

import torch

from zipformer.checkpoints.checkpoint import load_model_state_dict, read_checkpoint_file
from zipformer.checkpoints.config import model_config
from zipformer.checkpoints.vocabulary import bpe_vocabulary, load_bpe_model
from zipformer.core.atomic import write_atomically
from zipformer.core.errors import UserError, exit_on_user_error
from zipformer.core.params import AttributeDict
from zipformer.model.builder import get_model
from zipformer.model.flags import MODEL_CONFIG_KEYS, add_model_arguments
from zipformer.model.frontend import FEATURE_DIM


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, required=True, help="A file with {'model': state_dict}.")
    parser.add_argument("--bpe-model", type=str, required=True, help="The BPE model it was trained with.")
    parser.add_argument("--context-size", type=int, default=2, help="Decoder left context it was trained with.")
    parser.add_argument("--out", type=Path, required=True)
    add_model_arguments(parser)
    return parser


def stamp(params: AttributeDict) -> dict:
    checkpoint = read_checkpoint_file(params.checkpoint)
    if not isinstance(checkpoint, dict) or "model" not in checkpoint:
        raise UserError(f"{params.checkpoint} has no 'model' entry: expected {{'model': state_dict}}")
    sp = load_bpe_model(params.bpe_model)
    params.update(feature_dim=FEATURE_DIM, vocab_size=sp.get_piece_size(), blank_id=sp.piece_to_id("<blk>"))
    load_model_state_dict(get_model(params), checkpoint["model"], str(params.checkpoint), strict=True)
    return {
        **checkpoint,
        "model_config": model_config(params, MODEL_CONFIG_KEYS),
        "vocabulary": bpe_vocabulary(sp),
    }


def main() -> None:
    params = AttributeDict(vars(get_parser().parse_args()))
    with exit_on_user_error():
        stamped = stamp(params)
    write_atomically(params.out, lambda tmp: torch.save(stamped, tmp))
    print(f"wrote {params.out}: the weights of {params.checkpoint} with their model configuration and vocabulary")


if __name__ == "__main__":
    main()
