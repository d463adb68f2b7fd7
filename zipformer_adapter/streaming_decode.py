#!/usr/bin/env python3
"""Streaming (chunk-by-chunk) decoding of an adapter fine-tuned causal model, adapters on or off.

  ./zipformer_adapter/streaming_decode.py --epoch 20 --avg 10 --use-averaged-model 1 \\
      --use-adapters 1 --adapter-dim 16 --exp-dir zipformer_adapter/exp_causal_adapter_dim16 \\
      --causal 1 --chunk-size 16 --left-context-frames 128 --decoding-method greedy_search
  # --use-adapters 0: the base model from the same checkpoint; --base-ckpt/--adapter-ckpt as in decode.py

zipformer/streaming_decode.py's decoding with the adapter tuner's model loading.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse  # noqa: E402

from zipformer.streaming_decoding import get_parser as _get_parser  # noqa: E402
from zipformer.streaming_decoding import main  # noqa: E402
from zipformer.tuning import TunerDecodingRecipe  # noqa: E402
from zipformer_adapter.adapter import AdapterTuner  # noqa: E402

RECIPE = TunerDecodingRecipe(AdapterTuner())


def get_parser() -> argparse.ArgumentParser:
    return _get_parser(RECIPE)


if __name__ == "__main__":
    main(RECIPE)
