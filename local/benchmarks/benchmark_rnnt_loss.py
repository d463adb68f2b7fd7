#!/usr/bin/env python3
"""Time forward+backward of the pruned RNN-T loss pipeline used in training, on CPU.

Stages (as in the model's forward): smoothed "simple" loss with occupations -> prune ranges ->
pruning of the projected encoder/decoder outputs -> joiner logits -> pruned loss, then backward
through all of it. Prints the median time per stage and per iteration after a warm-up.

Usage:
  ./local/benchmarks/benchmark_rnnt_loss.py                       # B=8 T=250 S=40 V=500 s_range=5
  ./local/benchmarks/benchmark_rnnt_loss.py --batch 32 --frames 400 --symbols 80 --runs 5 --threads 2
"""
import argparse
import statistics
import time
from typing import Dict, List

import torch
from torch import nn

from zipformer.core.errors import UserError, fail
from zipformer.loss.rnnt_loss import (
    BACKENDS,
    do_rnnt_pruning,
    get_rnnt_prune_ranges,
    rnnt_loss_pruned,
    rnnt_loss_smoothed,
)


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=8, help="B, sequences per batch")
    parser.add_argument("--frames", type=int, default=250, help="T, padded encoder frames")
    parser.add_argument("--symbols", type=int, default=40, help="S, padded label length")
    parser.add_argument("--vocab", type=int, default=500, help="V, vocabulary size incl. blank")
    parser.add_argument("--joiner-dim", type=int, default=512, help="joiner hidden size")
    parser.add_argument("--s-range", type=int, default=5, help="prune range")
    parser.add_argument("--warmup", type=int, default=2, help="untimed iterations first")
    parser.add_argument("--runs", type=int, default=7, help="timed iterations (median reported)")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--backend", choices=BACKENDS, default="torch", help="the lattice recursion's implementation")
    return parser


