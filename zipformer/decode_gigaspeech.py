#!/usr/bin/env python3
"""Decode GigaSpeech DEV and TEST with GigaSpeech's scoring: decode.py with these defaults.

The seed tutorial's "before fine-tuning" command, as written:
  ./zipformer/decode_gigaspeech.py --epoch 99 --avg 1 --exp-dir zipformer/exp_giga \\
      --use-averaged-model 0 --max-duration 1000 --decoding-method greedy_search

Reads data/fbank/cuts_{DEV,TEST}.jsonl.gz (./prepare.sh --dataset gigaspeech); writes icefall's
result files into {exp_dir}/{decoding_method}_giga/. Every decode.py flag works here too.
"""
import argparse

from zipformer.decoding.session import GigaSpeechDecodingRecipe, main
from zipformer.decoding.session import get_parser as _get_parser


def get_parser() -> argparse.ArgumentParser:
    return _get_parser(GigaSpeechDecodingRecipe())


if __name__ == "__main__":
    main(GigaSpeechDecodingRecipe())
