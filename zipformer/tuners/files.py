"""Tuner-only files: a tuner's tensors saved apart from the base model they were trained on.

Tuner-only files (`{file_prefix}epoch-N.pt`, `{file_prefix}checkpoint-N.pt`) hold
  "model", "model_avg": the tuner's tensors (so checkpoint averaging works on them unchanged),
  "tuner": {"name", the tuner's flags}, "base_fingerprint": a hash of the base weights,
  "model_config", "vocabulary", "batch_idx_train", "average_period": as in the full checkpoint.
One base model serves several tuners this way; the fingerprint refuses a tuner file put on
another base than its own.
"""
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import torch
from torch import nn

from zipformer.checkpoints.checkpoint import (
    StateDict,
    read_checkpoint_file,
    tensors_fingerprint,
    write_checkpoint_file,
)
from zipformer.core.errors import UserError
from zipformer.tuners.tensors import base_tensors, tuner_tensors

if TYPE_CHECKING:
    from zipformer.tuners.tuner import Tuner

TUNER_FILE_FORMAT = 2


def base_fingerprint(state_dict: Mapping[str, torch.Tensor], tuner: "Tuner") -> str:
    """A short hash of the base (non-tuner) weights: tells which base model a tuner belongs to."""
    return tensors_fingerprint(base_tensors(state_dict, tuner))


def save_tuner_file(
    filename: Path, model: nn.Module, model_avg: Optional[nn.Module], info: Mapping[str, Any], tuner: "Tuner"
) -> None:
    """Write only the tuner's tensors (KBs to a few MB), with what says which model and tokens they fit.

    `info` is the full checkpoint's plain part (batch_idx_train, average_period, model_config,
    vocabulary, train_config).
    """
    state = model.state_dict()
    config = info["model_config"]
    checkpoint = {
        "format": TUNER_FILE_FORMAT,
        "model": {k: v.detach().cpu().clone() for k, v in tuner_tensors(state, tuner).items()},
        "tuner": {"name": tuner.name, **{k: config[k] for k in tuner.config_keys}},
        "base_fingerprint": base_fingerprint(state, tuner),
        **{key: info[key] for key in ("batch_idx_train", "average_period", "model_config", "vocabulary")},
    }
    if model_avg is not None:
        avg = tuner_tensors(model_avg.state_dict(), tuner)
        checkpoint["model_avg"] = {k: v.detach().to("cpu", torch.float32).clone() for k, v in avg.items()}
    write_checkpoint_file(Path(filename), checkpoint)


def load_tuner_file(filename: Path, tuner: "Tuner") -> dict:
    path = Path(filename)
    checkpoint = read_checkpoint_file(
        path, missing=f"{tuner.name} file {path} not found: pass a {tuner.file_prefix}epoch-N.pt written by training"
    )
    found = checkpoint.get("tuner", {}).get("name") if isinstance(checkpoint, dict) else None
    if found != tuner.name:
        what = f"a {found} file" if found else "not a tuner-only file"
        raise UserError(f"{path} is {what}: pass a {tuner.file_prefix}epoch-N.pt of {tuner.name}")
    return checkpoint


def combine_base_and_tuner(
    base: Mapping[str, torch.Tensor], tensors: Mapping[str, torch.Tensor], expected_fingerprint: str,
    base_source: str, tuner_source: str, tuner: "Tuner",
) -> StateDict:
    """A full state_dict from base weights and tuner tensors trained on that base (fingerprint checked)."""
    base = base_tensors(base, tuner)
    check_base_fingerprint(tensors_fingerprint(base), expected_fingerprint, base_source, tuner_source)
    return {**base, **tensors}


def check_base_fingerprint(fingerprint: str, expected_fingerprint: str, base_source: str, tuner_source: str) -> None:
    """UserError unless a tuner file's recorded base fingerprint is the base's (`fingerprint`)."""
    if expected_fingerprint and fingerprint != expected_fingerprint:
        raise UserError(
            f"{tuner_source} was trained on another base model (fingerprint {expected_fingerprint}, "
            f"{base_source} has {fingerprint}): pass the --base-ckpt it was trained on"
        )
