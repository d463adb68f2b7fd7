#!/usr/bin/env python3
"""A few minutes' end-to-end check of adapter fine-tuning and decoding on one GPU.

It trains the normal Zipformer (the default model flags, 65.5M parameters, random weights) with
dim-16 adapters, as `zipformer_adapter/train.py --use-fp16 1 --max-duration 1000` does, on
synthetic features (80-dim, 100 frames per second, random token transcripts), with this recipe's
own pieces: the tuned model and its trainable selection (zipformer/tuners/recipes.py,
zipformer_adapter/adapter.py), ScaledAdam + Eden, the training loss (compute_loss), the GradScaler
policy (zipformer/training/grad_scale.py), then greedy decoding (zipformer/decoding/beam_search.py).

It prints, one `name: value` line each: the device, the model, the batch, the median step time
(after --warmup-batches), utterances and audio seconds per second, the peak GPU memory, the
last loss and the grad scale; the training loss with each RNN-T backend that imports (this
recipe's pure PyTorch recursion, k2's and fast_rnnt's kernels: forward+backward time and values);
the greedy decoding of one batch; the total time. A non-finite loss stops it with one line `error: ...` and exit
status 1. Without a CUDA GPU it runs on CPU in float32 (pass a tiny model's flags there: the
CI test does).

Usage:
  ./local/benchmarks/gpu_check.py                               # one GPU, under 5 minutes
  ./local/benchmarks/gpu_check.py --batches 20 --adapter-dim 8  # any flag of zipformer_adapter/train.py
"""
import argparse
import importlib
import math
import statistics
import time
from typing import Callable, Dict, List

import torch
from torch import nn

from zipformer.core.errors import fail
from zipformer.core.params import AttributeDict
from zipformer.decoding.beam_search import greedy_search_batch
from zipformer.loss.rnnt_loss import BACKENDS
from zipformer.model.builder import count_parameters
from zipformer.model.scaling import set_batch_count
from zipformer.training.flags import get_params
from zipformer.training.flags import get_parser as get_training_parser
from zipformer.training.grad_scale import adjust_grad_scale, create_grad_scaler
from zipformer.training.loss import compute_loss
from zipformer.training.memory import peak_resident_mb
from zipformer.training.optim import Eden, ScaledAdam, get_parameter_groups_with_lrs
from zipformer.training.schedule import get_adjusted_batch_count
from zipformer.training.state import FINETUNE_BATCH_COUNT_OFFSET, TrainingState
from zipformer.tuners.recipes import TunerTrainingRecipe
from zipformer_adapter.adapter import AdapterTuner

FRAMES_PER_SECOND = 100


class SyntheticTokens:
    """Stands in for the BPE model: a transcript is its token ids, space-separated."""

    def encode(self, texts: List[str], out_type: type = int) -> List[List[int]]:
        return [[out_type(t) for t in text.split()] for text in texts]


def get_parser(recipe: TunerTrainingRecipe) -> argparse.ArgumentParser:
    """zipformer_adapter/train.py's flags (defaults: --use-fp16 1 --max-duration 1000) plus this check's."""
    parser = get_training_parser(recipe)
    parser.description = __doc__.split("\n")[0]
    parser.set_defaults(use_fp16=True, max_duration=1000.0)
    group = parser.add_argument_group("gpu check")
    group.add_argument("--batches", type=int, default=50, help="training batches")
    group.add_argument("--warmup-batches", type=int, default=5, help="first batches left out of the step time")
    group.add_argument("--seconds", type=str, default="10,16", help="utterance durations: min,max seconds")
    group.add_argument("--tokens-per-second", type=float, default=3.0)
    group.add_argument("--vocab-size", type=int, default=500, help="tokens incl. blank (0)")
    group.add_argument("--backend-runs", type=int, default=3, help="timed loss runs per RNN-T backend (median)")
    return parser


def make_batch(params: AttributeDict, gen: torch.Generator) -> dict:
    """Utterances of random duration until --max-duration seconds, in the data loader's layout."""
    low, high = (float(s) for s in params.seconds.split(","))
    durations: List[float] = []
    while True:
        d = low + (high - low) * torch.rand((), generator=gen).item()
        if sum(durations) + d > params.max_duration:
            break
        durations.append(d)
    if not durations:
        fail(f"--max-duration {params.max_duration} is shorter than one utterance (--seconds {params.seconds})")
    frames = torch.tensor([int(d * FRAMES_PER_SECOND) for d in durations])
    features = torch.randn(len(durations), int(frames.max()), params.feature_dim, generator=gen)
    texts = []
    for d in durations:
        n = max(1, round(d * params.tokens_per_second))
        texts.append(" ".join(str(t) for t in torch.randint(1, params.vocab_size, (n,), generator=gen).tolist()))
    return {"inputs": features, "supervisions": {"num_frames": frames, "text": texts}}