class Inputs:
    """Random encoder/decoder outputs and projections shaped like the model's."""

    def __init__(self, args: argparse.Namespace) -> None:
        B, T, S, V, J = args.batch, args.frames, args.symbols, args.vocab, args.joiner_dim
        g = torch.Generator().manual_seed(args.seed)
        self.encoder_out = torch.randn(B, T, J, generator=g)
        self.decoder_out = torch.randn(B, S + 1, J, generator=g)
        self.symbols = torch.randint(1, V, (B, S), generator=g)
        # Varying lengths as in a real batch; sequence 0 keeps the padded sizes.
        t_len = torch.randint(T // 2, T + 1, (B,), generator=g)
        s_len = torch.minimum(torch.randint(S // 2, S + 1, (B,), generator=g), t_len)
        t_len[0], s_len[0] = T, S
        self.boundary = torch.zeros(B, 4, dtype=torch.int64)
        self.boundary[:, 2] = s_len
        self.boundary[:, 3] = t_len
        torch.manual_seed(args.seed)
        self.simple_am_proj = nn.Linear(J, V)
        self.simple_lm_proj = nn.Linear(J, V)
        self.encoder_proj = nn.Linear(J, J)
        self.decoder_proj = nn.Linear(J, J)
        self.output_linear = nn.Linear(J, V)


def run_once(x: Inputs, s_range: int, backend: str) -> Dict[str, float]:
    """One forward+backward of the pipeline; returns seconds per stage."""
    times: Dict[str, float] = {}
    encoder_out = x.encoder_out.clone().requires_grad_()
    decoder_out = x.decoder_out.clone().requires_grad_()

    def mark(stage: str, start: float) -> float:
        now = time.perf_counter()
        times[stage] = now - start
        return now

    t0 = time.perf_counter()
    simple_loss, (px_grad, py_grad) = rnnt_loss_smoothed(
        lm=x.simple_lm_proj(decoder_out),
        am=x.simple_am_proj(encoder_out),
        symbols=x.symbols,
        termination_symbol=0,
        lm_only_scale=0.25,
        am_only_scale=0.0,
        boundary=x.boundary,
        reduction="sum",
        return_grad=True,
        backend=backend,
    )
    t0 = mark("smoothed", t0)
    ranges = get_rnnt_prune_ranges(px_grad, py_grad, x.boundary, s_range)
    t0 = mark("ranges", t0)
    am_pruned, lm_pruned = do_rnnt_pruning(
        x.encoder_proj(encoder_out), x.decoder_proj(decoder_out), ranges
    )
    t0 = mark("pruning", t0)
    logits = x.output_linear(torch.tanh(am_pruned + lm_pruned))
    t0 = mark("joiner", t0)
    pruned_loss = rnnt_loss_pruned(logits, x.symbols, ranges, 0, x.boundary, reduction="sum", backend=backend)
    t0 = mark("pruned", t0)
    (0.5 * simple_loss + pruned_loss).backward()
    mark("backward", t0)
    return times


def run_losses_alone(x: Inputs, s_range: int, backend: str) -> Dict[str, float]:
    """Forward+backward of each loss with its direct inputs as leaves (no linear layers)."""
    times: Dict[str, float] = {}
    with torch.no_grad():
        am = x.simple_am_proj(x.encoder_out)
        lm = x.simple_lm_proj(x.decoder_out)
    am.requires_grad_()
    lm.requires_grad_()
    t0 = time.perf_counter()
    simple_loss, (px_grad, py_grad) = rnnt_loss_smoothed(
        lm, am, x.symbols, 0, 0.25, 0.0, x.boundary, reduction="sum", return_grad=True, backend=backend
    )
    simple_loss.backward()
    times["smoothed fwd+bwd"] = time.perf_counter() - t0
    ranges = get_rnnt_prune_ranges(px_grad, py_grad, x.boundary, s_range)
    with torch.no_grad():
        am_pruned, lm_pruned = do_rnnt_pruning(
            x.encoder_proj(x.encoder_out), x.decoder_proj(x.decoder_out), ranges
        )
        logits = x.output_linear(torch.tanh(am_pruned + lm_pruned))
    logits.requires_grad_()
    t0 = time.perf_counter()
    rnnt_loss_pruned(logits, x.symbols, ranges, 0, x.boundary, reduction="sum", backend=backend).backward()
    times["pruned fwd+bwd"] = time.perf_counter() - t0
    return times


def print_medians(runs: List[Dict[str, float]]) -> None:
    for stage in runs[0]:
        print(f"  {stage:<17} {1000 * statistics.median(r[stage] for r in runs):8.1f} ms")
    total = 1000 * statistics.median(sum(r.values()) for r in runs)
    print(f"  {'total':<17} {total:8.1f} ms")


def main() -> None:
    args = get_parser().parse_args()
    for name in ("batch", "frames", "symbols", "vocab", "joiner_dim", "s_range", "runs", "threads"):
        if getattr(args, name) < 1:
            fail(f"--{name.replace('_', '-')} must be >= 1")
    torch.set_num_threads(args.threads)
    x = Inputs(args)
    try:
        for _ in range(args.warmup):
            run_once(x, args.s_range, args.backend)
            run_losses_alone(x, args.s_range, args.backend)
        pipeline = [run_once(x, args.s_range, args.backend) for _ in range(args.runs)]
        losses = [run_losses_alone(x, args.s_range, args.backend) for _ in range(args.runs)]
    except (ValueError, UserError) as e:
        fail(str(e))

    print(
        f"pruned RNN-T, CPU, backend={args.backend}, threads={args.threads}: "
        f"B={args.batch} T={args.frames} S={args.symbols} V={args.vocab} "
        f"joiner_dim={args.joiner_dim} s_range={args.s_range}, median of {args.runs} runs"
    )
    print("training pipeline, forward stages then one backward (incl. joiner/projections):")
    print_medians(pipeline)
    print("loss functions alone (their inputs as leaf tensors), forward+backward:")
    print_medians(losses)


if __name__ == "__main__":
    main()
