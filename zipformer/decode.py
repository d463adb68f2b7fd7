#!/usr/bin/env python3
"""Decode cut sets with a trained Zipformer transducer and score them.

Usage:
  ./zipformer/decode.py --epoch 30 --avg 15 --exp-dir zipformer/exp --max-duration 600 \\
      --decoding-method greedy_search            # or modified_beam_search --beam-size 4, beam_search
  # any cut sets: --test-cuts name=path.jsonl.gz,other=path2.jsonl.gz
  # GigaSpeech scoring (fillers and tags removed from refs and hyps): --gigaspeech-scoring 1

Writes {exp_dir}/{decoding_method}/{recogs,errs,wer-summary}-{test_set}-{key}-{suffix}.txt and a log.
"""
import argparse

from zipformer.checkpoints.loader import DecodingRecipe
from zipformer.decoding.session import get_parser as _get_parser
from zipformer.decoding.session import main


def get_parser() -> argparse.ArgumentParser:
    return _get_parser(DecodingRecipe())


if __name__ == "__main__":
    main(DecodingRecipe())
