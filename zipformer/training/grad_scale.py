"""fp16 GradScaler policy: start at scale 1.0 and regrow the scale faster than torch's default.

torch's GradScaler only grows the scale after `growth_interval` (2000) overflow-free steps; the
recipe additionally doubles a small scale every 100 batches, and treats a scale that keeps
collapsing as a sign of divergence: below 0.01 it saves `bad-model-first-warning-{rank}.pt` and
warns, below 1e-5 it saves `bad-model-{rank}.pt` and stops training.
"""
import enum
import logging
from pathlib import Path
from typing import Optional

import torch
from torch import nn

from zipformer.checkpoints.checkpoint import save_checkpoint


class GradScaleStatus(enum.Enum):
    OK = "ok"
    SMALL = "small"  # below warn_below: a warning was logged (and the first-warning model saved)


class GradScaleTooSmallError(RuntimeError):
    """The fp16 loss scale collapsed: gradients keep overflowing, training has diverged."""


def create_grad_scaler(
    enabled: bool, device_type: str, init_scale: float = 1.0
) -> torch.amp.GradScaler:
    """A GradScaler for fp16 training on CUDA; a disabled (pass-through) one anywhere else."""
    use = enabled and device_type == "cuda"
    if enabled and not use:
        logging.warning(f"fp16 loss scaling is only used on CUDA; disabled on {device_type}")
    return torch.amp.GradScaler(device_type, init_scale=init_scale, enabled=use)


def adjust_grad_scale(
    scaler: torch.amp.GradScaler,
    batch_idx: int,
    exp_dir: Optional[Path] = None,
    rank: int = 0,
    model: Optional[nn.Module] = None,
    *,
    check_interval: int = 100,
    slow_growth_interval: int = 400,
    fast_growth_below: float = 8.0,
    slow_growth_below: float = 32.0,
    warn_below: float = 0.01,
    fail_below: float = 1.0e-5,
) -> GradScaleStatus:
    """Apply the recipe's scale policy; call once per batch, after `scaler.update()`.

    Every `check_interval` batches, with s the current scale: double it if s < fast_growth_below,
    or if s < slow_growth_below and batch_idx % slow_growth_interval == 0. Then, judged on s:
      s < fail_below: save `{exp_dir}/bad-model-{rank}.pt` and raise GradScaleTooSmallError;
      s < warn_below: save `{exp_dir}/bad-model-first-warning-{rank}.pt` unless it exists,
        log a warning and return SMALL.
    Models are saved only when exp_dir and model are given. A disabled scaler is left alone.
    """
    if not scaler.is_enabled() or batch_idx % check_interval != 0:
        return GradScaleStatus.OK
    scale = scaler.get_scale()
    slow_growth_due = batch_idx % slow_growth_interval == 0
    if scale < fast_growth_below or (scale < slow_growth_below and slow_growth_due):
        scaler.update(scale * 2.0)

    can_save = exp_dir is not None and model is not None
    if scale < fail_below:
        saved = ""
        if can_save:
            path = Path(exp_dir) / f"bad-model-{rank}.pt"
            save_checkpoint(path, model)
            saved = f"; saved the model to {path}"
        raise GradScaleTooSmallError(
            f"grad scale is {scale:.3e} (< {fail_below}) at batch {batch_idx}: fp16 gradients keep "
            f"overflowing, training has diverged{saved}. Try a lower --base-lr or --use-fp16 0"
        )
    if scale < warn_below:
        if can_save:
            path = Path(exp_dir) / f"bad-model-first-warning-{rank}.pt"
            if not path.exists():
                save_checkpoint(path, model)
        logging.warning(f"Grad scale is small: {scale:.3e}")
        return GradScaleStatus.SMALL
    return GradScaleStatus.OK
