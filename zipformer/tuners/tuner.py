"""The tuner interface: a parameter-efficient fine-tuning method put into a frozen base model.

A tuner (residual adapters, LoRA, ...) lives in its own recipe directory and implements `Tuner`:
its flags, how it goes into a base model, which tensors are its own, how its modules train and
switch off, and (optionally) how it merges into the base weights. Everything else is generic and
lives beside this module: its tensors in a model (zipformer.tuners.tensors: freezing the body,
strict loading of base + tuner tensors), tuner-only files with a fingerprint of the base they were
trained on (zipformer.tuners.files), and the recipes that plug a tuner into the shared training,
decoding and export machinery (zipformer.tuners.recipes and the scripts' mains). The base recipe
knows no tuner by name, and a new tuner needs only its own directory.

Several domains on one base (zipformer.tuners.domains): a tuner that implements `stack_domains` and
`set_domain_index` holds N domains' tensors stacked (domain k at index k of a leading dim) and
applies, per utterance, the tensors of the domain its index names; a negative index (-1) is the
base model, exactly (zipformer.tuners.stacking).
"""
import argparse
from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Dict, Optional, Sequence

import torch
from torch import nn

from zipformer.checkpoints.checkpoint import StateDict, tensors_fingerprint
from zipformer.core.errors import UserError
from zipformer.core.params import AttributeDict
from zipformer.tuners.files import base_fingerprint
from zipformer.tuners.stacking import DomainTensors
from zipformer.tuners.tensors import tuner_tensors


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

    def stack_domains(self, model: nn.Module, domains: Sequence[DomainTensors]) -> int:
        """Put modules into a base model that hold every domain's tensors stacked (domain k at
        index k), each domain's taken with `DomainTensors.take`; return the number of tuner
        parameters. Domains of different sizes are zero-padded to the largest (`stack_padded`).
        The modules apply, per utterance, the domain that `set_domain_index` names."""
        raise UserError(f"{self.name} cannot serve several domains from one model: decode each domain alone")

    def set_domain_index(self, model: nn.Module, index: Optional[torch.Tensor]) -> None:
        """Give the stacked modules of `model` the domain of each utterance: index (N,) int64,
        negative = the base model; None when no batch is running."""
        raise UserError(f"{self.name} cannot serve several domains from one model: decode each domain alone")