def timed(device: torch.device, fn: Callable[[], object]) -> tuple:
    """(fn's result, wall-clock seconds), waiting for the GPU's queued work on both sides."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    result = fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return result, time.perf_counter() - start


def check_finite(info: Dict[str, float], batch_idx: int) -> None:
    if not math.isfinite(info["loss"]):
        fail(
            f"non-finite loss {info['loss']} at batch {batch_idx} (simple {info['simple_loss']}, "
            f"pruned {info['pruned_loss']}): the recipe diverges on this device"
        )


def train(params: AttributeDict, model: nn.Module, batch: dict, device: torch.device, amp: bool) -> None:
    """--batches steps of the training loop on `batch`; prints the step time, throughput, memory, loss."""
    optimizer = ScaledAdam(
        get_parameter_groups_with_lrs(model, lr=params.base_lr, include_names=True),
        lr=params.base_lr,
        clipping_scale=2.0,
    )
    scheduler = Eden(optimizer, params.lr_batches, params.lr_epochs)
    scheduler.step_epoch(0)
    scaler = create_grad_scaler(enabled=amp, device_type=device.type)
    state = TrainingState(batch_count_offset=FINETUNE_BATCH_COUNT_OFFSET)
    sp = SyntheticTokens()

    def step() -> dict:
        with torch.autocast(device_type=device.type, dtype=torch.float16, enabled=amp):
            loss, info = compute_loss(params, model, sp, batch, is_training=True, state=state)
        check_finite(info, state.batch_idx_train)
        scaler.scale(loss).backward()
        scheduler.step_batch(state.batch_idx_train)
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad()
        adjust_grad_scale(scaler, state.batch_idx_train)
        return info

    times = []
    for batch_idx in range(params.batches):
        if batch_idx % 10 == 0:
            set_batch_count(model, get_adjusted_batch_count(params, state))
        state.batch_idx_train += 1
        info, seconds = timed(device, step)
        times.append(seconds)
    measured = times[params.warmup_batches:] or times
    step_time = statistics.median(measured)
    utterances = len(batch["supervisions"]["text"])
    audio = batch["supervisions"]["num_frames"].sum().item() / FRAMES_PER_SECOND
    print(f"train: {params.batches} batches, median step {1000 * step_time:.1f} ms (batches {len(times) - len(measured) + 1}-{len(times)})")
    print(f"throughput: {utterances / step_time:.1f} utterances/s, {audio / step_time:.0f} s of audio per second")
    if device.type == "cuda":
        print(f"peak GPU memory: {torch.cuda.max_memory_allocated(device) / 2**20:.0f} MB allocated, "
              f"{torch.cuda.max_memory_reserved(device) / 2**20:.0f} MB reserved")
    else:
        print(f"peak resident memory: {peak_resident_mb():.0f} MB")
    frames = info["frames"]
    print(f"loss: {info['loss'] / frames:.4f} per frame at batch {params.batches} "
          f"(simple {info['simple_loss'] / frames:.4f}, pruned {info['pruned_loss'] / frames:.4f})")
    print(f"grad scale: {scaler.get_scale() if scaler.is_enabled() else 'none (float32)'}")


def compare_backends(params: AttributeDict, model: nn.Module, batch: dict, device: torch.device, amp: bool) -> None:
    """The training loss, forward+backward, with each RNN-T backend that imports, on one batch."""
    state = TrainingState(batch_count_offset=FINETUNE_BATCH_COUNT_OFFSET)
    reference = None
    for backend in BACKENDS:
        if backend != "torch":
            try:
                importlib.import_module(backend)
            except Exception as e:  # missing, or built for another torch
                print(f"rnnt backend {backend}: not available ({type(e).__name__}: {str(e).splitlines()[0][:80]})")
                continue
        backend_params = AttributeDict({**params, "rnnt_backend": backend})

        def forward_backward() -> dict:
            with torch.autocast(device_type=device.type, dtype=torch.float16, enabled=amp):
                loss, info = compute_loss(backend_params, model, SyntheticTokens(), batch, is_training=True, state=state)
            loss.backward()
            model.zero_grad()
            return info

        runs = [timed(device, forward_backward) for _ in range(params.backend_runs + 1)][1:]
        info = runs[-1][0]
        check_finite(info, 0)
        seconds = statistics.median(r[1] for r in runs)
        line = (f"rnnt backend {backend}: model forward+backward {1000 * seconds:.1f} ms, "
                f"simple loss {info['simple_loss']:.4f}, pruned loss {info['pruned_loss']:.4f}")
        if reference is None:
            reference = info
        else:
            diff = max(abs(info[k] - reference[k]) / abs(reference[k]) for k in ("simple_loss", "pruned_loss"))
            line += f", relative difference to torch {diff:.1e}"
        print(line)


def decode(model: nn.Module, batch: dict, device: torch.device) -> None:
    model.eval()
    features = batch["inputs"].to(device)
    lengths = batch["supervisions"]["num_frames"].to(device)

    def run() -> List[List[int]]:
        with torch.no_grad():
            encoder_out, encoder_out_lens = model.forward_encoder(features, lengths)
            return greedy_search_batch(model, encoder_out, encoder_out_lens)

    hyps, seconds = timed(device, run)
    print(f"greedy decoding: {len(hyps)} utterances in {1000 * seconds:.0f} ms, {sum(map(len, hyps))} tokens")


def main() -> None:
    start = time.perf_counter()
    recipe = TunerTrainingRecipe(AdapterTuner())
    args = get_parser(recipe).parse_args()
    params = get_params()
    params.update(vars(args))
    params.update(vocab_size=args.vocab_size, blank_id=0)
    torch.manual_seed(args.seed)
    device = torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
    amp = bool(params.use_fp16) and device.type == "cuda"
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU (no CUDA GPU)"
    print(f"device: {name}, {'fp16 autocast' if amp else 'float32'}, torch {torch.__version__}")

    model = recipe.get_model(params)
    recipe.select_trainable(model, params)
    recipe.set_train_mode(model, params)
    model.to(device)
    print(f"model: {count_parameters(model):,} parameters, {count_parameters(model, trainable_only=True):,} trainable")

    batch = make_batch(params, torch.Generator().manual_seed(args.seed))
    frames = batch["supervisions"]["num_frames"]
    print(f"batch: {len(frames)} utterances, {frames.sum().item() / FRAMES_PER_SECOND:.1f} s of audio, "
          f"{int(frames.max())} frames at most")
    train(params, model, batch, device, amp)
    compare_backends(params, model, batch, device, amp)
    decode(model, batch, device)
    print(f"total: {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
