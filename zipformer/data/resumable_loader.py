"""A training DataLoader whose sampler state describes the batches handed out, not those prefetched.

With worker processes, a DataLoader draws batches from its sampler ahead of the training loop
(prefetch_factor * num_workers of them). A lhotse sampler's `state_dict()` then counts those too,
and a mid-epoch resume from it skips them. Here the sampler's state is snapshotted at every batch
it yields, and the snapshot becomes current only when the loader hands that batch to the caller.
"""
import copy
from collections import deque
from typing import Any, Deque, Dict, Iterator

from lhotse.dataset.sampling.base import CutSampler
from torch.utils.data import DataLoader, Sampler


class ConsumedStateSampler(Sampler):
    """Wraps a lhotse sampler; `state_dict()` is its state after the last consumed batch."""

    def __init__(self, sampler: CutSampler) -> None:
        self.sampler = sampler
        self._pending: Deque[Dict[str, Any]] = deque()
        self._consumed = sampler.state_dict()

    def __iter__(self) -> Iterator[Any]:
        self._pending.clear()
        for batch in self.sampler:
            self._pending.append(self.sampler.state_dict())
            yield batch

    def mark_consumed(self) -> None:
        """The oldest batch drawn from the sampler has reached the caller."""
        self._consumed = self._pending.popleft()

    def set_epoch(self, epoch: int) -> None:
        self.sampler.set_epoch(epoch)
        self._consumed = self.sampler.state_dict()

    def state_dict(self) -> Dict[str, Any]:
        return copy.deepcopy(self._consumed)

    @property
    def world_size(self) -> int:
        return self.sampler.world_size

    @property
    def rank(self) -> int:
        return self.sampler.rank


class ResumableDataLoader(DataLoader):
    """A DataLoader over a ConsumedStateSampler that marks each batch consumed as it hands it out."""

    def __iter__(self) -> Iterator[Any]:
        for batch in super().__iter__():
            self.sampler.mark_consumed()
            yield batch
