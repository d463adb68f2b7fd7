#!/usr/bin/env python3
"""Peak CPU memory of one training step against the batch duration (--max-duration).

Every duration runs in a fresh subprocess, so no heap left by an earlier batch shape inflates
its figure. The subprocess builds the model of --model-config's checkpoint (the shipped
pretrained/base.pt by default) with ScaledAdam and Eden as train.py does, at the schedules' final
values, and trains one batch of random 80-dim fbank per bucket: like the bucketing sampler, a
bucket holds utterances of similar length (drawn uniformly within 15% below the bucket's length,
2-15 s as in the corpus) until the batch duration is reached. A step is train.py's: forward with
the simple and pruned losses, backward, optimizer step. Reported per bucket:

  fwd MB   peak resident memory (VmHWM) during the forward, above the resident memory before it
  step MB  the same peak over the whole step (the backward's gradients and temporaries added)
  saved MB the tensors autograd keeps for the backward (saved_tensors_hooks, each storage once)

--breakdown also prints, for the longest bucket, where the saved tensors come from (the innermost
named module that saved them; "losses" are the simple and pruned losses outside any module) and
the largest of them. --mixed N runs N batches of random buckets in one process after the fresh
measurements: the difference is what the heap keeps across batch shapes.

Usage:
  ./local/benchmarks/benchmark_train_memory.py                          # 25, 50, 100, 200 s
  ./local/benchmarks/benchmark_train_memory.py --durations 100 --breakdown --threads 2
"""
import argparse
import json
import random
import subprocess
import sys
from collections import defaultdict
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import torch
from torch import nn

from zipformer.checkpoints.checkpoint import read_checkpoint_metadata
from zipformer.checkpoints.config import apply_model_config
from zipformer.core.params import AttributeDict
from zipformer.model.builder import count_parameters, get_model
from zipformer.model.flags import add_model_arguments
from zipformer.model.frontend import FEATURE_DIM, FRAME_SHIFT
from zipformer.model.recipe import ModelRecipe
from zipformer.model.scaling import set_batch_count
from zipformer.training.memory import peak_resident_mb, release_freed_memory, reset_peak_resident, resident_memory_mb
from zipformer.training.optim import Eden, ScaledAdam, get_parameter_groups_with_lrs

