#!/usr/bin/env python3
"""Time the Zipformer2 transducer on CPU, per second of audio.

For each configuration: encoder forward+backward (encoder_embed + encoder, gradient of a fixed
random projection of the output). For the small configuration also the full training step:
forward with the simple and pruned RNN-T losses, then backward of 0.5·simple + pruned (no
optimizer step). The model is in training mode with its schedules at batch 20000 (their final
values); the random number generators are reseeded before every run, so each run (and each
version of the code) draws the same regularisers (balancers, whitening, dropout). Random 80-dim
features at 100 frames per second; the median of --runs timed runs after --warmup untimed ones,
as wall-clock and process CPU seconds per run (CPU time sums all threads) and wall-clock seconds
per second of audio. Prints the thread count, the load average (on a shared machine other
processes slow the wall-clock figures) and the process's peak RSS so far.

Usage:
  ./local/benchmarks/benchmark_model.py                        # 4 x 10 s, normal and small configuration
  ./local/benchmarks/benchmark_model.py --batch 8 --seconds 15 --runs 5 --threads 2 --configs small
"""
import argparse
import os
import random
import resource
import statistics
import time
from typing import Callable, List, Tuple

import torch
from torch import nn

from local.benchmarks.model_configs import CONFIGS
from zipformer.core.errors import UserError, fail
from zipformer.core.params import AttributeDict
from zipformer.model.builder import count_parameters, get_model
from zipformer.model.flags import add_model_arguments
from zipformer.model.frontend import FEATURE_DIM, FRAME_SHIFT
from zipformer.model.scaling import set_batch_count

FRAMES_PER_SECOND = round(1 / FRAME_SHIFT)
# Configurations whose full training step (losses included) is also timed.
TRAINING_STEP_CONFIGS = ("small",)
# Schedules (dropout, skip rates, ...) at their final values, as in most of a training run.
BATCH_COUNT = 20000.0


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=4, help="utterances per batch")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of every utterance")
    parser.add_argument("--tokens-per-second", type=float, default=4.0, help="label length / second")
    parser.add_argument("--vocab-size", type=int, default=500, help="BPE vocabulary size incl. blank")
    parser.add_argument("--warmup", type=int, default=1, help="untimed runs first")
    parser.add_argument("--runs", type=int, default=3, help="timed runs (the median is reported)")
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads; 0 = default")
    parser.add_argument(
        "--configs", default="normal,small", help=f"comma-separated, from {','.join(CONFIGS)}"
    )
    parser.add_argument("--seed", type=int, default=0)
    return parser


def build_model(flags: List[str], vocab_size: int) -> nn.Module:
    parser = argparse.ArgumentParser()
    add_model_arguments(parser)
    params = AttributeDict(vars(parser.parse_args(flags)))
    params.update(feature_dim=FEATURE_DIM, vocab_size=vocab_size, blank_id=0, context_size=2)
    model = get_model(params)
    model.train()
    set_batch_count(model, BATCH_COUNT)
    return model


def reseed(seed: int) -> None:
    """Seed Python's generator (the regularisers' coin flips) and torch's (their masks)."""
    random.seed(seed)
    torch.manual_seed(seed)


def median_seconds(
    step: Callable[[], None], warmup: int, runs: int, seed: int
) -> Tuple[float, float]:
    """Median (wall-clock, process CPU) seconds of `step` over `runs`, after `warmup` calls; the
    generators are reseeded with `seed` before every call."""
    for _ in range(warmup):
        reseed(seed)
        step()
    wall, cpu = [], []
    for _ in range(runs):
        reseed(seed)
        start_wall, start_cpu = time.perf_counter(), time.process_time()
        step()
        wall.append(time.perf_counter() - start_wall)
        cpu.append(time.process_time() - start_cpu)
    return statistics.median(wall), statistics.median(cpu)


