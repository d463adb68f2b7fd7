#!/usr/bin/env python3
"""Train a Zipformer transducer with the pruned RNN-T loss (from scratch, or fine-tune all weights).

Usage, on the embedded corpus (source domain):
  ./zipformer/train.py --world-size 1 --num-epochs 30 --exp-dir zipformer/exp --max-duration 200

Full fine-tuning of a pretrained model (the reference's lower learning rate):
  ./zipformer/train.py --finetune-ckpt path/to/pretrained.pt --base-lr 0.0045 \\
      --train-cuts data/fbank/target_cuts_train.jsonl.gz --valid-cuts target=data/fbank/target_cuts_dev.jsonl.gz

Multi-GPU: --world-size N spawns N processes on this machine; under torchrun the same script runs
one worker per process (several machines). On CPU, DDP uses gloo.
"""
import argparse

from zipformer.model.builder import get_model  # noqa: F401  (icefall's train.get_model)
from zipformer.training.flags import get_params  # noqa: F401  (icefall's train.get_params)
from zipformer.training.flags import get_parser as _get_parser
from zipformer.training.main import main
from zipformer.training.recipe import TrainingRecipe


def get_parser() -> argparse.ArgumentParser:
    return _get_parser(TrainingRecipe())


if __name__ == "__main__":
    main(TrainingRecipe())
