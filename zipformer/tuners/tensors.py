"""A tuner's tensors inside a model or a state_dict: which are its own, what trains, strict loading.

A state_dict of a tuned model is the base's tensors plus the tuner's (`Tuner.is_tuner_key`);
these helpers split them, freeze the body, switch the tuner off for a while and load base + tuner
tensors with every mismatch named (nothing is loaded with a silent strict=False).
"""
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING

import torch
from torch import nn

from zipformer.checkpoints.checkpoint import StateDict
from zipformer.core.errors import UserError
from zipformer.core.flag_types import flag_name

if TYPE_CHECKING:
    from zipformer.tuners.tuner import Tuner


def tuner_tensors(state_dict: Mapping[str, torch.Tensor], tuner: "Tuner") -> StateDict:
    return {k: v for k, v in state_dict.items() if tuner.is_tuner_key(k)}


def base_tensors(state_dict: Mapping[str, torch.Tensor], tuner: "Tuner") -> StateDict:
    return {k: v for k, v in state_dict.items() if not tuner.is_tuner_key(k)}


def freeze_all_but_tuner(model: nn.Module, tuner: "Tuner") -> None:
    for name, param in model.named_parameters():
        param.requires_grad_(tuner.is_tuner_key(name))


@contextmanager
def tuner_disabled(model: nn.Module, tuner: "Tuner") -> Iterator[None]:
    """Temporarily run the base model: every tuner module becomes the identity."""
    tuner.set_enabled(model, False)
    try:
        yield
    finally:
        tuner.set_enabled(model, True)


def check_tuner_size(state_dict: Mapping[str, torch.Tensor], tuner: "Tuner", expected: int, source: str) -> None:
    found = tuner.size_of(state_dict)
    flag, switch = flag_name(tuner.size), flag_name(tuner.switch)
    if found is None:
        raise UserError(f"{source} has no {tuner.name} weights: pass {switch} 0, or a checkpoint trained with {tuner.name}")
    if found != expected:
        raise UserError(f"{source} has {tuner.name} of size {found} but {flag} is {expected}: pass {flag} {found}")


def _describe(keys) -> str:
    keys = sorted(keys)
    return f"{len(keys)} ({', '.join(keys[:3])}{', ...' if len(keys) > 3 else ''})"


def load_with_tuner(
    model: nn.Module, state_dict: Mapping[str, torch.Tensor], tuner: "Tuner", source: str, required: bool
) -> None:
    """Load base keys strictly; the tuner's keys if present (all of them), else keep the model's own.

    Anything else is a UserError that names the keys: nothing is loaded with a silent strict=False.
    """
    expected = model.state_dict()
    base_expected = set(base_tensors(expected, tuner))
    base_given = set(base_tensors(state_dict, tuner))
    if base_expected != base_given:
        raise UserError(
            f"{source} does not fit the base model: missing {_describe(base_expected - base_given)}, "
            f"unexpected {_describe(base_given - base_expected)}; check the model-shape flags"
        )
    given = tuner_tensors(state_dict, tuner)
    wanted = set(tuner_tensors(expected, tuner))
    switch = flag_name(tuner.switch)
    if given:
        if not wanted:
            raise UserError(f"{source} has {tuner.name} but the model has none: pass {switch} 1")
        if set(given) != wanted:
            raise UserError(
                f"{source} has a different set of {tuner.name}: missing {_describe(wanted - set(given))}, "
                f"unexpected {_describe(set(given) - wanted)}"
            )
    elif required:
        raise UserError(f"{source} has no {tuner.name} weights: pass a checkpoint trained with them, or {switch} 0")
    merged = dict(expected)
    merged.update(state_dict)
    try:
        model.load_state_dict(merged, strict=True)
    except RuntimeError as e:
        raise UserError(
            f"{source} does not fit the model ({str(e).strip().splitlines()[-1].strip()}): "
            "check the model-shape and tuner flags"
        ) from None
