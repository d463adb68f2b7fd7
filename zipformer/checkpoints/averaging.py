"""Decode-time averaging of training checkpoints, and the flags that choose what is averaged.

Two ways to average the weights of a run (icefall's):
  plain mean:     the element-wise mean of the "model" entries of several files
                  (average_checkpoints: --use-averaged-model 0);
  averaged model: training keeps, on rank 0, model_avg = the running mean of the snapshots of the
                  model taken every P = --average-period batches (update_averaged_model), and saves it
                  in every checkpoint. With M_b the model_avg saved at batch b (a multiple of P), the
                  mean of the snapshots at s+P, ..., t of two files s < t is
                      (t * M_t - s * M_s) / (t - s),
                  since t * M_t is the sum of the snapshots at P, ..., t and s * M_s of those up to s
                  (average_checkpoints_with_averaged_model: --use-averaged-model 1).
load_averaged_state_dict chooses the files from --epoch/--iter/--avg (add_checkpoint_arguments);
checkpoint_suffix names the result and exported files after them.
"""
import argparse
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Union

import torch
from torch import nn

from zipformer.checkpoints.checkpoint import (
    LoadedWeights,
    PathLike,
    StateDict,
    check_same_keys,
    describe_keys,
    epoch_numbers,
    find_checkpoints,
    read_checkpoint_file,
    read_checkpoint_metadata,
    strip_ddp_prefix,
    unwrap_ddp,
)
from zipformer.core.errors import UserError
from zipformer.core.flag_types import int_at_least, str2bool

_DIFFERENT_MODELS = "they come from different model configurations"


def _model_state(
    checkpoint: Mapping[str, Any], filename: PathLike, key: str = "model"
) -> StateDict:
    if checkpoint.get(key) is None:
        hint = ""
        if key == "model_avg":
            hint = " (saved without model averaging?): decode with --use-averaged-model 0"
        raise UserError(f"{filename} has no '{key}' entry{hint}")
    return strip_ddp_prefix(checkpoint[key])


def average_checkpoints(
    filenames: list[PathLike], device: Union[str, torch.device] = "cpu"
) -> StateDict:
    """Element-wise mean of the "model" state_dicts of `filenames`.

    Floating-point tensors are averaged in float64 and cast back; integer tensors use floor
    division.
    """
    if not filenames:
        raise ValueError("average_checkpoints needs at least one file")
    first = _model_state(read_checkpoint_file(filenames[0], device), filenames[0])
    totals = {k: v.double() if v.is_floating_point() else v.clone() for k, v in first.items()}
    for filename in filenames[1:]:
        state = _model_state(read_checkpoint_file(filename, device), filename)
        check_same_keys(state, first, f"cannot average {filenames[0]} and {filename}", _DIFFERENT_MODELS)
        for k, v in state.items():
            totals[k] += v.double() if v.is_floating_point() else v
    n = len(filenames)
    return {
        k: (totals[k] / n).to(v.dtype) if v.is_floating_point() else totals[k] // n
        for k, v in first.items()
    }


def average_checkpoints_with_averaged_model(
    filename_start: PathLike, filename_end: PathLike, device: Union[str, torch.device] = "cpu"
) -> StateDict:
    """Mean of the model snapshots taken every `average_period` batches in (start, end].

    Each file's model_avg M is the running mean of the snapshots at P, 2P, ..., so with
    s = floor(b_start / P) * P and t = floor(b_end / P) * P (b = batch_idx_train, P = average_period
    of the start file), the mean over (s, t] is (t * M_end - s * M_start) / (t - s).
    Non-floating-point entries are taken from the end file.
    """
    start = read_checkpoint_file(filename_start, device)
    end = read_checkpoint_file(filename_end, device)
    for checkpoint, filename in ((start, filename_start), (end, filename_end)):
        for key in ("batch_idx_train", "average_period"):
            if key not in checkpoint:
                raise UserError(
                    f"{filename} has no '{key}': it was not written by training; "
                    "use --use-averaged-model 0"
                )
    period = start["average_period"]
    s = start["batch_idx_train"] // period * period
    t = end["batch_idx_train"] // period * period
    if t <= s:
        raise UserError(
            f"nothing to average: {filename_start} is at batch {start['batch_idx_train']} and "
            f"{filename_end} at batch {end['batch_idx_train']} (average_period {period}); "
            "the start must be at least one period earlier"
        )
    avg_start = _model_state(start, filename_start, "model_avg")
    avg_end = _model_state(end, filename_end, "model_avg")
    check_same_keys(avg_start, avg_end, f"cannot average {filename_end} and {filename_start}", _DIFFERENT_MODELS)

    weight_end = t / (t - s)
    weight_start = 1.0 - weight_end  # = -s / (t - s)
    averaged = {}
    for k, v_end in avg_end.items():
        if v_end.is_floating_point():
            # Written as (M_end + M_start * w_s / w_e) * w_e, the reference's overflow-safe form.
            start_part = avg_start[k].double() * (weight_start / weight_end)
            mixed = (v_end.double() + start_part) * weight_end
            averaged[k] = mixed.to(v_end.dtype)
        else:
            averaged[k] = v_end
    return averaged