FRAMES_PER_SECOND = round(1 / FRAME_SHIFT)
# The schedules (dropout, skip rates, balancers) at their final values, as in most of a run.
BATCH_COUNT = 20000.0
TOP_TENSORS = 8


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--durations", default="25,50,100,200", help="batch durations (s), comma-separated")
    parser.add_argument("--buckets", default="3,8,15", help="utterance lengths (s) of the buckets, comma-separated")
    parser.add_argument("--model-config", type=Path, default=Path("pretrained/base.pt"), help="checkpoint whose shape is built")
    parser.add_argument("--vocab-size", type=int, default=500)
    parser.add_argument("--tokens-per-second", type=float, default=3.0, help="BPE tokens per second of speech")
    parser.add_argument("--prune-range", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--breakdown", action="store_true", help="where the longest bucket's saved tensors come from")
    parser.add_argument("--mixed", type=int, default=0, help="also N batches of random buckets in one process")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--worker", type=float, default=None, help=argparse.SUPPRESS)
    return parser


def build_model(config_file: Path, vocab_size: int) -> nn.Module:
    parser = argparse.ArgumentParser()
    add_model_arguments(parser)
    params = AttributeDict(vars(parser.parse_args([])))
    params.update(feature_dim=FEATURE_DIM, vocab_size=vocab_size, blank_id=0, context_size=2)
    stored = read_checkpoint_metadata(config_file).get("model_config")
    apply_model_config(params, stored, frozenset(), str(config_file), ModelRecipe().config_keys)
    model = get_model(params)
    model.train()
    set_batch_count(model, BATCH_COUNT)
    return model


def make_batch(
    duration: float, bucket: float, tokens_per_second: float, vocab_size: int, rng: random.Random
) -> Tuple[torch.Tensor, torch.Tensor, List[List[int]]]:
    """Utterances of bucket*(0.85..1) s until `duration` s: features (N, T, 80), lengths (N,), token ids."""
    lengths: List[int] = []
    while not lengths or sum(lengths) / FRAMES_PER_SECOND + bucket <= duration:
        seconds = max(2.0, bucket * rng.uniform(0.85, 1.0))
        lengths.append(int(seconds * FRAMES_PER_SECOND))
    x = torch.randn(len(lengths), max(lengths), FEATURE_DIM)
    y = [
        [rng.randrange(1, vocab_size) for _ in range(max(1, round(n / FRAMES_PER_SECOND * tokens_per_second)))]
        for n in lengths
    ]
    return x, torch.tensor(lengths), y


class SavedTensorAccounting:
    """Bytes autograd saves for the backward, by the innermost named module that saved them.

    Each storage is counted once (views of one tensor share it); tensors saved outside every
    submodule (the losses) are under "losses".
    """

    def __init__(self, model: nn.Module) -> None:
        self.stack: List[str] = []
        self.seen: set = set()
        self.by_module: Dict[str, int] = defaultdict(int)
        self.largest: List[Tuple[int, str, Tuple[int, ...], str]] = []
        self.handles = []
        for name, module in model.named_modules():
            if name:
                self.handles.append(module.register_forward_pre_hook(self._enter(name)))
                self.handles.append(module.register_forward_hook(self._leave))

    def _enter(self, name: str):
        def hook(_module: nn.Module, _inputs) -> None:
            self.stack.append(name)

        return hook

    def _leave(self, _module: nn.Module, _inputs, _output) -> None:
        self.stack.pop()

    def pack(self, tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        key = (storage.data_ptr(), storage.nbytes())
        if key not in self.seen and storage.nbytes() > 0:
            self.seen.add(key)
            where = self.stack[-1] if self.stack else "losses"
            self.by_module[where] += storage.nbytes()
            self.largest.append((storage.nbytes(), where, tuple(tensor.shape), str(tensor.dtype).replace("torch.", "")))
        return tensor

    @property
    def total(self) -> int:
        return sum(self.by_module.values())

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()


def group(name: str) -> str:
    """encoder.encoders.2.encoder.layers.0.self_attn_weights.in_proj -> encoder.encoders.2 ... self_attn_weights."""
    parts = name.split(".")
    if parts[0] == "encoder" and len(parts) >= 3:
        head = ".".join(parts[:3])
        return f"{head} {parts[-1]}" if len(parts) > 3 else head
    return ".".join(parts[:2])


def train_step(
    model: nn.Module, optimizer: ScaledAdam, x: torch.Tensor, x_lens: torch.Tensor, y: List[List[int]], prune_range: int
) -> Tuple[float, float, SavedTensorAccounting]:
    """One step; returns (forward peak, step peak) in MB above the resident memory before it."""
    release_freed_memory()
    before = resident_memory_mb()
    reset_peak_resident()
    accounting = SavedTensorAccounting(model)
    with torch.autograd.graph.saved_tensors_hooks(accounting.pack, lambda t: t):
        simple_loss, pruned_loss = model(x=x, x_lens=x_lens, y=y, prune_range=prune_range, lm_scale=0.25)
    accounting.remove()
    forward_peak = peak_resident_mb() - before
    (0.5 * simple_loss + pruned_loss).backward()
    optimizer.step()
    optimizer.zero_grad()
    step_peak = peak_resident_mb() - before
    return forward_peak, step_peak, accounting


def worker(args: argparse.Namespace) -> dict:
    """Measure one batch duration in this process; the result is one JSON line."""
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng = random.Random(args.seed)
    model = build_model(args.model_config, args.vocab_size)
    optimizer = ScaledAdam(get_parameter_groups_with_lrs(model, lr=0.045, include_names=True), lr=0.045, clipping_scale=2.0)
    Eden(optimizer, 7500, 3.5)
    buckets = [float(b) for b in args.buckets.split(",")]
    # A first small step allocates the optimizer state, as after the first batch of a run.
    train_step(model, optimizer, *make_batch(2.0, 2.0, args.tokens_per_second, args.vocab_size, rng), args.prune_range)
    result = {"duration": args.worker, "params": count_parameters(model), "baseline_mb": resident_memory_mb(), "buckets": []}
    for bucket in buckets:
        x, x_lens, y = make_batch(args.worker, bucket, args.tokens_per_second, args.vocab_size, rng)
        forward_peak, step_peak, accounting = train_step(model, optimizer, x, x_lens, y, args.prune_range)
        result["buckets"].append(
            {
                "bucket": bucket,
                "utterances": len(y),
                "frames": int(x.shape[1]),
                "forward_mb": forward_peak,
                "step_mb": step_peak,
                "saved_mb": accounting.total / 2**20,
            }
        )
    if args.breakdown:
        by_group: Dict[str, int] = defaultdict(int)
        for name, nbytes in accounting.by_module.items():
            by_group[group(name)] += nbytes
        result["breakdown"] = sorted(((n / 2**20, g) for g, n in by_group.items()), reverse=True)
        result["largest"] = [
            (n / 2**20, where, shape, dtype) for n, where, shape, dtype in sorted(accounting.largest, reverse=True)[:TOP_TENSORS]
        ]
    if args.mixed:
        reset_peak_resident()
        for _ in range(args.mixed):
            train_step(model, optimizer, *make_batch(args.worker, rng.uniform(2.0, 15.0), args.tokens_per_second, args.vocab_size, rng), args.prune_range)
        result["mixed_peak_mb"] = peak_resident_mb()
        result["mixed_resident_mb"] = resident_memory_mb()
    return result


def run_fresh(argv: Sequence[str], duration: float) -> dict:
    command = [sys.executable, __file__, *argv, "--worker", str(duration)]
    out = subprocess.run(command, check=True, stdout=subprocess.PIPE, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def report(results: List[dict]) -> None:
    first = results[0]
    print(f"model: {first['params'] / 1e6:.2f} M parameters; resident after setup and one step: {first['baseline_mb']:.0f} MB")
    print("| batch (s) | bucket (s) | utterances | frames | fwd MB | step MB | saved MB |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for result in results:
        for b in result["buckets"]:
            print(
                f"| {result['duration']:.0f} | {b['bucket']:.0f} | {b['utterances']} | {b['frames']} | "
                f"{b['forward_mb']:.0f} | {b['step_mb']:.0f} | {b['saved_mb']:.0f} |"
            )
    for result in results:
        if "mixed_peak_mb" in result:
            worst = max(b["step_mb"] for b in result["buckets"]) + result["baseline_mb"]
            print(
                f"{result['duration']:.0f} s, random buckets in one process: peak {result['mixed_peak_mb']:.0f} MB "
                f"(fresh worst {worst:.0f} MB), resident after {result['mixed_resident_mb']:.0f} MB"
            )
        if "breakdown" in result:
            print(f"\nsaved for the backward, {result['duration']:.0f} s of the last bucket, by module (MB):")
            for mb, name in result["breakdown"]:
                if mb >= 1:
                    print(f"  {mb:8.1f}  {name}")
            print("largest saved tensors (MB, module, shape, dtype):")
            for mb, where, shape, dtype in result["largest"]:
                print(f"  {mb:8.1f}  {where}  {list(shape)}  {dtype}")


def main() -> None:
    args = get_parser().parse_args()
    if args.worker is not None:
        print(json.dumps(worker(args)))
        return
    argv = [a for a in sys.argv[1:]]
    print(f"threads: {args.threads}, tokens/s: {args.tokens_per_second}, prune range: {args.prune_range}")
    report([run_fresh(argv, float(d)) for d in args.durations.split(",")])


if __name__ == "__main__":
    main()
