"""Samplers and data-loader workers of training: bucketing sized to the data, Ctrl-C left to the
main process, and reproducible seeds per worker, epoch and rank."""
import os
import signal
from typing import Optional

import torch
from lhotse import CutSet
from lhotse.dataset import DynamicBucketingSampler, SimpleCutSampler
from lhotse.dataset.dataloading import LHOTSE_PROCESS_SEED
from lhotse.dataset.sampling.base import CutSampler
from lhotse.utils import fix_random_seed


def ignore_sigint(worker_id: int) -> None:
    """DataLoader worker_init_fn: leave Ctrl-C to the main process.

    A terminal sends SIGINT to the workers too; training handles it in the main process (it saves a
    checkpoint first), and the workers end with it.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)


class WorkerSeeder:
    """DataLoader worker_init_fn: a different, reproducible random seed for every worker, epoch and rank.

    PyTorch seeds each worker's torch RNG with a base seed drawn from the main process's torch RNG at
    every epoch, plus the worker id; train.py seeds that RNG, so runs repeat. Ranks are offset because
    every rank seeds its main process identically. Python's and numpy's RNGs (SpecAugment, CutMix with
    seed="randomized") follow.
    """

    def __init__(self, rank: int) -> None:
        self.rank = rank

    def __call__(self, worker_id: int) -> None:
        ignore_sigint(worker_id)
        seed = (torch.initial_seed() + 1_000_003 * self.rank) % 2**31
        fix_random_seed(seed)
        os.environ[LHOTSE_PROCESS_SEED] = str(seed)


def usable_num_buckets(cuts: CutSet, num_buckets: int, max_duration: float, world_size: int) -> int:
    """At most `num_buckets`, and few enough that every bucket fills a few batches on every rank.

    With --drop-last, a bucket holding less than one batch yields nothing: a small set split into
    icefall's 30 buckets gives no batch at all. Reads cuts only until the set is known to be large.
    """
    batches_per_bucket = 4
    needed = num_buckets * batches_per_bucket * max_duration * world_size
    total = 0.0
    for cut in cuts:
        total += cut.duration
        if total >= needed:
            return num_buckets
    return min(num_buckets, int(total / (batches_per_bucket * max_duration * world_size)))


def make_sampler(
    cuts: CutSet,
    max_duration: float,
    shuffle: bool,
    drop_last: bool,
    bucketing: bool,
    num_buckets: int,
    world_size: Optional[int],
    rank: Optional[int],
) -> CutSampler:
    """DynamicBucketingSampler, or SimpleCutSampler when bucketing is off or the set is too small for buckets."""
    num_buckets = usable_num_buckets(cuts, num_buckets, max_duration, world_size or 1)
    # lhotse refuses fewer than two buckets.
    if bucketing and num_buckets >= 2:
        return DynamicBucketingSampler(
            cuts,
            max_duration=max_duration,
            shuffle=shuffle,
            num_buckets=num_buckets,
            buffer_size=num_buckets * 2000,  # cuts held in memory; icefall's 5000 per bucket costs more RAM
            drop_last=drop_last,
            world_size=world_size,
            rank=rank,
        )
    return SimpleCutSampler(
        cuts, max_duration=max_duration, shuffle=shuffle, drop_last=drop_last, world_size=world_size, rank=rank
    )
