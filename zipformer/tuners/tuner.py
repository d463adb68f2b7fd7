"""The tuner interface: a parameter-efficient fine-tuning method put into a frozen base model.

A tuner (residual adapters, LoRA, ...) lives in its own recipe directory and implements `Tuner`:
its flags, how it goes into a base model, which tensors are its own, how its modules train and
switch off, and (optionally) how it merges into the base weights. Everything else is generic and
lives here and in `zipformer.tuners.recipes`: freezing the body, strict loading of base + tuner tensors,
tuner-only files with a fingerprint of the base they were trained on, and the recipes that plug a
tuner into the shared training, decoding and export machinery. The base recipe knows no tuner by
name, and a new tuner needs only its own directory.

Several domains on one base (zipformer.tuners.domains): a tuner that implements `stack_domains` and
`set_domain_index` holds N domains' tensors stacked (domain k at index k of a leading dim) and
applies, per utterance, the tensors of the domain its index names; a negative index (-1) is the
base model, exactly. The index reaches the modules through `domains_selected(model, tuner, index)`,
so no forward signature of the base model changes.

Tuner-only files (`{file_prefix}epoch-N.pt`, `{file_prefix}checkpoint-N.pt`) hold
  "model", "model_avg": the tuner's tensors (so checkpoint averaging works on them unchanged),
  "tuner": {"name", the tuner's flags}, "base_fingerprint": a hash of the base weights,
  "model_config", "vocabulary", "batch_idx_train", "average_period": as in the full checkpoint.
"""
import argparse
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Set

import torch
from torch import nn

from zipformer.checkpoints.checkpoint import read_checkpoint_file, tensors_fingerprint, write_checkpoint_file
from zipformer.core.errors import UserError
from zipformer.core.flag_types import flag_name
from zipformer.core.params import AttributeDict

StateDict = Dict[str, torch.Tensor]
TUNER_FILE_FORMAT = 2


class Tuner(ABC):
    """One fine-tuning method. Subclasses set the class attributes and implement the methods."""

    name: str  # in logs, result-file suffixes and ONNX metadata, e.g. "adapters"
    file_prefix: str  # tuner-only files are {file_prefix}epoch-N.pt, e.g. "adapter-"
    switch: str  # the on/off flag's dest (icefall's name), e.g. "use_adapters"
    size: str  # the flag that sizes the tuner, e.g. "adapter_dim"
    size_default: int  # its default
    mergeable: bool = False  # whether merge() can fold it into the base weights

    @property
    def config_keys(self) -> tuple:
        """The tuner's flags stored in a checkpoint's model_config."""
        return (self.switch, self.size)

    @abstractmethod
    def add_arguments(self, group: argparse._ArgumentGroup, for_training: bool) -> None:
        """The tuner's flags: the switch, the size, and any training-only ones."""

    @abstractmethod
    def inject(self, model: nn.Module, params: AttributeDict) -> int:
        """Put fresh tuner modules into a base model (at step 0 it computes the base's function);
        return the number of tuner parameters."""

    @abstractmethod
    def is_tuner_key(self, name: str) -> bool:
        """True for the state_dict keys (and parameter names) of the tuner's own tensors."""

    @abstractmethod
    def size_of(self, state_dict: Mapping[str, torch.Tensor]) -> Optional[int]:
        """The value of the size flag that the tuner tensors in `state_dict` have, or None if none."""

    @abstractmethod
    def set_enabled(self, model: nn.Module, enabled: bool) -> None:
        """Switch every tuner module of `model` on or off (off: the model is the base, exactly)."""

    def set_train_mode(self, model: nn.Module) -> None:
        """The body in eval mode: it computes its inference function, as decoding and export run it.
        Tuners with train-mode behaviour (dropout) switch their own modules back to train."""
        model.eval()

    def describe(self, params: AttributeDict) -> str:
        """Words for result-file names, e.g. "-adapters-dim-8" or "-adapters-off"."""
        if not params[self.switch]:
            return f"-{self.name}-off"
        return f"-{self.name}-{self.size.split('_')[-1]}-{params[self.size]}"

    def onnx_metadata(self, params: AttributeDict, state_dict: StateDict) -> Dict[str, str]:
        """What an exported encoder holds: the tuner's flags and fingerprints of the weights."""
        metadata = {
            self.switch: str(int(params[self.switch])),
            "base_fingerprint": base_fingerprint(state_dict, self),
        }
        if params[self.switch]:
            metadata[self.size] = str(params[self.size])
            metadata[f"{self.file_prefix.rstrip('-')}_fingerprint"] = tensors_fingerprint(tuner_tensors(state_dict, self))
        return metadata

    def merge(self, model: nn.Module) -> None:
        """Fold the tuner into the base weights, leaving a plain base model. Not every tuner can."""
        raise UserError(f"{self.name} cannot be merged into the base weights: export them unmerged")

    def stack_domains(self, model: nn.Module, domains: Sequence["DomainTensors"]) -> int:
        """Put modules into a base model that hold every domain's tensors stacked (domain k at
        index k), each domain's taken with `DomainTensors.take`; return the number of tuner
        parameters. Domains of different sizes are zero-padded to the largest (`stack_padded`).
        The modules apply, per utterance, the domain that `set_domain_index` names."""
        raise UserError(f"{self.name} cannot serve several domains from one model: decode each domain alone")

    def set_domain_index(self, model: nn.Module, index: Optional[torch.Tensor]) -> None:
        """Give the stacked modules of `model` the domain of each utterance: index (N,) int64,
        negative = the base model; None when no batch is running."""
        raise UserError(f"{self.name} cannot serve several domains from one model: decode each domain alone")


