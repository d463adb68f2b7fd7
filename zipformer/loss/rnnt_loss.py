"""Pruned RNN-T loss in pure PyTorch, with k2's names, signatures and numerics (k2 master).

Pipeline used in training (the pruned RNN-T of Kuang et al., "Pruned RNN-T for fast, memory-efficient
ASR training", Interspeech 2022):
  1. `rnnt_loss_smoothed(..., return_grad=True)`: a cheap loss whose joiner is plain addition; its
     arc occupation probabilities (px_grad, py_grad) say where the alignment mass lies;
  2. `get_rnnt_prune_ranges`: for every frame, a window of `s_range` consecutive symbol positions;
  3. `do_rnnt_pruning`: the encoder/decoder features for those windows only;
  4. `rnnt_loss_pruned`: the exact RNN-T loss restricted to the windows.

Everything reduces to the log-semiring recursion over an (s, t) lattice,
`zipformer.loss.mutual_information.mutual_information_recursion`; this module builds its px/py
arcs from the encoder and decoder outputs (or the joiner's logits) and reduces its scores.

Optional backend: every loss takes `backend="k2"` or `"fast_rnnt"` to run the recursion with that
package (it must be importable); the default "torch" needs nothing extra. Training chooses it with
--rnnt-backend. fast_rnnt asserts S_b >= 1 and scales its saved occupations in place during backward.
"""
import logging
from typing import List, Optional, Tuple, Union

import torch
from torch import Tensor

from zipformer.loss.checks import (
    check_boundary,
    check_float,
    check_ndim,
    check_reduction,
    check_rnnt_type,
    check_symbols,
    split_boundary,
)
from zipformer.loss.mutual_information import BACKENDS, mutual_information_recursion

LossWithGrads = Union[Tensor, Tuple[Tensor, Tuple[Tensor, Tensor]]]

__all__: List[str] = [
    "BACKENDS",
    "get_rnnt_logprobs",
    "rnnt_loss_simple",
    "get_rnnt_logprobs_smoothed",
    "rnnt_loss_smoothed",
    "get_rnnt_prune_ranges",
    "do_rnnt_pruning",
    "get_rnnt_logprobs_pruned",
    "rnnt_loss_pruned",
    "get_rnnt_logprobs_joint",
    "rnnt_loss",
]


# --------------------------------------------------------------------------------------------
# Shared pieces of the log-prob builders
# --------------------------------------------------------------------------------------------


def _check_lm_am(lm: Tensor, am: Tensor) -> Tuple[int, int, int, int]:
    """Checks lm (B,S+1,C) and am (B,T,C); returns (B, S, T, C)."""
    check_ndim("lm", lm, 3, "(B, S+1, C)")
    check_ndim("am", am, 3, "(B, T, C)")
    check_float("lm", lm)
    check_float("am", am)
    if lm.shape[0] != am.shape[0] or lm.shape[2] != am.shape[2]:
        raise ValueError(
            f"lm (B, S+1, C) and am (B, T, C) must agree on B and C, got lm {tuple(lm.shape)} "
            f"and am {tuple(am.shape)}"
        )
    if lm.shape[1] < 1:
        raise ValueError("lm needs S+1 >= 1 rows (row S is the context after the last symbol)")
    B, T, C = am.shape
    return B, lm.shape[1] - 1, T, C


def _fix_for_boundary(px: Tensor, boundary: Optional[Tensor]) -> Tensor:
    """Regular topology: px[b, :, T_b] = -inf, so no symbol is emitted after the last frame."""
    if boundary is None:
        return px
    T1 = px.shape[2]
    t_end = boundary[:, 3].to(px.device).view(-1, 1, 1)
    last = torch.arange(T1, device=px.device).view(1, 1, -1) == t_end
    return torch.where(last, float("-inf"), px)


def _finish_logprobs(
    px: Tensor, py: Tensor, boundary: Optional[Tensor], rnnt_type: str
) -> Tuple[Tensor, Tensor]:
    """px (B,S,T) -> the topology's layout: regular gets a -inf column T and the boundary fix;
    constrained adds the blank log-prob of the next context on the same frame."""
    if rnnt_type == "regular":
        B, S, _ = px.shape
        neg_inf = torch.full((B, S, 1), float("-inf"), dtype=px.dtype, device=px.device)
        px = _fix_for_boundary(torch.cat((px, neg_inf), dim=2), boundary)
    elif rnnt_type == "constrained":
        px = px + py[:, 1:, :]
    return px, py


