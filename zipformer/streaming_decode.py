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
import argparse

from zipformer.checkpoints.loader import DecodingRecipe
from zipformer.decoding.streaming_session import get_parser as _get_parser
from zipformer.decoding.streaming_session import main


def get_parser() -> argparse.ArgumentParser:
    return _get_parser(DecodingRecipe())


if __name__ == "__main__":
    main(DecodingRecipe())
