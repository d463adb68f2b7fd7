#!/usr/bin/env python3
"""Streaming (chunk-by-chunk) decoding of an adapter fine-tuned causal model, adapters on or off.

  ./zipformer_adapter/streaming_decode.py --epoch 20 --avg 10 --use-averaged-model 1 \\
      --use-adapters 1 --adapter-dim 16 --exp-dir zipformer_adapter/exp_causal_adapter_dim16 \\
      --causal 1 --chunk-size 16 --left-context-frames 128 --decoding-method greedy_search
  # --use-adapters 0: the base model from the same checkpoint; --base-ckpt/--adapter-ckpt as in decode.py

zipformer/streaming_decode.py's decoding with the adapter tuner's model loading.
"""
import argparse

from zipformer.decoding.streaming_session import get_parser as _get_parser
from zipformer.decoding.streaming_session import main
from zipformer.tuners.recipes import TunerDecodingRecipe
from zipformer_adapter.adapter import AdapterTuner

RECIPE = TunerDecodingRecipe(AdapterTuner())


def get_parser() -> argparse.ArgumentParser:
    return _get_parser(RECIPE)


if __name__ == "__main__":
    main(RECIPE)
