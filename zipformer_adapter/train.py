#!/usr/bin/env python3
"""Fine-tune a pretrained Zipformer transducer on a new domain with adapters (only they train).

The seed tutorial's command, on the embedded corpus:
  ./zipformer_adapter/train.py --world-size 1 --num-epochs 20 --start-epoch 1 --use-fp16 1 \\
      --base-lr 0.045 --use-adapters 1 --adapter-dim 16 --do-finetune 1 --master-port 13022 \\
      --finetune-ckpt pretrained/base.pt --max-duration 100 \\
      --train-cuts data/fbank/target_cuts_train.jsonl.gz \\
      --valid-cuts source=data/fbank/source_cuts_dev.jsonl.gz,target=data/fbank/target_cuts_dev.jsonl.gz \\
      --exp-dir zipformer_adapter/exp_adapter_dim16

Next to epoch-N.pt it writes adapter-epoch-N.pt: the adapters alone (a few MB) with their
configuration and a fingerprint of the base model. Resuming (--start-epoch N+1) needs no change of
--do-finetune. --use-adapters 0 makes this full fine-tuning (use a lower --base-lr, e.g. 0.0045).
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse  # noqa: E402
from typing import Tuple  # noqa: E402

from torch import nn  # noqa: E402

from zipformer import training  # noqa: E402
from zipformer.training import TrainingRecipe, get_params, load_pretrained_weights  # noqa: E402,F401
from zipformer.utils import AttributeDict, UserError  # noqa: E402
from zipformer_adapter.adapter import (  # noqa: E402
    freeze_all_but_adapters,
    save_adapter_checkpoint,
    set_adapter_train_mode,
)
from zipformer_adapter.flags import add_adapter_arguments  # noqa: E402
from zipformer_adapter.loading import load_base_then_adapters  # noqa: E402
from zipformer_adapter.model import get_model  # noqa: E402

# adapter-epoch-N.pt / adapter-checkpoint-N.pt beside each epoch-N.pt / checkpoint-N.pt.
ADAPTER_FILE_PREFIX = "adapter-"


class AdapterTrainingRecipe(TrainingRecipe):
    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        add_adapter_arguments(parser, for_training=True)

    def get_model(self, params: AttributeDict) -> nn.Module:
        return get_model(params)

    def is_finetuning(self, params: AttributeDict) -> bool:
        if params.do_finetune and not params.finetune_ckpt:
            raise UserError("--do-finetune 1 needs --finetune-ckpt PATH (the pretrained model to adapt)")
        return params.do_finetune

    def init_from_pretrained(self, model: nn.Module, params: AttributeDict) -> None:
        if params.use_adapters and not params.init_modules:
            load_base_then_adapters(model, params.finetune_ckpt, params.adapter_dim)
        else:
            load_pretrained_weights(model, params.finetune_ckpt, params.init_modules)

    def select_trainable(self, model: nn.Module, params: AttributeDict) -> None:
        if params.use_adapters:
            freeze_all_but_adapters(model)
        else:
            model.requires_grad_(True)

    def set_train_mode(self, model: nn.Module, params: AttributeDict) -> None:
        if params.use_adapters:
            set_adapter_train_mode(model)
        else:
            model.train()

    def on_checkpoint_saved(self, filename: Path, params: AttributeDict, model: nn.Module, model_avg) -> None:
        if not params.use_adapters:
            return
        save_adapter_checkpoint(
            filename.with_name(f"{ADAPTER_FILE_PREFIX}{filename.name}"),
            model,
            model_avg,
            bottleneck_dim=params.adapter_dim,
            init=params.adapter_init,
            batch_idx_train=params.batch_idx_train,
            average_period=params.average_period,
        )


    def companion_prefixes(self, params: AttributeDict) -> Tuple[str, ...]:
        return (ADAPTER_FILE_PREFIX,)


def get_parser() -> argparse.ArgumentParser:
    return training.get_parser(AdapterTrainingRecipe())


if __name__ == "__main__":
    training.main(AdapterTrainingRecipe())
