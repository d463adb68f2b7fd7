"""Training checkpoint files: atomic save, strict load without pickle, resume, find and prune.

File layout (icefall's names): `epoch-{N}.pt`, `checkpoint-{batch_idx_train}.pt`; each holds
"model", "optimizer", "scheduler", "grad_scaler", "sampler", "model_avg" (float32), the training
loop's state flattened in at top level as icefall does (batch_idx_train, average_period,
best_valid_loss, ...), and what the file is:
  "model_config": the flags that build the model (shape, causal settings, tuner settings), so that
                  decoding and export need no shape flags;
  "vocabulary":   {"size", "fingerprint"} of the BPE model it was trained with (zipformer.checkpoints.vocabulary);
  "train_config": every training flag, for the record.
Everything is plain data (tensors, numbers, strings, lists, dicts), so every file loads with
`torch.load(weights_only=True)`: opening a checkpoint someone sent you runs no code. icefall's
`pretrained.pt` ({"model": state_dict}) loads the same way, without configuration.
Averaging them for decoding is zipformer.checkpoints.averaging.
"""
import hashlib
import logging
import os
import pickle
import re
import shutil
import zipfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Union

import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from zipformer.core.atomic import write_atomically
from zipformer.core.errors import UserError

PathLike = Union[str, Path]
StateDict = dict[str, Tensor]

# Keys holding component states; everything else in a checkpoint is loop state or metadata.
_STATE_KEYS = ("model", "optimizer", "scheduler", "grad_scaler", "sampler", "model_avg")
METADATA_KEYS = ("model_config", "vocabulary", "train_config")
# How many key names an error message lists before summarising with a count.
_KEYS_SHOWN = 5


def unwrap_ddp(model: nn.Module) -> nn.Module:
    """The model inside a DistributedDataParallel wrapper (the model itself when not wrapped)."""
    return model.module if isinstance(model, DistributedDataParallel) else model


@dataclass
class LoadedWeights:
    """Model weights read from checkpoint files, and what the newest of them says about itself.

    model_config and vocabulary are None for a file that records none (icefall's pretrained.pt).
    """

    state_dict: StateDict
    description: str
    source: str
    model_config: Optional[dict[str, Any]] = None
    vocabulary: Optional[dict[str, Any]] = None


def to_plain(value: Any) -> Any:
    """`value` as plain data that torch.load(weights_only=True) reads: Path -> str, tuple -> list."""
    if isinstance(value, Mapping):
        return {str(k): to_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_plain(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str, Tensor)):
        return value
    return str(value)


def save_checkpoint(
    filename: PathLike,
    model: nn.Module,
    model_avg: Optional[nn.Module] = None,
    state: Optional[Mapping[str, Any]] = None,
    metadata: Optional[Mapping[str, Any]] = None,
    optimizer: Optional[torch.optim.Optimizer] = None,
    scheduler: Optional[Any] = None,
    scaler: Optional[torch.amp.GradScaler] = None,
    sampler: Optional[Any] = None,
    rank: int = 0,
) -> None:
    """Write a training checkpoint to `filename` atomically. Ranks other than 0 write nothing.

    `state`: the loop state (batch_idx_train, average_period, best losses, ...), flattened in at
    top level; `metadata`: model_config, vocabulary, train_config. Both are stored as plain data.
    model_avg is stored as float32; the live (float64) model_avg is not modified.
    """
    if rank != 0:
        return
    checkpoint: dict[str, Any] = {
        "model": unwrap_ddp(model).state_dict(),
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "grad_scaler": scaler.state_dict() if scaler is not None else None,
        "sampler": sampler.state_dict() if sampler is not None else None,
    }
    if model_avg is not None:
        # .float() copies a float64 tensor, so the running average keeps its precision.
        checkpoint["model_avg"] = {
            k: v.float() if v.is_floating_point() else v for k, v in model_avg.state_dict().items()
        }
    for key, value in {**(state or {}), **(metadata or {})}.items():
        if key in _STATE_KEYS:
            raise ValueError(f"checkpoint entry '{key}' clashes with a component state key; rename it")
        checkpoint[key] = to_plain(value)
    write_checkpoint_file(Path(filename), checkpoint)