def _normalized_probs(
    lm: Tensor, am: Tensor
) -> Tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Returns (am_max (B,T,1), lm_max (B,S+1,1), A = exp(am-am_max), L = exp(lm-lm_max),
    N (B,S+1,T) = logsumexp_v(lm[b,s,v] + am[b,t,v]) computed as log(L @ A^T + tiny) + maxes)."""
    am_max = am.max(dim=2, keepdim=True).values
    lm_max = lm.max(dim=2, keepdim=True).values
    am_probs = (am - am_max).exp()
    lm_probs = (lm - lm_max).exp()
    tiny = torch.finfo(lm.dtype).tiny
    normalizers = (torch.matmul(lm_probs, am_probs.transpose(1, 2)) + tiny).log()
    normalizers = normalizers + lm_max + am_max.transpose(1, 2)
    return am_max, lm_max, am_probs, lm_probs, normalizers


def _symbol_arcs(lm: Tensor, am: Tensor, symbols: Tensor) -> Tuple[Tensor, Tensor]:
    """x_am[b,s,t] = am[b,t,y_s] (B,S,T) and x_lm[b,s] = lm[b,s,y_s] (B,S,1)."""
    B, T, _ = am.shape
    S = symbols.shape[1]
    x_am = am.gather(2, symbols.unsqueeze(1).expand(B, T, S)).transpose(1, 2)
    x_lm = lm[:, :S].gather(2, symbols.unsqueeze(-1))
    return x_am, x_lm


def _apply_delay_penalty(
    px: Tensor, boundary: Optional[Tensor], rnnt_type: str, delay_penalty: float
) -> Tensor:
    """px[b,s,t] += delay_penalty * ((T_b - 1)/2 - t): early symbols are rewarded."""
    B, _, T0 = px.shape
    T = T0 - 1 if rnnt_type == "regular" else T0
    if boundary is None:
        offset = torch.tensor((T - 1) / 2, dtype=px.dtype, device=px.device).expand(B)
    else:
        offset = (boundary[:, 3].to(px.device) - 1) / 2
    penalty = offset.reshape(B, 1, 1) - torch.arange(T0, device=px.device).reshape(1, 1, T0)
    return px + (penalty * delay_penalty).to(px.dtype)


def _loss_from_logprobs(
    px: Tensor,
    py: Tensor,
    boundary: Optional[Tensor],
    rnnt_type: str,
    delay_penalty: float,
    reduction: str,
    return_grad: bool,
    backend: str,
) -> LossWithGrads:
    """Delay penalty, recursion and reduction of -scores (common tail of every loss)."""
    check_reduction(reduction)
    if delay_penalty > 0.0:
        px = _apply_delay_penalty(px, boundary, rnnt_type, delay_penalty)
    result = mutual_information_recursion(px, py, boundary, return_grad, backend)
    scores, grads = result if return_grad else (result, None)
    if reduction == "none":
        loss = -scores
    elif reduction == "mean":
        loss = -torch.mean(scores)
    else:
        loss = -torch.sum(scores)
    return (loss, grads) if return_grad else loss


# --------------------------------------------------------------------------------------------
# Simple (joiner = addition) and smoothed losses
# --------------------------------------------------------------------------------------------


def get_rnnt_logprobs(
    lm: Tensor,
    am: Tensor,
    symbols: Tensor,
    termination_symbol: int,
    boundary: Optional[Tensor] = None,
    rnnt_type: str = "regular",
) -> Tuple[Tensor, Tensor]:
    """Lattice log-probs for a joiner that is plain addition, normalised over the vocabulary.

    Args:
      lm: (B, S+1, C) decoder part of the logits; row s is the context after s symbols.
      am: (B, T, C) encoder part of the logits.
      symbols: (B, S) int64 labels y, padded with any valid id (e.g. the blank).
      termination_symbol: the blank id.
      boundary: optional int64 (B, 4) rows [0, 0, S_b, T_b].
      rnnt_type: "regular", "modified" or "constrained".

    With N[b,s,t] = logsumexp_v(lm[b,s,v] + am[b,t,v]):
      px[b,s,t] = am[b,t,y_s] + lm[b,s,y_s] - N[b,s,t]    (B,S,T+1) regular / (B,S,T) otherwise
      py[b,s,t] = am[b,t,blank] + lm[b,s,blank] - N[b,s,t]  (B,S+1,T)
    Regular: px[:,:,T] = -inf and px[b,:,T_b] = -inf. Constrained: px[b,s,t] += py[b,s+1,t].
    """
    check_rnnt_type(rnnt_type)
    B, S, T, C = _check_lm_am(lm, am)
    check_symbols(symbols, B, S, C, termination_symbol)
    check_boundary(boundary, B, S, T)
    *_, normalizers = _normalized_probs(lm, am)
    x_am, x_lm = _symbol_arcs(lm, am, symbols)
    px = (x_am + x_lm) - normalizers[:, :S, :]
    py_am = am[:, :, termination_symbol].unsqueeze(1)
    py_lm = lm[:, :, termination_symbol].unsqueeze(2)
    py = (py_am + py_lm) - normalizers
    return _finish_logprobs(px, py, boundary, rnnt_type)


def rnnt_loss_simple(
    lm: Tensor,
    am: Tensor,
    symbols: Tensor,
    termination_symbol: int,
    boundary: Optional[Tensor] = None,
    rnnt_type: str = "regular",
    delay_penalty: float = 0.0,
    reduction: str = "mean",
    return_grad: bool = False,
    backend: str = "torch",
) -> LossWithGrads:
    """RNN-T loss -log P(y | x) with the additive joiner of `get_rnnt_logprobs`.

    Args as `get_rnnt_logprobs`, plus:
      delay_penalty: if > 0, each symbol emitted on frame t adds delay_penalty * ((T_b-1)/2 - t)
        to the path score, favouring early emission.
      reduction: "none" gives (B,) per-sequence losses; "mean" / "sum" reduce over the batch.
      return_grad: also return (px_grad, py_grad), the arc occupations of
        `mutual_information_recursion` (not negated, independent of `reduction`).
      backend: the recursion's implementation, as in `mutual_information_recursion`.
    Returns loss, or (loss, (px_grad, py_grad)).
    """
    px, py = get_rnnt_logprobs(lm, am, symbols, termination_symbol, boundary, rnnt_type)
    return _loss_from_logprobs(px, py, boundary, rnnt_type, delay_penalty, reduction, return_grad, backend)


def get_rnnt_logprobs_smoothed(
    lm: Tensor,
    am: Tensor,
    symbols: Tensor,
    termination_symbol: int,
    lm_only_scale: float = 0.1,
    am_only_scale: float = 0.1,
    boundary: Optional[Tensor] = None,
    rnnt_type: str = "regular",
) -> Tuple[Tensor, Tensor]:
    """`get_rnnt_logprobs` interpolated in log space with an LM-only and an AM-only model.

    Args as `get_rnnt_logprobs`, plus lm_only_scale and am_only_scale (weights of the two extra
    models; the additive joiner gets c = 1 - lm_only_scale - am_only_scale).

    With Lp = softmax_v(lm) per row and the unigram U[v] = mean over all b and all S+1 rows of
    Lp[b,s,v] (so it couples the batch, padding rows included):
      lm-only:  px_lm[b,s] = log Lp[b,s,y_s],  py_lm[b,s] = log Lp[b,s,blank]   (no t dependence)
      am-only:  px_am[b,s,t] = am[b,t,y_s] + log U[y_s] - log sum_v exp(am[b,t,v]) U[v],
                py_am[b,t] likewise with blank                                   (no s dependence)
      px_i = (px * c + px_lm * lm_only_scale) + px_am * am_only_scale, py_i likewise,
    where a scale of exactly 0 is replaced by 1e-20 so that 0 * -inf never yields NaN. Returns
    (px_i, py_i) with the shapes of `get_rnnt_logprobs` and the same topology fix-ups.
    """
    check_rnnt_type(rnnt_type)
    B, S, T, C = _check_lm_am(lm, am)
    check_symbols(symbols, B, S, C, termination_symbol)
    check_boundary(boundary, B, S, T)
    am_max, lm_max, am_probs, lm_probs, normalizers = _normalized_probs(lm, am)

    lm_sums = lm_probs.sum(dim=2, keepdim=True)
    tiny = torch.finfo(lm.dtype).tiny
    unigram = torch.mean(lm_probs / lm_sums, dim=(0, 1), keepdim=True) + tiny
    am_only_norm = torch.mv(am_probs.reshape(-1, C), unigram.reshape(C)).reshape(B, T, 1)
    am_only_norm = (am_only_norm.log() + am_max).transpose(1, 2)
    log_unigram = unigram.log()
    lm_only_norm = lm_sums.log() + lm_max

    x_am, x_lm = _symbol_arcs(lm, am, symbols)
    px = (x_am + x_lm) - normalizers[:, :S, :]
    x_unigram = log_unigram.expand(B, S, C).gather(2, symbols.unsqueeze(-1))
    px_am_only = (x_am + x_unigram) - am_only_norm
    px_lm_only = x_lm - lm_only_norm[:, :S, :]

    py_am = am[:, :, termination_symbol].unsqueeze(1)
    py_lm = lm[:, :, termination_symbol].unsqueeze(2)
    py = (py_am + py_lm) - normalizers
    py_am_only = (py_am + log_unigram[0, 0, termination_symbol]) - am_only_norm
    py_lm_only = py_lm - lm_only_norm

    combined_scale = 1.0 - lm_only_scale - am_only_scale
    lm_only_scale = lm_only_scale if lm_only_scale != 0.0 else 1.0e-20
    am_only_scale = am_only_scale if am_only_scale != 0.0 else 1.0e-20
    # Interpolating before appending the -inf column T keeps that column -inf even when
    # combined_scale is 0 (k2 makes it NaN then).
    px = (px * combined_scale + px_lm_only * lm_only_scale) + px_am_only * am_only_scale
    py = (py * combined_scale + py_lm_only * lm_only_scale) + py_am_only * am_only_scale
    return _finish_logprobs(px, py, boundary, rnnt_type)


def rnnt_loss_smoothed(
    lm: Tensor,
    am: Tensor,
    symbols: Tensor,
    termination_symbol: int,
    lm_only_scale: float = 0.1,
    am_only_scale: float = 0.1,
    boundary: Optional[Tensor] = None,
    rnnt_type: str = "regular",
    delay_penalty: float = 0.0,
    reduction: str = "mean",
    return_grad: bool = False,
    backend: str = "torch",
) -> LossWithGrads:
    """RNN-T loss -log P(y | x) on the smoothed lattice of `get_rnnt_logprobs_smoothed`.

    Args: lm (B,S+1,C), am (B,T,C), symbols (B,S) int64, the blank id, the two scales, optional
    boundary (B,4) int64, rnnt_type, delay_penalty, reduction and return_grad as in
    `rnnt_loss_simple`. icefall's "simple loss" uses lm_only_scale=0.25, am_only_scale=0.0,
    reduction="sum", return_grad=True and feeds (px_grad, py_grad) to `get_rnnt_prune_ranges`.
    Returns loss, or (loss, (px_grad, py_grad)).
    """
    px, py = get_rnnt_logprobs_smoothed(
        lm, am, symbols, termination_symbol, lm_only_scale, am_only_scale, boundary, rnnt_type
    )
    return _loss_from_logprobs(px, py, boundary, rnnt_type, delay_penalty, reduction, return_grad, backend)


# --------------------------------------------------------------------------------------------
# Pruning
# --------------------------------------------------------------------------------------------


def _reverse_cummin(x: Tensor) -> Tensor:
    """y[..., t] = min_{t' >= t} x[..., t'] along the last dim."""
    return torch.flip(torch.cummin(torch.flip(x, dims=[-1]), dim=-1).values, dims=[-1])


def get_rnnt_prune_ranges(
    px_grad: Tensor, py_grad: Tensor, boundary: Optional[Tensor], s_range: int
) -> Tensor:
    """Per-frame windows of consecutive symbol positions that hold most of the alignment mass.

    Args:
      px_grad: (B, S, T+1) regular or (B, S, T) modified/constrained occupations of the x-arcs,
        as returned by `rnnt_loss_smoothed(..., return_grad=True)`.
      py_grad: (B, S+1, T) occupations of the y-arcs.
      boundary: int64 (B, 4) rows [0, 0, S_b, T_b] (None means [0, 0, S, T]); begins are ignored.
      s_range: requested window size R.

    The effective R is raised (with a warning) to the smallest value with (R-1) * T_b >= S_b for
    every regular sequence, and set to S+1 (no pruning) if it exceeds S. For each frame t it picks
    the window start w maximising the mass of paths whose whole stay on frame t is in rows
    w..w+R-1,  score[w] = sum_{k<R} py_grad[w+k, t] - px_grad[w-1, t]  (first w on ties); frames
    t >= T_b - 1 use max(S_b - R + 1, 0). Starts are then made non-decreasing (reverse cumulative
    min) and limited so that no symbol row is skipped between frames (steps <= R-1 regular, <= 1
    otherwise), starting at 0 on frame 0.

    Returns ranges (B, T, R) int64 with ranges[b,t,k] = start[b,t] + k; take R from its shape.
    """
    check_ndim("px_grad", px_grad, 3, "(B, S, T+1) or (B, S, T)")
    check_ndim("py_grad", py_grad, 3, "(B, S+1, T)")
    B, S, T1 = px_grad.shape
    T = py_grad.shape[2]
    if py_grad.shape[:2] != (B, S + 1) or T1 not in (T, T + 1):
        raise ValueError(
            f"px_grad (B,S,T+1) or (B,S,T) and py_grad (B,S+1,T) do not fit: "
            f"px_grad {tuple(px_grad.shape)}, py_grad {tuple(py_grad.shape)}"
        )
    regular = T1 == T + 1
    device = px_grad.device
    _, _, s_end, t_end = split_boundary(boundary, B, S, T, device)

    R = s_range
    if regular and B > 0:
        if bool((t_end == 0).any()):
            raise ValueError("get_rnnt_prune_ranges needs T_b >= 1 frames for every sequence")
        s_range_min = int((torch.div(s_end - 1, t_end, rounding_mode="trunc") + 2).max())
        if R < s_range_min:
            logging.warning(
                f"s_range {R} cannot cover every symbol of the batch's densest sequence "
                f"((s_range - 1) * T_b must reach S_b): using {s_range_min}"
            )
            R = s_range_min
    if R > S:
        R = S + 1
    if R < (2 if regular else 1):
        raise ValueError(
            f"effective s_range {R} is too small: the regular topology needs a window of at "
            f"least 2 (padded S={S}; a batch of empty transcripts cannot be pruned)"
        )

    W = S + 2 - R  # candidate window starts 0..W-1 over the S+1 rows
    py_grad = py_grad.contiguous()
    sB, sS, sT = py_grad.stride()
    # Summation order matters for near-ties: sum a strided view exactly as k2 does.
    window_mass = torch.as_strided(py_grad, (B, W, R, T), (sB, sS, sS, sT)).sum(dim=2)
    entered = torch.cat((torch.zeros_like(px_grad[:, :1]), px_grad), dim=1)[:, :W, :T]
    start = torch.argmax(window_mass - entered, dim=1)  # (B, T)

    t = torch.arange(T, device=device)
    last_start = torch.clamp(s_end - R + 1, min=0).view(B, 1)
    start = torch.where(t.view(1, T) >= t_end.view(B, 1) - 1, last_start, start)
    start = _reverse_cummin(start)
    step = R - 1 if regular else 1
    slack = _reverse_cummin(step * t - start).clamp(min=0)
    start = step * t - slack
    return start.unsqueeze(-1) + torch.arange(R, device=device)


def _check_ranges(ranges: Tensor, B: int, T: int, S: int) -> int:
    """Checks ranges (B,T,R) = start + arange(R) with 0 <= start <= S+1-R; returns R."""
    if ranges.ndim != 3 or ranges.shape[:2] != (B, T) or ranges.dtype != torch.int64:
        raise ValueError(
            f"ranges must be int64 of shape (B, T, R) = ({B}, {T}, R) from get_rnnt_prune_ranges, "
            f"got {ranges.dtype} {tuple(ranges.shape)}"
        )
    R = ranges.shape[2]
    if R < 1 or R > S + 1:
        raise ValueError(f"ranges has window size {R}; it must be in [1, S+1={S + 1}]")
    if ranges.numel() > 0:
        start = ranges[:, :, :1]
        consecutive = bool((ranges == start + torch.arange(R, device=ranges.device)).all())
        in_bounds = int(start.min()) >= 0 and int(start.max()) <= S + 1 - R
        if not (consecutive and in_bounds):
            raise ValueError(
                f"ranges rows must be consecutive symbol positions start..start+{R - 1} with "
                f"0 <= start <= {S + 1 - R}; use get_rnnt_prune_ranges"
            )
    return R


def do_rnnt_pruning(am: Tensor, lm: Tensor, ranges: Tensor) -> Tuple[Tensor, Tensor]:
    """Encoder and decoder features for the pruned windows, ready for the joiner.

    Args:
      am: (B, T, Ce) encoder-side joiner input.
      lm: (B, S+1, Cd) decoder-side joiner input (row s: context after s symbols).
      ranges: (B, T, R) int64 from `get_rnnt_prune_ranges`.
    Returns:
      am_pruned (B, T, R, Ce) with am_pruned[b,t,k] = am[b,t] (a broadcast view, no copy), and
      lm_pruned (B, T, R, Cd) with lm_pruned[b,t,k] = lm[b, ranges[b,t,k]].
    """
    check_ndim("am", am, 3, "(B, T, Ce)")
    check_ndim("lm", lm, 3, "(B, S+1, Cd)")
    B, T, Ce = am.shape
    if lm.shape[0] != B:
        raise ValueError(f"am and lm disagree on the batch size: {B} vs {lm.shape[0]}")
    Cd = lm.shape[2]
    R = _check_ranges(ranges, B, T, lm.shape[1] - 1)
    am_pruned = am.unsqueeze(2).expand(B, T, R, Ce)
    index = ranges.reshape(B, T * R, 1).expand(B, T * R, Cd)
    lm_pruned = torch.gather(lm, dim=1, index=index).reshape(B, T, R, Cd)
    return am_pruned, lm_pruned


def get_rnnt_logprobs_pruned(
    logits: Tensor,
    symbols: Tensor,
    ranges: Tensor,
    termination_symbol: int,
    boundary: Optional[Tensor] = None,
    rnnt_type: str = "regular",
) -> Tuple[Tensor, Tensor]:
    """Lattice log-probs from joiner outputs computed only inside the pruning windows.

    Args:
      logits: (B, T, R, C) joiner output for the windows, logits[b,t,k] for symbol position
        ranges[b,t,k].
      symbols: (B, S) int64 labels.
      ranges: (B, T, R) int64 from `get_rnnt_prune_ranges`.
      termination_symbol: the blank id.
      boundary: optional int64 (B, 4) rows [0, 0, S_b, T_b].
      rnnt_type: "regular", "modified" or "constrained".

    With lsm = log_softmax over C and r = ranges[b,t,0], for positions s inside the window:
      px[b,s,t] = lsm(logits[b,t,s-r])[y_s]        py[b,s,t] = lsm(logits[b,t,s-r])[blank]
    and -inf outside it. Shapes and topology fix-ups as `get_rnnt_logprobs`:
    px (B,S,T+1) regular or (B,S,T), py (B,S+1,T).
    """
    check_rnnt_type(rnnt_type)
    check_ndim("logits", logits, 4, "(B, T, R, C)")
    check_float("logits", logits)
    B, T, _, C = logits.shape
    check_ndim("symbols", symbols, 2, "(B, S)")
    S = symbols.shape[1]
    check_symbols(symbols, B, S, C, termination_symbol)
    check_boundary(boundary, B, S, T)
    R = _check_ranges(ranges, B, T, S)
    if logits.shape[2] != R:
        raise ValueError(f"logits has {logits.shape[2]} window slots but ranges has {R}")

    normalizers = torch.logsumexp(logits, dim=3)
    blank_column = torch.full_like(symbols[:, :1], termination_symbol)
    symbols_ext = torch.cat((symbols, blank_column), dim=1)  # row S can only emit blank
    window_symbols = symbols_ext.unsqueeze(1).expand(B, T, S + 1).gather(2, ranges)
    # One gather for the symbol and the blank column: a single full-size gradient buffer.
    columns = torch.stack((window_symbols, torch.full_like(window_symbols, termination_symbol)), 3)
    picked = logits.gather(3, columns) - normalizers.unsqueeze(3)
    px_win, py_win = picked.unbind(3)

    # Scatter window slot k to lattice row s = start + k; rows outside the window get -inf.
    slot = torch.arange(S + 1, device=logits.device).view(1, 1, -1) - ranges[:, :, :1]
    inside = (slot >= 0) & (slot < R)
    slot = slot.clamp(0, R - 1)
    py = torch.where(inside, py_win.gather(2, slot), float("-inf")).permute(0, 2, 1)
    px = torch.where(inside[..., :S], px_win.gather(2, slot[..., :S]), float("-inf"))
    return _finish_logprobs(px.permute(0, 2, 1), py, boundary, rnnt_type)


def rnnt_loss_pruned(
    logits: Tensor,
    symbols: Tensor,
    ranges: Tensor,
    termination_symbol: int,
    boundary: Optional[Tensor] = None,
    rnnt_type: str = "regular",
    delay_penalty: float = 0.0,
    reduction: str = "mean",
    backend: str = "torch",
) -> Tensor:
    """RNN-T loss -log P(y | x) over the paths that stay inside the pruning windows.

    Args as `get_rnnt_logprobs_pruned`, plus delay_penalty and reduction ("none" (B,), "mean",
    "sum") as in `rnnt_loss_simple`. With ranges covering all S+1 positions it equals
    `rnnt_loss` on the full joiner output. Returns the loss.
    """
    px, py = get_rnnt_logprobs_pruned(
        logits, symbols, ranges, termination_symbol, boundary, rnnt_type
    )
    return _loss_from_logprobs(px, py, boundary, rnnt_type, delay_penalty, reduction, False, backend)


# --------------------------------------------------------------------------------------------
# Full (unpruned) loss, for reference
# --------------------------------------------------------------------------------------------


def get_rnnt_logprobs_joint(
    logits: Tensor,
    symbols: Tensor,
    termination_symbol: int,
    boundary: Optional[Tensor] = None,
    rnnt_type: str = "regular",
) -> Tuple[Tensor, Tensor]:
    """Lattice log-probs from the full joiner output.

    Args:
      logits: (B, T, S+1, C) joiner output for every frame t and context s.
      symbols: (B, S) int64 labels; termination_symbol: the blank id.
      boundary: optional int64 (B, 4); rnnt_type: "regular", "modified" or "constrained".
    With lsm = log_softmax over C:
      px[b,s,t] = lsm(logits[b,t,s])[y_s]   py[b,s,t] = lsm(logits[b,t,s])[blank]
    Shapes and topology fix-ups as `get_rnnt_logprobs`.
    """
    check_rnnt_type(rnnt_type)
    check_ndim("logits", logits, 4, "(B, T, S+1, C)")
    check_float("logits", logits)
    B, T, S1, C = logits.shape
    S = S1 - 1
    check_symbols(symbols, B, S, C, termination_symbol)
    check_boundary(boundary, B, S, T)
    normalizers = torch.logsumexp(logits, dim=3).permute(0, 2, 1)  # (B, S+1, T)
    index = symbols.unsqueeze(1).expand(B, T, S).unsqueeze(3)
    px = logits[:, :, :S].gather(3, index).squeeze(3).permute(0, 2, 1) - normalizers[:, :S]
    py = logits[:, :, :, termination_symbol].permute(0, 2, 1) - normalizers
    return _finish_logprobs(px, py, boundary, rnnt_type)


def rnnt_loss(
    logits: Tensor,
    symbols: Tensor,
    termination_symbol: int,
    boundary: Optional[Tensor] = None,
    rnnt_type: str = "regular",
    delay_penalty: float = 0.0,
    reduction: str = "mean",
    backend: str = "torch",
) -> Tensor:
    """Exact RNN-T loss -log P(y | x) from the full joiner output logits (B, T, S+1, C).

    Args as `get_rnnt_logprobs_joint`, plus delay_penalty and reduction as in
    `rnnt_loss_simple`. Memory grows as B*T*S*C: use the pruned loss for training.
    """
    px, py = get_rnnt_logprobs_joint(logits, symbols, termination_symbol, boundary, rnnt_type)
    return _loss_from_logprobs(px, py, boundary, rnnt_type, delay_penalty, reduction, False, backend)

