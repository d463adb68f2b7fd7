"""Several domains stacked in one model: each utterance of a batch runs its own domain's tuner.

A tuner that implements `Tuner.stack_domains` and `Tuner.set_domain_index` holds N domains'
tensors stacked (domain k at index k of a leading dim) and applies, per utterance, the tensors of
the domain its index names; a negative index (-1) is the base model, exactly. The index reaches
the modules through `domains_selected(model, tuner, index)`, so no forward signature of the base
model changes. These are the pieces a tuner's stacked modules are built from.
"""
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, List, Sequence, Set

import torch
from torch import nn

from zipformer.checkpoints.checkpoint import StateDict
from zipformer.core.errors import UserError

if TYPE_CHECKING:
    from zipformer.tuners.tuner import Tuner


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
def domains_selected(model: nn.Module, tuner: "Tuner", index: torch.Tensor) -> Iterator[None]:
    """Run `model` with each utterance in its own domain: index (N,) int64 in batch order, -1 = base."""
    tuner.set_domain_index(model, index)
    try:
        yield
    finally:
        tuner.set_domain_index(model, None)