def tuner_tensors(state_dict: Mapping[str, torch.Tensor], tuner: Tuner) -> StateDict:
    return {k: v for k, v in state_dict.items() if tuner.is_tuner_key(k)}


def base_tensors(state_dict: Mapping[str, torch.Tensor], tuner: Tuner) -> StateDict:
    return {k: v for k, v in state_dict.items() if not tuner.is_tuner_key(k)}


def base_fingerprint(state_dict: Mapping[str, torch.Tensor], tuner: Tuner) -> str:
    """A short hash of the base (non-tuner) weights: tells which base model a tuner belongs to."""
    return tensors_fingerprint(base_tensors(state_dict, tuner))


def freeze_all_but_tuner(model: nn.Module, tuner: Tuner) -> None:
    for name, param in model.named_parameters():
        param.requires_grad_(tuner.is_tuner_key(name))


@contextmanager
def tuner_disabled(model: nn.Module, tuner: Tuner) -> Iterator[None]:
    """Temporarily run the base model: every tuner module becomes the identity."""
    tuner.set_enabled(model, False)
    try:
        yield
    finally:
        tuner.set_enabled(model, True)


def check_tuner_size(state_dict: Mapping[str, torch.Tensor], tuner: Tuner, expected: int, source: str) -> None:
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
    model: nn.Module, state_dict: Mapping[str, torch.Tensor], tuner: Tuner, source: str, required: bool
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


def save_tuner_file(
    filename: Path, model: nn.Module, model_avg: Optional[nn.Module], info: Mapping[str, Any], tuner: Tuner
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


def load_tuner_file(filename: Path, tuner: Tuner) -> dict:
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
    base_source: str, tuner_source: str, tuner: Tuner,
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


# ---- several domains in one model ----------------------------------------------------------------


@dataclass
class DomainTensors:
    """One domain's tuner: its name, the file it came from, its flags (the file's "tuner" entry)
    and its tensors. `take` hands a tensor to the stacking and records it, so that tensors no
    module took (a file for another model shape) are found afterwards (`untaken`)."""

    name: str
    source: str
    config: Mapping[str, Any]
    tensors: StateDict
    taken: Set[str] = field(default_factory=set)

    def take(self, key: str) -> torch.Tensor:
        if key not in self.tensors:
            raise UserError(f"{self.source} (domain {self.name}) has no {key}: it does not fit this base model")
        self.taken.add(key)
        return self.tensors[key]

    def untaken(self) -> List[str]:
        return sorted(set(self.tensors) - self.taken)


def stack_padded(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    """K tensors of equal rank -> (K, *largest shape), each zero-padded at the end of every dim.

    Padding a smaller adapter bottleneck or LoRA rank this way is exact: the padded rows of a
    down-projection meet zero columns of the up-projection, so they add zeros to the output.
    """
    shape = [max(t.shape[d] for t in tensors) for d in range(tensors[0].dim())]
    stacked = torch.zeros(len(tensors), *shape, dtype=tensors[0].dtype)
    for k, t in enumerate(tensors):
        stacked[(k, *(slice(0, n) for n in t.shape))] = t
    return stacked


def take_stacked(domains: Sequence[DomainTensors], key: str) -> torch.Tensor:
    """Every domain's `key`, stacked and zero-padded: (K, *largest shape)."""
    return stack_padded([domain.take(key) for domain in domains])


def per_utterance(stacked: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """stacked (K, ...), index (N,) -> (N, ...): each utterance's domain (a negative index gathers
    some domain's row, which `base_rows_kept` then discards)."""
    return stacked[index]


def base_rows_kept(index: torch.Tensor, base: torch.Tensor, tuned: torch.Tensor) -> torch.Tensor:
    """base, tuned (T, N, C): `tuned` for utterances with a domain, `base` itself (bit-exact) where
    index < 0."""
    return torch.where((index >= 0).view(1, -1, 1), tuned, base)


@contextmanager
def domains_selected(model: nn.Module, tuner: Tuner, index: torch.Tensor) -> Iterator[None]:
    """Run `model` with each utterance in its own domain: index (N,) int64 in batch order, -1 = base."""
    tuner.set_domain_index(model, index)
    try:
        yield
    finally:
        tuner.set_domain_index(model, None)
