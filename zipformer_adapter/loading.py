"""Putting weights into a model with adapters: a base checkpoint, then adapters, with strict checks.

Every non-adapter key must be present and fit (the base is loaded strictly); adapter keys may be
absent (fresh adapters keep their init). Anything else is a UserError that names the keys:
nothing is loaded with a silent strict=False.
"""
import logging
from pathlib import Path
from typing import Dict

import torch
from torch import nn

from zipformer.checkpoint import read_model_state_dict
from zipformer.model_args import check_causal, is_causal_state_dict
from zipformer.utils import UserError
from zipformer_adapter.adapter import (
    adapter_state_dict,
    base_fingerprint,
    base_state_dict,
    check_adapter_dim,
    is_adapter_key,
    load_adapter_checkpoint,
)


def _describe(keys) -> str:
    keys = sorted(keys)
    return f"{len(keys)} ({', '.join(keys[:3])}{', ...' if len(keys) > 3 else ''})"


def load_state_dict_with_adapters(
    model: nn.Module, state_dict: Dict[str, torch.Tensor], source: str, adapters_required: bool
) -> None:
    """Load base keys strictly; adapter keys if present (all of them), or keep the model's own."""
    expected = model.state_dict()
    base_expected = {k for k in expected if not is_adapter_key(k)}
    base_given = set(base_state_dict(state_dict))
    if base_expected != base_given:
        raise UserError(
            f"{source} does not fit the base model: missing {_describe(base_expected - base_given)}, "
            f"unexpected {_describe(base_given - base_expected)}; check the model-shape flags"
        )
    adapters_given = adapter_state_dict(state_dict)
    adapters_expected = {k for k in expected if is_adapter_key(k)}
    if adapters_given:
        if not adapters_expected:
            raise UserError(f"{source} has adapters but the model has none: pass --use-adapters 1 --adapter-dim N")
        if set(adapters_given) != adapters_expected:
            raise UserError(
                f"{source} has a different set of adapters: missing {_describe(adapters_expected - set(adapters_given))}, "
                f"unexpected {_describe(set(adapters_given) - adapters_expected)}"
            )
    elif adapters_required:
        raise UserError(f"{source} has no adapter weights: pass an adapter checkpoint, or --use-adapters 0")
    merged = dict(expected)
    merged.update(state_dict)
    try:
        model.load_state_dict(merged, strict=True)
    except RuntimeError as e:
        raise UserError(f"{source} does not fit the model ({str(e).strip().splitlines()[-1].strip()}): check --adapter-dim and the model-shape flags") from None


def load_base_then_adapters(model: nn.Module, finetune_ckpt: str, adapter_dim: int) -> None:
    """Start an adapter fine-tune from a pretrained checkpoint (which may already hold adapters)."""
    state_dict = read_model_state_dict(finetune_ckpt, flag="--finetune-ckpt")
    check_causal(state_dict, is_causal_state_dict(model.state_dict()), finetune_ckpt)
    if adapter_state_dict(state_dict):
        check_adapter_dim(state_dict, adapter_dim, finetune_ckpt)
    load_state_dict_with_adapters(model, state_dict, finetune_ckpt, adapters_required=False)
    found = len(adapter_state_dict(state_dict))
    logging.info(
        f"Initialised the base model from {finetune_ckpt}"
        + (f" (and its {found} adapter tensors)" if found else "; adapters start fresh")
    )


def combine_base_and_adapters(
    base_ckpt: str, adapters: Dict[str, torch.Tensor], expected_fingerprint: str, adapter_source: str
) -> Dict[str, torch.Tensor]:
    """A full state_dict from a base checkpoint and adapter tensors trained on that base."""
    base = base_state_dict(read_model_state_dict(base_ckpt, flag="--base-ckpt"))
    fingerprint = base_fingerprint(base)
    if expected_fingerprint and fingerprint != expected_fingerprint:
        raise UserError(
            f"{adapter_source} was trained on another base model (fingerprint {expected_fingerprint}, "
            f"{base_ckpt} has {fingerprint}): pass the --base-ckpt the adapters were trained on"
        )
    combined = dict(base)
    combined.update(adapters)
    return combined


def load_adapter_file_on_base(base_ckpt: str, adapter_ckpt: str) -> Dict[str, torch.Tensor]:
    checkpoint = load_adapter_checkpoint(Path(adapter_ckpt))
    return combine_base_and_adapters(base_ckpt, checkpoint["model"], checkpoint["base_fingerprint"], adapter_ckpt)