@torch.no_grad()
def update_averaged_model(
    params: Mapping[str, Any], model_cur: nn.Module, model_avg: nn.Module
) -> None:
    """avg = avg * (1 - P/b) + cur * (P/b), in place on model_avg's floating-point entries.

    P = params["average_period"], b = params["batch_idx_train"] (a positive multiple of P), which
    makes model_avg the mean of the snapshots taken at batches P, 2P, ..., b.
    """
    period = params["average_period"]
    batch_idx = params["batch_idx_train"]
    if batch_idx < period:
        raise ValueError(f"batch_idx_train ({batch_idx}) must be >= average_period ({period})")
    weight_cur = period / batch_idx
    cur = unwrap_ddp(model_cur).state_dict()
    avg = model_avg.state_dict()
    if cur.keys() != avg.keys():
        diff = describe_keys(sorted(set(cur) ^ set(avg)))
        raise ValueError(f"model_avg and the model have different keys: {diff}")
    seen = set()
    for k, v_avg in avg.items():
        if not v_avg.is_floating_point():
            continue
        # Tied tensors appear under several keys; update each storage once.
        ptr = v_avg.data_ptr()
        if v_avg.numel() > 0 and ptr in seen:
            continue
        seen.add(ptr)
        v_avg.mul_(1.0 - weight_cur).add_(cur[k].to(v_avg.dtype), alpha=weight_cur)


