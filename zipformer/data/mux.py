"""Source-domain cuts mixed into a fine-tuning stream (icefall's --use-mux), so the old domain is not forgotten.

`MuxedCuts` is a lazy, re-iterable stream: every cut of the main (fine-tuning) set once, in its
order, and before each of them k cuts of the mux (source-domain) set, k drawn so that every
position of the stream is a mux cut with probability `weight`. `weight` is thus the expected share
of mux cuts in the stream (by count), and an epoch grows by a factor 1 / (1 - weight).

The mux cuts come from an endless cycle over the mux set that starts at a random cut and is
shuffled in blocks of min(buffer_size, size of the set) cuts: a set up to buffer_size cuts is drawn
as random permutations, a larger one without holding it in memory. The random generator is seeded
by (seed, epoch), so every epoch draws other mux cuts, and a resumed epoch the same ones: the
training loop calls `set_epoch` as it does the sampler's. This is our own mixer rather than
lhotse's CutSet.mux, whose draws repeat the same mux cuts, from the start of the file, every epoch.
"""
import itertools
import random
from typing import Iterable, Iterator

from lhotse.cut import Cut


class MuxedCuts:
    """Cuts of `main` with cuts of `mux` mixed in at the share `weight` (0 < weight < 1)."""

    def __init__(self, main: Iterable[Cut], mux: Iterable[Cut], weight: float, seed: int = 0, buffer_size: int = 10000) -> None:
        if not 0 < weight < 1:
            raise ValueError(f"weight must be between 0 and 1 (exclusive), got {weight}")
        self.main = main
        self.mux = mux
        self.weight = weight
        self.seed = seed
        self.epoch = 0
        self.num_mux = sum(1 for _ in mux)
        if self.num_mux == 0:
            raise ValueError("the mux set holds no cuts")
        self.block_size = min(buffer_size, self.num_mux)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _cycle(self, start: int) -> Iterator[Cut]:
        """The mux set, endlessly, from its cut number `start` on."""
        yield from itertools.islice(self.mux, start, None)
        while True:
            yield from self.mux

    def _draws(self, rng: random.Random) -> Iterator[Cut]:
        cycle = self._cycle(rng.randrange(self.num_mux))
        while True:
            block = list(itertools.islice(cycle, self.block_size))
            rng.shuffle(block)
            yield from block

    def __iter__(self) -> Iterator[Cut]:
        rng = random.Random(f"mux-{self.seed}-{self.epoch}")
        draws = self._draws(rng)
        for cut in self.main:
            while rng.random() < self.weight:
                yield next(draws)
            yield cut
