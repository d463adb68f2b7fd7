"""Loss bookkeeping for training logs: per-frame values, decayed running totals, DDP reduction."""
from collections import defaultdict
from typing import Optional

import torch
import torch.distributed as dist


class MetricsTracker(defaultdict):
    """Sums of losses and the number of frames they cover.

    Printed as icefall does: `loss=0.1234, simple_loss=..., over 1234.00 frames. `, each value
    divided by the frame count.
    """

    def __init__(self) -> None:
        super().__init__(float)

    def __add__(self, other: "MetricsTracker") -> "MetricsTracker":
        out = MetricsTracker()
        for key in list(self) + [k for k in other if k not in self]:
            out[key] = self[key] + other[key]
        return out

    def __mul__(self, alpha: float) -> "MetricsTracker":
        out = MetricsTracker()
        for key, value in self.items():
            out[key] = value * alpha
        return out

    def per_frame(self) -> dict:
        frames = self["frames"]
        return {k: (v / frames if frames > 0 else float("nan")) for k, v in self.items() if k != "frames"}

    def __str__(self) -> str:
        values = ", ".join(f"{k}={v:.4g}" for k, v in self.per_frame().items())
        return f"{values}, over {self['frames']:.2f} frames. "

    def reduce(self, device: torch.device) -> None:
        """Sum over all DDP ranks, in place (validation totals are global)."""
        if not (dist.is_available() and dist.is_initialized()):
            return
        keys = sorted(self.keys())
        values = torch.tensor([self[k] for k in keys], dtype=torch.float64, device=device)
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
        for key, value in zip(keys, values.tolist()):
            self[key] = value

    def write_summary(self, tb_writer: Optional[object], prefix: str, batch_idx: int) -> None:
        if tb_writer is None:
            return
        for key, value in self.per_frame().items():
            tb_writer.add_scalar(prefix + key, value, batch_idx)