def _tensor_bytes(obj: Any) -> int:
    """Bytes of the tensors in a nested checkpoint: about the size of its file."""
    if torch.is_tensor(obj):
        return obj.numel() * obj.element_size()
    if isinstance(obj, Mapping):
        return sum(_tensor_bytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(_tensor_bytes(v) for v in obj)
    return 0


def write_checkpoint_file(path: Path, checkpoint: Mapping[str, Any]) -> None:
    """torch.save through the atomic writer; a failed write is a UserError that says how much was needed.

    The file at `path`, if any, stays as it was when the write fails.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    needed = _tensor_bytes(checkpoint)

    def no_space(reason: str) -> UserError:
        free = shutil.disk_usage(path.parent).free
        return UserError(
            f"could not save {path} ({reason}): it needs about {needed / 2**20:.1f} MB and {free / 2**20:.1f} MB "
            "are free there; free some space and resume from the last checkpoint, which is kept"
        )

    if needed > shutil.disk_usage(path.parent).free:
        raise no_space("not enough free space")

    def write(tmp: Path) -> None:
        # Through a Python file, a full disk is OSError(ENOSPC); torch.save(path) says "unexpected pos".
        with open(tmp, "wb") as f:
            torch.save(checkpoint, f)

    try:
        write_atomically(path, write)
    except OSError as e:
        raise no_space(e.strerror or str(e)) from None


def read_model_file(filename: PathLike, flag: str = "checkpoint") -> LoadedWeights:
    """The weights and metadata of one model file (e.g. icefall's pretrained.pt), without a DDP prefix.

    `flag` names where the path came from (e.g. "--finetune-ckpt") in the error messages.
    """
    path = Path(filename)
    checkpoint = read_checkpoint_file(
        path, missing=f"{flag} {path} not found: pass the path of a checkpoint such as pretrained.pt or epoch-N.pt"
    )
    if not isinstance(checkpoint, dict) or "model" not in checkpoint:
        raise UserError(f"{flag} {path} has no 'model' entry: expected a checkpoint saved as {{'model': state_dict}}")
    return LoadedWeights(
        strip_ddp_prefix(checkpoint["model"]),
        f"model of {path}",
        str(path),
        checkpoint.get("model_config"),
        checkpoint.get("vocabulary"),
    )


def read_checkpoint_metadata(filename: PathLike, missing: Optional[str] = None) -> dict[str, Any]:
    """The plain-data entries of a checkpoint (loop state and metadata), without reading its tensors.

    `missing`: the error when the file does not exist, as for read_checkpoint_file.
    """
    checkpoint = read_checkpoint_file(filename, mmap=True, missing=missing)
    if not isinstance(checkpoint, dict):
        raise UserError(f"{filename} is not a checkpoint of this project or icefall's (not a dict)")
    return {k: v for k, v in checkpoint.items() if k not in _STATE_KEYS}


def tensors_fingerprint(tensors: Mapping[str, torch.Tensor]) -> str:
    """A short hash of named tensors (values as float32): tells which weights a file belongs to."""
    digest = hashlib.sha256()
    for key in sorted(tensors):
        digest.update(key.encode())
        digest.update(tensors[key].detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def copy_checkpoint(src: PathLike, dst: PathLike) -> None:
    """Copy a checkpoint (e.g. epoch-N.pt -> best-valid-loss.pt), never leaving a partial dst."""
    write_atomically(Path(dst), lambda tmp: shutil.copyfile(src, tmp))


def _numbered_files(directory: Path, stem: str) -> list[tuple[int, Path]]:
    """The files `{stem}-{n}.pt` in directory, as (n, path), largest n first."""
    pattern = re.compile(rf"^{re.escape(stem)}-(\d+)\.pt$")
    numbered = [
        (int(match.group(1)), path)
        for path in directory.glob(f"{stem}-*.pt")
        if (match := pattern.match(path.name))
    ]
    return sorted(numbered, reverse=True)


def epoch_numbers(exp_dir: PathLike, prefix: str = "") -> list[int]:
    """The N of every {prefix}epoch-N.pt in exp_dir, ascending."""
    return sorted(n for n, _ in _numbered_files(Path(exp_dir), f"{prefix}epoch"))


def find_checkpoints(out_dir: PathLike, iteration: int = 0, prefix: str = "") -> list[str]:
    """The `{prefix}checkpoint-{n}.pt` files in out_dir, newest (largest n) first.

    With iteration > 0, only those with n <= iteration.
    """
    if iteration < 0:
        raise ValueError(f"iteration must be >= 0, got {iteration}")
    numbered = _numbered_files(Path(out_dir), f"{prefix}checkpoint")
    return [str(path) for n, path in numbered if iteration == 0 or n <= iteration]


def remove_checkpoints(out_dir: PathLike, topk: int, rank: int = 0, prefix: str = "") -> None:
    """Delete all but the newest `topk` {prefix}checkpoint-*.pt files (epoch files are kept)."""
    if topk < 1:
        raise ValueError(f"topk must be >= 1, got {topk}")
    if rank != 0:
        return
    for name in find_checkpoints(out_dir, prefix=prefix)[topk:]:
        os.remove(name)


def strip_ddp_prefix(state_dict: Mapping[str, Any]) -> dict[str, Any]:
    """Remove the leading `module.` that DistributedDataParallel adds to every key."""
    return {k.removeprefix("module."): v for k, v in state_dict.items()}


def describe_keys(keys: list[str]) -> str:
    """The first few keys and how many there are, for an error message."""
    shown = ", ".join(keys[:_KEYS_SHOWN])
    more = f", ... ({len(keys)} in total)" if len(keys) > _KEYS_SHOWN else f" ({len(keys)})"
    return shown + more


def load_model_state_dict(
    model: nn.Module, state_dict: Mapping[str, Tensor], source: str, strict: bool = True
) -> None:
    """Load `state_dict` into `model`, explaining any key or shape mismatch.

    strict=True raises UserError on missing or unexpected keys; strict=False loads the matching
    keys and logs a warning listing the others. Shape mismatches always raise.
    `source` names where the weights come from (a file), for the messages.
    """
    model = unwrap_ddp(model)
    state_dict = strip_ddp_prefix(state_dict)
    expected = model.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    wrong_shape = [
        f"{k} {tuple(state_dict[k].shape)} vs model {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state_dict and state_dict[k].shape != v.shape
    ]
    if wrong_shape:
        raise UserError(
            f"{source} does not fit the model: shape mismatch for {describe_keys(wrong_shape)}; "
            "the checkpoint records no configuration that fits: pass the model flags it was trained with"
        )
    if missing or unexpected:
        problems = _key_problems(missing, unexpected)
        if strict:
            raise UserError(
                f"{source} does not match the model: {problems}. Decode it with the recipe "
                "that trained it and the flags it was trained with, or load it non-strictly on purpose"
            )
        logging.warning(f"Loading {source} non-strictly: {problems}")
    model.load_state_dict(state_dict, strict=False)


def check_same_keys(have: Iterable[str], want: Iterable[str], mismatch: str, fix: str) -> None:
    """UserError "{mismatch}: keys differ (missing keys: ...; unexpected keys: ...); {fix}" unless the
    keys `have` (of the weights read) are exactly the keys `want` (of what they must fill)."""
    missing = sorted(set(want) - set(have))
    unexpected = sorted(set(have) - set(want))
    if missing or unexpected:
        raise UserError(f"{mismatch}: keys differ ({_key_problems(missing, unexpected)}); {fix}")


def _key_problems(missing: list[str], unexpected: list[str]) -> str:
    problems = []
    if missing:
        problems.append(f"missing keys: {describe_keys(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {describe_keys(unexpected)}")
    return "; ".join(problems)


def read_checkpoint_file(
    filename: PathLike,
    device: Union[str, torch.device] = "cpu",
    missing: Optional[str] = None,
    mmap: bool = False,
) -> Any:
    """torch.load a checkpoint file as plain data (weights_only=True: no code in the file runs).

    `missing` is the error when it does not exist (it names the fix). An empty, truncated or
    foreign file, or one that needs pickle, is a UserError naming the file.
    """
    path = Path(filename)
    if not path.is_file():
        raise UserError(
            missing
            or f"checkpoint {path} does not exist: check --exp-dir and --epoch/--iter "
            "(or --start-epoch/--start-batch when resuming)"
        )
    if path.stat().st_size == 0:
        raise UserError(f"{path} is empty (0 bytes): a save was interrupted? pass another checkpoint")
    try:
        return torch.load(path, map_location=device, weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as e:
        if "Unsupported global" not in str(e):
            raise UserError(
                f"{path} is not a readable checkpoint (not a PyTorch file, or corrupt): pass another file"
            ) from None
        raise UserError(
            f"{path} holds Python objects that only pickle can load (e.g. a checkpoint of an older version "
            "of this project, or of another tool): refusing to run code from a file; re-save its 'model' "
            "entry as plain tensors in a trusted environment"
        ) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError) as e:
        raise UserError(
            f"{path} is not a readable checkpoint ({_first_line(e)}): it is truncated, corrupt or not a "
            "PyTorch file; pass another checkpoint"
        ) from None


def _first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0][:200]


def load_checkpoint(
    filename: PathLike,
    model: nn.Module,
    model_avg: Optional[nn.Module] = None,
    optimizer: Optional[torch.optim.Optimizer] = None,
    scheduler: Optional[Any] = None,
    scaler: Optional[torch.amp.GradScaler] = None,
    sampler: Optional[Any] = None,
    strict: bool = True,
) -> dict[str, Any]:
    """Restore the given components from a checkpoint written by save_checkpoint.

    Returns the remaining entries (batch_idx_train, best_valid_loss, ..., and the state of any
    component that was not given, e.g. "sampler" for a dataloader built later).
    """
    checkpoint = read_checkpoint_file(filename)
    if "model" not in checkpoint:
        raise UserError(f"{filename} has no 'model' entry: it is not a model checkpoint")
    load_model_state_dict(model, checkpoint.pop("model"), str(filename), strict=strict)

    if model_avg is not None:
        avg_state = checkpoint.pop("model_avg", None)
        if avg_state is None:
            logging.warning(f"{filename} has no model_avg: model_avg is left as it is")
        else:
            load_model_state_dict(model_avg, avg_state, f"{filename} (model_avg)", strict=strict)

    components = {
        "optimizer": optimizer,
        "scheduler": scheduler,
        "grad_scaler": scaler,
        "sampler": sampler,
    }
    for key, component in components.items():
        if component is None:
            continue
        state = checkpoint.pop(key, None)
        if state:
            component.load_state_dict(state)
        elif not (isinstance(component, torch.amp.GradScaler) and not component.is_enabled()):
            # (A disabled GradScaler has no state to restore, and saves {}.)
            logging.warning(f"{filename} has no {key} state: {key} starts afresh")
    return checkpoint
