#!/usr/bin/env python3
"""Decode cut sets with a causal (streaming) Zipformer transducer chunk by chunk, and score them.

Usage:
  ./zipformer/streaming_decode.py --epoch 30 --avg 8 --use-averaged-model 1 --exp-dir zipformer/exp-causal \\
      --causal 1 --chunk-size 16 --left-context-frames 128 --num-decode-streams 2000 \\
      --decoding-method greedy_search            # or modified_beam_search --beam-size 4

Writes {exp_dir}/streaming/{decoding_method}/{recogs,errs,wer-summary}-{test_set}-{key}-{suffix}.txt
(the files of decode.py) and a log with the real-time factor and the compute time per chunk.
The same flags with ./zipformer/decode.py give simulated streaming (the full-utterance forward
with the chunk masks).
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse  # noqa: E402

from zipformer.recipe import DecodingRecipe  # noqa: E402
from zipformer.streaming_decoding import get_parser as _get_parser  # noqa: E402
from zipformer.streaming_decoding import main  # noqa: E402


def get_parser() -> argparse.ArgumentParser:
    return _get_parser(DecodingRecipe())


if __name__ == "__main__":
    main(DecodingRecipe())