def encoder_step(model: nn.Module, x: torch.Tensor, x_lens: torch.Tensor) -> Callable[[], None]:
    """Forward+backward of encoder_embed + encoder for a fixed random output gradient."""
    output_grad: List[torch.Tensor] = []

    def step() -> None:
        model.zero_grad(set_to_none=True)
        encoder_out, _ = model.forward_encoder(x, x_lens)
        if not output_grad:
            output_grad.append(torch.randn_like(encoder_out))
        encoder_out.backward(output_grad[0])

    return step


def training_step(
    model: nn.Module, x: torch.Tensor, x_lens: torch.Tensor, y: List[List[int]]
) -> Callable[[], None]:
    """Forward with both transducer losses (training defaults) and backward, no optimizer step."""

    def step() -> None:
        model.zero_grad(set_to_none=True)
        simple_loss, pruned_loss = model(x, x_lens, y, prune_range=5, am_scale=0.0, lm_scale=0.25)
        (0.5 * simple_loss + pruned_loss).backward()

    return step


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def make_batch(args: argparse.Namespace) -> Tuple[torch.Tensor, torch.Tensor, List[List[int]]]:
    num_frames = int(round(args.seconds * FRAMES_PER_SECOND))
    x = torch.randn(args.batch, num_frames, FEATURE_DIM)
    x_lens = torch.full((args.batch,), num_frames, dtype=torch.int64)
    num_tokens = max(1, int(round(args.seconds * args.tokens_per_second)))
    y = torch.randint(1, args.vocab_size, (args.batch, num_tokens)).tolist()
    return x, x_lens, y


def check_args(args: argparse.Namespace) -> List[str]:
    """The validated configuration names; fail() on bad values."""
    for name in ("batch", "runs"):
        if getattr(args, name) < 1:
            fail(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.warmup < 0 or args.threads < 0:
        fail("--warmup and --threads must be >= 0")
    if args.vocab_size < 2:
        fail("--vocab-size must be >= 2 (blank plus at least one token)")
    if args.seconds * FRAMES_PER_SECOND < 9:
        fail("--seconds must give at least 9 feature frames (0.09 s)")
    configs = [c for c in args.configs.split(",") if c]
    unknown = [c for c in configs if c not in CONFIGS]
    if unknown or not configs:
        fail(f"--configs {args.configs!r}: choose from {','.join(CONFIGS)}")
    return configs


def main() -> None:
    args = get_parser().parse_args()
    configs = check_args(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    x, x_lens, y = make_batch(args)
    audio_seconds = args.batch * args.seconds

    print(
        f"CPU, torch {torch.__version__}, threads={torch.get_num_threads()}, "
        f"load average {' '.join(f'{v:.1f}' for v in os.getloadavg())} (1/5/15 min); "
        f"batch {args.batch} x {args.seconds:g} s = {audio_seconds:g} s of audio, "
        f"median of {args.runs} runs after {args.warmup} warm-up"
    )
    for name in configs:
        print(f"{name}: {' '.join(CONFIGS[name]) or '(defaults)'}")
    print()
    header = (
        f"{'config':<8} {'params':>12} {'measurement':<32} {'wall s':>7} {'CPU s':>7} "
        f"{'wall s per s audio':>18} {'peak RSS MB':>11}"
    )
    print(header)
    print("-" * len(header))
    try:
        for name in configs:
            model = build_model(CONFIGS[name], args.vocab_size)
            steps = [("encoder fwd+bwd", encoder_step(model, x, x_lens))]
            if name in TRAINING_STEP_CONFIGS:
                steps.append(("training step (fwd+losses+bwd)", training_step(model, x, x_lens, y)))
            for label, step in steps:
                wall, cpu = median_seconds(step, args.warmup, args.runs, args.seed)
                print(
                    f"{name:<8} {count_parameters(model):>12,} {label:<32} {wall:>7.2f} {cpu:>7.2f} "
                    f"{wall / audio_seconds:>18.4f} {peak_rss_mb():>11.0f}",
                    flush=True,
                )
            del model
    except (ValueError, UserError) as e:
        fail(str(e))


if __name__ == "__main__":
    main()
