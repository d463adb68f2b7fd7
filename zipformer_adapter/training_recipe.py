"""How the adapter recipe trains (a TrainingRecipe): fine-tune data, frozen body, adapter-only files."""
import argparse
import logging
from pathlib import Path
from typing import Any, Mapping

from torch import nn

from zipformer.training import TrainingRecipe, load_pretrained_weights
from zipformer.utils import AttributeDict, UserError
from zipformer_adapter.adapter import (
    ADAPTER_CONFIG_KEYS,
    freeze_all_but_adapters,
    save_adapter_checkpoint,
    set_adapter_train_mode,
)
from zipformer_adapter.flags import add_adapter_arguments
from zipformer_adapter.loading import load_base_then_adapters
from zipformer_adapter.model import get_model


# Without data flags the recipe fine-tunes on the new domain, as icefall's adapter recipe defaults to
# GigaSpeech: its cut files when prepared (./prepare.sh --dataset gigaspeech), else the embedded target
# domain; validation on both the old and the new domain.
GIGASPEECH_TRAIN = "cuts_S.jsonl.gz"
GIGASPEECH_VALID = {"librispeech": "librispeech_cuts_dev-clean.jsonl.gz", "gigaspeech": "cuts_DEV.jsonl.gz"}
EMBEDDED_TRAIN = "target_cuts_train.jsonl.gz"
EMBEDDED_VALID = {"source": "source_cuts_dev.jsonl.gz", "target": "target_cuts_dev.jsonl.gz"}


def default_cuts(manifest_dir: Path) -> tuple[str, str, str]:
    """(what, train cuts, valid cuts) of the fine-tuning data found in manifest_dir."""
    if (manifest_dir / GIGASPEECH_TRAIN).is_file():
        valid = {k: manifest_dir / v for k, v in GIGASPEECH_VALID.items() if (manifest_dir / v).is_file()}
        train, what = manifest_dir / GIGASPEECH_TRAIN, "GigaSpeech"
    else:
        valid = {k: manifest_dir / v for k, v in EMBEDDED_VALID.items()}
        train, what = manifest_dir / EMBEDDED_TRAIN, "the embedded target domain"
    return what, str(train), ",".join(f"{k}={v}" for k, v in valid.items())


class AdapterTrainingRecipe(TrainingRecipe):
    config_keys = TrainingRecipe.config_keys + ADAPTER_CONFIG_KEYS
    off_switches = ("use_adapters",)

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

    def choose_data(self, params: AttributeDict) -> None:
        if params.train_cuts is not None and params.valid_cuts is not None:
            return
        what, train, valid = default_cuts(Path(params.manifest_dir))
        if params.train_cuts is None:
            params.train_cuts = train
            logging.info(f"No --train-cuts: fine-tuning on {what} ({train})")
        if params.valid_cuts is None:
            params.valid_cuts = valid
            logging.info(f"No --valid-cuts: validating on {valid}")

    def set_train_mode(self, model: nn.Module, params: AttributeDict) -> None:
        if params.use_adapters:
            set_adapter_train_mode(model)
        else:
            model.train()

    def on_checkpoint_saved(self, filename: Path, info: Mapping[str, Any], model: nn.Module, model_avg) -> None:
        if not info["model_config"]["use_adapters"]:
            return
        init = info["train_config"]["adapter_init"]
        save_adapter_checkpoint(filename.with_name(f"adapter-{filename.name}"), model, model_avg, info, init)