def load_averaged_state_dict(
    params: Mapping[str, Any], device: Union[str, torch.device] = "cpu", prefix: str = ""
) -> LoadedWeights:
    """The model weights selected by the decode flags, described in one line, with the metadata of
    the newest file used.

    Reads params["epoch"], ["iter"], ["avg"], ["use_averaged_model"] and ["exp_dir"]; the file
    names below get `prefix` in front (e.g. "adapter-" for adapter-epoch-{e}.pt):
      --iter 0, no averaged model: epoch-{e}.pt, or the plain mean of epoch-{e-a+1..e}.pt;
      --iter i, no averaged model: plain mean of the newest a checkpoint-*.pt with number <= i;
      --iter 0, --use-averaged-model: the model_avg range from epoch-{e-a}.pt (excluded) to
        epoch-{e}.pt (average_checkpoints_with_averaged_model);
      --iter i, --use-averaged-model: the same from the (a+1)-th newest to the newest
        checkpoint <= i.
    Raises UserError naming the missing file or the largest --avg that would work.
    """
    epoch, iteration, avg = int(params["epoch"]), int(params["iter"]), int(params["avg"])
    use_averaged = bool(params["use_averaged_model"])
    exp_dir = Path(params["exp_dir"])
    if avg < 1:
        raise UserError(f"--avg must be >= 1, got {avg}")

    if iteration > 0:
        available = find_checkpoints(exp_dir, iteration=iteration, prefix=prefix)
        needed = avg + 1 if use_averaged else avg
        if len(available) < needed:
            what = f"--iter {iteration} --avg {avg}"
            if use_averaged:
                what += " --use-averaged-model 1"
            usable = len(available) - 1 if use_averaged else len(available)
            fix = "check --exp-dir and --iter"
            if usable >= 1:
                fix = f"use --avg <= {usable} or a larger --iter"
            raise UserError(
                f"{what} needs {needed} {prefix}checkpoint-*.pt files numbered <= {iteration} "
                f"in {exp_dir}, found {len(available)}: {fix}"
            )
        if use_averaged:
            start, end = available[avg], available[0]
            state = average_checkpoints_with_averaged_model(start, end, device)
            return _selected(state, f"averaged model from {Path(start).name} (excluded) to {Path(end).name}", end)
        chosen = available[:avg]
        state = average_checkpoints(chosen, device)
        names = ", ".join(Path(f).name for f in chosen)
        return _selected(state, f"mean of {len(chosen)} checkpoints: {names}", chosen[0])

    if epoch < 1:
        raise UserError(f"--epoch must be >= 1 (or use --iter), got {epoch}")
    if use_averaged:
        if epoch == 1:
            raise UserError(
                f"--use-averaged-model needs {prefix}epoch-0.pt, which cannot exist: "
                "with --epoch 1 use --use-averaged-model 0"
            )
        if epoch - avg < 1:
            raise UserError(
                f"--use-averaged-model needs {prefix}epoch-{epoch - avg}.pt, which cannot exist: "
                f"with --epoch {epoch} use --avg <= {epoch - 1}"
            )
        start = _existing_epoch_file(
            exp_dir, prefix, epoch - avg, purpose="--use-averaged-model (the start point)"
        )
        end = _existing_epoch_file(exp_dir, prefix, epoch)
        state = average_checkpoints_with_averaged_model(start, end, device)
        return _selected(state, f"averaged model from {start.name} (excluded) to {end.name}", end)
    if epoch - avg + 1 < 1:
        raise UserError(
            f"--avg {avg} needs epochs {epoch - avg + 1}..{epoch}, but epochs start at 1: "
            f"use --avg <= {epoch}"
        )
    chosen = [
        _existing_epoch_file(exp_dir, prefix, e, purpose=f"--avg {avg}")
        for e in range(epoch - avg + 1, epoch + 1)
    ]
    if avg == 1:
        state = _model_state(read_checkpoint_file(chosen[0], device), chosen[0])
        return _selected(state, f"model of {chosen[0].name}", chosen[0])
    state = average_checkpoints(chosen, device)
    return _selected(state, f"mean of {len(chosen)} checkpoints: {chosen[0].name} .. {chosen[-1].name}", chosen[-1])


def _selected(state_dict: StateDict, description: str, newest: PathLike) -> LoadedWeights:
    metadata = read_checkpoint_metadata(newest)
    return LoadedWeights(
        state_dict, description, str(newest), metadata.get("model_config"), metadata.get("vocabulary")
    )


def _existing_epoch_file(exp_dir: Path, prefix: str, epoch: int, purpose: str = "--epoch") -> Path:
    path = exp_dir / f"{prefix}epoch-{epoch}.pt"
    if not path.is_file():
        found = epoch_numbers(exp_dir, prefix)
        have = f"no {prefix}epoch-*.pt in {exp_dir}"
        if found:
            have = f"available epochs: {', '.join(map(str, found))}"
        raise UserError(
            f"{purpose} needs {path}, which does not exist ({have}): "
            "check --exp-dir, --epoch and --avg"
        )
    return path


def add_checkpoint_arguments(
    group: argparse._ArgumentGroup, default_exp_dir: str, verb: str, exp_dir_help: str
) -> None:
    """--epoch/--iter/--avg/--use-averaged-model/--exp-dir: which weights a script uses."""
    group.add_argument("--epoch", type=int_at_least(1), default=30, help=f"{verb} epoch-{{epoch}}.pt (and earlier ones for --avg).")
    group.add_argument("--iter", type=int_at_least(0), default=0, help=f"If > 0, {verb.lower()} checkpoint-{{iter}}.pt instead of --epoch.")
    group.add_argument("--avg", type=int_at_least(1), default=15, help="Number of checkpoints to average.")
    group.add_argument(
        "--use-averaged-model",
        type=str2bool,
        default=True,
        help="Average with the running model_avg of the checkpoints (see README) rather than a plain mean.",
    )
    group.add_argument("--exp-dir", type=Path, default=Path(default_exp_dir), help=exp_dir_help)


def checkpoint_suffix(params: Mapping[str, Any]) -> str:
    """epoch-{e}-avg-{a} or iter-{i}-avg-{a}, as icefall names result and exported files."""
    which = f"iter-{params['iter']}" if params["iter"] > 0 else f"epoch-{params['epoch']}"
    return f"{which}-avg-{params['avg']}"
