"""Argument checks shared by the lattice recursion and the RNN-T losses: each raises ValueError
with the expected shape or range and how to fix the input, as k2's checks do."""
from typing import Optional, Tuple

import torch
from torch import Tensor

RNNT_TYPES = ("regular", "modified", "constrained")
REDUCTIONS = ("none", "mean", "sum")


def check_float(name: str, x: Tensor) -> None:
    if x.dtype not in (torch.float32, torch.float64):
        raise ValueError(f"{name} has dtype {x.dtype}; cast it to float32 (e.g. `{name}.float()`)")


def check_ndim(name: str, x: Tensor, ndim: int, shape_doc: str) -> None:
    if x.ndim != ndim:
        raise ValueError(f"{name} must have shape {shape_doc}, got {tuple(x.shape)}")


def check_rnnt_type(rnnt_type: str) -> None:
    if rnnt_type not in RNNT_TYPES:
        raise ValueError(f"rnnt_type must be one of {RNNT_TYPES}, got '{rnnt_type}'")


def check_symbols(symbols: Tensor, B: int, S: int, C: int, termination_symbol: int) -> None:
    if symbols.shape != (B, S):
        raise ValueError(
            f"symbols must have shape (B, S) = ({B}, {S}) to match lm (B, S+1, C), "
            f"got {tuple(symbols.shape)}"
        )
    if symbols.dtype != torch.int64:
        raise ValueError(f"symbols must be int64 (a LongTensor), got {symbols.dtype}")
    if symbols.numel() > 0 and (int(symbols.min()) < 0 or int(symbols.max()) >= C):
        raise ValueError(
            f"symbols must lie in [0, {C}) (vocabulary size {C}); pad with the blank id, not -1"
        )
    if not 0 <= termination_symbol < C:
        raise ValueError(f"termination_symbol {termination_symbol} is outside [0, {C})")


def split_boundary(
    boundary: Optional[Tensor], B: int, S: int, T: int, device: torch.device
) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    """Returns (s_begin, t_begin, s_end, t_end), each int64 of shape (B,); None means [0,0,S,T]."""
    if boundary is None:
        zeros = torch.zeros(B, dtype=torch.int64, device=device)
        return zeros, zeros, torch.full_like(zeros, S), torch.full_like(zeros, T)
    if boundary.shape != (B, 4) or boundary.dtype != torch.int64:
        raise ValueError(
            f"boundary must be an int64 tensor of shape (B, 4) = ({B}, 4) holding "
            f"[s_begin, t_begin, s_end, t_end] per row, got {boundary.dtype} "
            f"{tuple(boundary.shape)}"
        )
    s_begin, t_begin, s_end, t_end = boundary.to(device).unbind(1)
    if B > 0:
        bad_s = bool(((s_begin < 0) | (s_begin > s_end) | (s_end > S)).any())
        bad_t = bool(((t_begin < 0) | (t_begin > t_end) | (t_end > T)).any())
        if bad_s or bad_t:
            raise ValueError(
                f"boundary rows need 0 <= s_begin <= s_end <= S={S} and "
                f"0 <= t_begin <= t_end <= T={T}; check the symbol and frame lengths"
            )
    return s_begin, t_begin, s_end, t_end


def check_boundary(boundary: Optional[Tensor], B: int, S: int, T: int) -> None:
    if boundary is not None:
        split_boundary(boundary, B, S, T, boundary.device)


def check_reduction(reduction: str) -> None:
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got '{reduction}'")
