"""Pruned RNN-T loss in pure PyTorch, with k2's names, signatures and numerics (k2 master).

Pipeline used in training (the pruned RNN-T of Kuang et al., "Pruned RNN-T for fast, memory-efficient
ASR training", Interspeech 2022):
  1. `rnnt_loss_smoothed(..., return_grad=True)`: a cheap loss whose joiner is plain addition; its
     arc occupation probabilities (px_grad, py_grad) say where the alignment mass lies;
  2. `get_rnnt_prune_ranges`: for every frame, a window of `s_range` consecutive symbol positions;
  3. `do_rnnt_pruning`: the encoder/decoder features for those windows only;
  4. `rnnt_loss_pruned`: the exact RNN-T loss restricted to the windows.

Everything reduces to the log-semiring "mutual information" recursion over an (s, t) lattice,
`mutual_information_recursion`. It runs one anti-diagonal s + t = k at a time (vectorised over the
batch and over s) inside a custom autograd Function, so no per-cell autograd graph is kept.

Optional backend: every loss takes `backend="k2"` or `"fast_rnnt"` to run the recursion with that
package (it must be importable); the default "torch" needs nothing extra. Training chooses it with
--rnnt-backend. fast_rnnt asserts S_b >= 1 and scales its saved occupations in place during backward.
"""
import importlib
import logging
import math
from typing import Dict, List, Optional, Tuple, Union

import torch
from torch import Tensor

RNNT_TYPES = ("regular", "modified", "constrained")
REDUCTIONS = ("none", "mean", "sum")
BACKENDS = ("torch", "k2", "fast_rnnt")

# k2's LogAdd returns max(x, y) when min - max < log(machine epsilon) of the working dtype.
_LOG_ADD_CUTOFF = {
    torch.float32: math.log(torch.finfo(torch.float32).eps),
    torch.float64: math.log(torch.finfo(torch.float64).eps),
}

LossWithGrads = Union[Tensor, Tuple[Tensor, Tuple[Tensor, Tensor]]]

__all__: List[str] = [
    "mutual_information_recursion",
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
# Input checks
# --------------------------------------------------------------------------------------------


def _check_float(name: str, x: Tensor) -> None:
    if x.dtype not in (torch.float32, torch.float64):
        raise ValueError(f"{name} has dtype {x.dtype}; cast it to float32 (e.g. `{name}.float()`)")


def _check_ndim(name: str, x: Tensor, ndim: int, shape_doc: str) -> None:
    if x.ndim != ndim:
        raise ValueError(f"{name} must have shape {shape_doc}, got {tuple(x.shape)}")


def _check_rnnt_type(rnnt_type: str) -> None:
    if rnnt_type not in RNNT_TYPES:
        raise ValueError(f"rnnt_type must be one of {RNNT_TYPES}, got '{rnnt_type}'")


def _check_symbols(symbols: Tensor, B: int, S: int, C: int, termination_symbol: int) -> None:
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


def _split_boundary(
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


def _check_boundary(boundary: Optional[Tensor], B: int, S: int, T: int) -> None:
    if boundary is not None:
        _split_boundary(boundary, B, S, T, boundary.device)


def _check_reduction(reduction: str) -> None:
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got '{reduction}'")


# --------------------------------------------------------------------------------------------
# The recursion: wavefront over anti-diagonals
# --------------------------------------------------------------------------------------------


def _arc_masks(
    s_begin: Tensor, t_begin: Tensor, s_end: Tensor, t_end: Tensor, S: int, T1: int, T: int,
    regular: bool,
) -> Tuple[Tensor, Tensor]:
    """Boolean masks (B,S,T1) and (B,S+1,T) of the x- and y-arcs that lie inside each region."""
    device = s_begin.device
    sb, tb = s_begin.view(-1, 1, 1), t_begin.view(-1, 1, 1)
    se, te = s_end.view(-1, 1, 1), t_end.view(-1, 1, 1)
    s_x = torch.arange(S, device=device).view(1, -1, 1)
    s_y = torch.arange(S + 1, device=device).view(1, -1, 1)
    t_x = torch.arange(T1, device=device).view(1, 1, -1)
    t_y = torch.arange(T, device=device).view(1, 1, -1)
    # A regular x-arc stays on its frame, so it may leave from the last column t_end.
    t_x_ok = (t_x <= te) if regular else (t_x < te)
    x_ok = (s_x >= sb) & (s_x < se) & (t_x >= tb) & t_x_ok
    y_ok = (s_y >= sb) & (s_y <= se) & (t_y >= tb) & (t_y < te)
    return x_ok, y_ok


def _skew(x: Tensor, num_diagonals: int, width: int, row_shift: int, col_shift: int) -> Tensor:
    """out[k, b, s] = x[b, s - row_shift, k - s - col_shift], or -inf where that is outside x.

    x: (B, R, W). Returns (num_diagonals, B, width), contiguous.
    """
    B, R, W = x.shape
    device = x.device
    s = torch.arange(width, device=device)
    k = torch.arange(num_diagonals, device=device).view(-1, 1)
    rows = (s - row_shift).expand(num_diagonals, width)
    cols = k - s - col_shift
    inside = (rows >= 0) & (rows < R) & (cols >= 0) & (cols < W)
    out = torch.full((num_diagonals, B, width), float("-inf"), dtype=x.dtype, device=device)
    if R > 0 and W > 0:
        picked = x.permute(1, 2, 0)[rows.clamp(0, R - 1), cols.clamp(0, W - 1)]  # (K, width, B)
        out = torch.where(inside.unsqueeze(1), picked.permute(0, 2, 1), out).contiguous()
    return out


def _cells_by_diagonal(diag: Tensor, col: Tensor) -> Dict[int, Tuple[Tensor, Tensor]]:
    """Groups sequences by the diagonal of one special cell: {k: (batch indices, column)}."""
    groups: Dict[int, Tuple[Tensor, Tensor]] = {}
    for k in torch.unique(diag).tolist():
        idx = torch.nonzero(diag == k).flatten()
        groups[k] = (idx, col[idx])
    return groups


def _log_add_into(tx: Tensor, ty: Tensor, cutoff: float, out: Tensor) -> None:
    """out = LogAdd(tx, ty) with k2's cut-off; LogAdd(-inf, -inf) = -inf (the NaN diff fails >=)."""
    m = torch.maximum(tx, ty)
    d = torch.minimum(tx, ty) - m
    r = d.exp().log1p_().add_(m)
    torch.where(d >= cutoff, r, m, out=out)


class _Lattice:
    """The (s, t) lattice of one batch in the skewed layout of the wavefront.

    Diagonal k = s + t is the leading dim. Region masks come from the boundary; arcs outside the
    regions are replaced by -inf before skewing, so padding garbage (even NaN) never reaches them.
    """

    def __init__(self, px: Tensor, py: Tensor, boundary: Optional[Tensor]) -> None:
        B, S, T1 = px.shape
        T = py.shape[2]
        self.B, self.S, self.T, self.T1 = B, S, T, T1
        self.regular = T1 == T + 1
        self.lag = 1 if self.regular else 2  # a modified x-arc comes from diagonal k-2
        self.num_diagonals = S + T + 1
        self.dtype, self.device = px.dtype, px.device
        self.s_begin, self.t_begin, self.s_end, self.t_end = _split_boundary(
            boundary, B, S, T, px.device
        )
        self.x_ok, self.y_ok = _arc_masks(
            self.s_begin, self.t_begin, self.s_end, self.t_end, S, T1, T, self.regular
        )
        px = torch.where(self.x_ok, px, float("-inf"))
        py = torch.where(self.y_ok, py, float("-inf"))
        # XS[k,b,s]: log-prob of the x-arc *into* cell (s, k-s); YS likewise for the y-arc.
        K, S1 = self.num_diagonals, S + 1
        self.XS = _skew(px, K, S1, row_shift=1, col_shift=0 if self.regular else 1)
        self.YS = _skew(py, K, S1, row_shift=0, col_shift=1)
        self.start_diag = self.s_begin + self.t_begin
        self.end_diag = self.s_end + self.t_end
        self.k_first = int(self.start_diag.min()) if B > 0 else 0
        self.k_last = int(self.end_diag.max()) if B > 0 else -1


def _wavefront_forward(lat: _Lattice) -> Tuple[Tensor, Tensor, Tensor]:
    """Forward recursion. Returns (scores (B,), P, TX).

    P (K+1, B, S+2): P[k+1, b, s+1] = p[b, s, k-s], with a leading row (diagonal -1) and column
    (s = -1) of -inf, so the x-predecessors of a whole diagonal are one slice, no concatenation.
    TX (K, B, S+1): the x-arc term p[x-pred] + px[x-pred] into each cell, kept for the backward.
    """
    B, S1, K, lag = lat.B, lat.S + 1, lat.num_diagonals, lat.lag
    cutoff = _LOG_ADD_CUTOFF[lat.dtype]
    P = torch.full((K + 1, B, S1 + 1), float("-inf"), dtype=lat.dtype, device=lat.device)
    TX = torch.full((K, B, S1), float("-inf"), dtype=lat.dtype, device=lat.device)
    starts = _cells_by_diagonal(lat.start_diag, lat.s_begin)
    # Per-diagonal views made once: slicing inside the loop costs more than the arithmetic.
    p_cells, p_x_pred = P[:, :, 1:].unbind(0), P[:, :, :S1].unbind(0)
    xs, ys, tx_rows = lat.XS.unbind(0), lat.YS.unbind(0), TX.unbind(0)
    for k in range(lat.k_first, lat.k_last + 1):
        ty = p_cells[k] + ys[k]
        tx = torch.add(p_x_pred[max(k + 1 - lag, 0)], xs[k], out=tx_rows[k])
        _log_add_into(tx, ty, cutoff, out=p_cells[k + 1])
        if k in starts:
            idx, col = starts[k]
            p_cells[k + 1][idx, col] = 0.0
    batch = torch.arange(B, device=lat.device)
    scores = P[lat.end_diag + 1, batch, lat.s_end + 1]
    return scores, P, TX


def _wavefront_occupations(lat: _Lattice, P: Tensor, TX: Tensor) -> Tuple[Tensor, Tensor]:
    """k2's CPU backward: each cell splits its occupation g between its x-arc (d1 * g) and its
    y-arc ((1 - d1) * g), with d1 = exp(TX - p). Returns (px_grad, py_grad), 0 outside regions."""
    B, S, S1, K, lag = lat.B, lat.S, lat.S + 1, lat.num_diagonals, lat.lag
    Pk = P[1:, :, 1:]
    tau = torch.where(torch.isfinite(Pk), Pk, 0.0)
    d1 = (TX - tau).exp()
    finite = torch.isfinite(d1)
    d2 = torch.where(finite, 1.0 - d1, 0.0)
    d1 = torch.where(finite, d1, 0.0)
    if lat.regular:
        # Left-column cells have only their x-predecessor inside the region.
        s = torch.arange(S1, device=lat.device).view(1, 1, -1)
        k = torch.arange(K, device=lat.device).view(-1, 1, 1)
        left = (k - s == lat.t_begin.view(1, -1, 1)) & (s > lat.s_begin.view(1, -1, 1))
        d1 = torch.where(left, 1.0, d1)
        d2 = torch.where(left, 0.0, d2)

    # GX[k,b,s] / GY[k,b,s]: occupation sent back along the x-/y-arc into cell (s, k-s).
    # GX has a spare zero column S+1 so the shifted read below needs no concatenation.
    GX = torch.zeros((K + 2, B, S1 + 1), dtype=lat.dtype, device=lat.device)
    GY = torch.zeros((K + 2, B, S1), dtype=lat.dtype, device=lat.device)
    ends = _cells_by_diagonal(lat.end_diag, lat.s_end)
    gx_succ, gx_cells, gy_cells = GX[:, :, 1:].unbind(0), GX[:, :, :S1].unbind(0), GY.unbind(0)
    d1_rows, d2_rows = d1.unbind(0), d2.unbind(0)
    for k in range(lat.k_last, lat.k_first - 1, -1):
        g = gx_succ[k + lag] + gy_cells[k + 1]
        if k in ends:
            idx, col = ends[k]
            g[idx, col] = 1.0
        torch.mul(d1_rows[k], g, out=gx_cells[k])
        torch.mul(d2_rows[k], g, out=gy_cells[k])

    # Unskew: the arc leaving (s, t) enters a cell on diagonal s + t + lag (x) or s + t + 1 (y).
    s_x = torch.arange(S, device=lat.device).view(-1, 1)
    t_x = torch.arange(lat.T1, device=lat.device).view(1, -1)
    px_grad = GX[s_x + t_x + lag, :, s_x + 1].permute(2, 0, 1)
    s_y = torch.arange(S1, device=lat.device).view(-1, 1)
    t_y = torch.arange(lat.T, device=lat.device).view(1, -1)
    py_grad = GY[s_y + t_y + 1, :, s_y].permute(2, 0, 1)
    return torch.where(lat.x_ok, px_grad, 0.0), torch.where(lat.y_ok, py_grad, 0.0)


class _MutualInformation(torch.autograd.Function):
    """Runs the recursion without recording it; backward scales the saved occupations."""

    @staticmethod
    def forward(ctx, px: Tensor, py: Tensor, boundary: Optional[Tensor]):  # type: ignore[override]
        lattice = _Lattice(px, py, boundary)
        scores, P, TX = _wavefront_forward(lattice)
        px_grad, py_grad = _wavefront_occupations(lattice, P, TX)
        ctx.save_for_backward(px_grad, py_grad)
        ctx.mark_non_differentiable(px_grad, py_grad)
        return scores, px_grad, py_grad

    @staticmethod
    def backward(ctx, grad_scores: Tensor, _px: Tensor, _py: Tensor):  # type: ignore[override]
        px_grad, py_grad = ctx.saved_tensors
        scale = grad_scores.view(-1, 1, 1)
        return px_grad * scale, py_grad * scale, None


def _backend_module(name: str):
    """The optional package `name` ("k2" or "fast_rnnt"), or a clear error if it is missing."""
    if name not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got '{name}'")
    try:
        return importlib.import_module(name)
    except Exception as e:  # a missing package, or a build for another torch version
        raise ValueError(
            f"backend {name} asked for, but `import {name}` fails ({e}); install {name} for this "
            "torch version or use backend torch (the pure-PyTorch recursion)"
        ) from None


def mutual_information_recursion(
    px: Tensor,
    py: Tensor,
    boundary: Optional[Tensor] = None,
    return_grad: bool = False,
    backend: str = "torch",
) -> Union[Tensor, Tuple[Tensor, Tuple[Tensor, Tensor]]]:
    """Total log-likelihood of all monotonic paths through an (s, t) lattice.

    Args:
      px: (B, S, T+1) for the regular topology, or (B, S, T) for "modified" (then a symbol also
        consumes a frame). px[b,s,t] is the log-prob of the x-arc (s,t) -> (s+1,t) (regular) or
        (s,t) -> (s+1,t+1) (modified): emitting symbol s on frame t. float32 or float64.
      py: (B, S+1, T), same dtype. py[b,s,t] is the log-prob of the y-arc (s,t) -> (s,t+1).
      boundary: optional int64 (B, 4), rows [s_begin, t_begin, s_end, t_end]; None means
        [0, 0, S, T] for every row. Only arcs inside [s_begin,s_end] x [t_begin,t_end] are read,
        so padding may hold anything (even NaN).
      return_grad: also return the occupation probabilities (see below).
      backend: "torch" (this module), or "k2" / "fast_rnnt" to call that package's recursion.

    Computes, with p[s_begin, t_begin] = 0 and LogAdd(a, b) = log(e^a + e^b) (k2's cut-off:
    the larger argument alone when they differ by more than -log(eps)),
        p[s,t] = LogAdd(p[s-1,t] + px[s-1,t], p[s,t-1] + py[s,t-1])          (regular)
        p[s,t] = LogAdd(p[s-1,t-1] + px[s-1,t-1], p[s,t-1] + py[s,t-1])      (modified)
    and returns scores[b] = p[s_end, t_end], shape (B,), in px's dtype (-inf if no path exists).

    With return_grad=True, returns (scores, (px_grad, py_grad)) where px_grad = d scores.sum()/d px
    (B,S,T+1 or B,S,T) and py_grad = d scores.sum()/d py (B,S+1,T): the posterior probability
    that a path uses each arc, detached, 0 on arcs outside the region. Gradients to px/py flow
    through autograd as these occupations times the upstream gradient of each score.
    """
    _check_ndim("px", px, 3, "(B, S, T+1) or (B, S, T)")
    _check_ndim("py", py, 3, "(B, S+1, T)")
    _check_float("px", px)
    if py.dtype != px.dtype:
        raise ValueError(f"px and py must share a dtype, got {px.dtype} and {py.dtype}")
    B, S, T1 = px.shape
    if py.shape[:2] != (B, S + 1) or T1 not in (py.shape[2], py.shape[2] + 1):
        raise ValueError(
            f"px (B,S,T+1) or (B,S,T) and py (B,S+1,T) do not fit: px {tuple(px.shape)}, "
            f"py {tuple(py.shape)}"
        )
    if px.device != py.device:
        raise ValueError(f"px and py are on different devices ({px.device}, {py.device})")

    if backend != "torch":
        return _backend_module(backend).mutual_information_recursion(
            px=px, py=py, boundary=boundary, return_grad=return_grad
        )

    needs_autograd = torch.is_grad_enabled() and (px.requires_grad or py.requires_grad)
    if needs_autograd or return_grad:
        scores, px_grad, py_grad = _MutualInformation.apply(px, py, boundary)
        return (scores, (px_grad, py_grad)) if return_grad else scores
    with torch.no_grad():
        return _wavefront_forward(_Lattice(px, py, boundary))[0]


# --------------------------------------------------------------------------------------------
# Shared pieces of the log-prob builders
# --------------------------------------------------------------------------------------------


def _check_lm_am(lm: Tensor, am: Tensor) -> Tuple[int, int, int, int]:
    """Checks lm (B,S+1,C) and am (B,T,C); returns (B, S, T, C)."""
    _check_ndim("lm", lm, 3, "(B, S+1, C)")
    _check_ndim("am", am, 3, "(B, T, C)")
    _check_float("lm", lm)
    _check_float("am", am)
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
    _check_reduction(reduction)
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
    _check_rnnt_type(rnnt_type)
    B, S, T, C = _check_lm_am(lm, am)
    _check_symbols(symbols, B, S, C, termination_symbol)
    _check_boundary(boundary, B, S, T)
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
    _check_rnnt_type(rnnt_type)
    B, S, T, C = _check_lm_am(lm, am)
    _check_symbols(symbols, B, S, C, termination_symbol)
    _check_boundary(boundary, B, S, T)
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
    _check_ndim("px_grad", px_grad, 3, "(B, S, T+1) or (B, S, T)")
    _check_ndim("py_grad", py_grad, 3, "(B, S+1, T)")
    B, S, T1 = px_grad.shape
    T = py_grad.shape[2]
    if py_grad.shape[:2] != (B, S + 1) or T1 not in (T, T + 1):
        raise ValueError(
            f"px_grad (B,S,T+1) or (B,S,T) and py_grad (B,S+1,T) do not fit: "
            f"px_grad {tuple(px_grad.shape)}, py_grad {tuple(py_grad.shape)}"
        )
    regular = T1 == T + 1
    device = px_grad.device
    _, _, s_end, t_end = _split_boundary(boundary, B, S, T, device)

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
    _check_ndim("am", am, 3, "(B, T, Ce)")
    _check_ndim("lm", lm, 3, "(B, S+1, Cd)")
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
    _check_rnnt_type(rnnt_type)
    _check_ndim("logits", logits, 4, "(B, T, R, C)")
    _check_float("logits", logits)
    B, T, _, C = logits.shape
    _check_ndim("symbols", symbols, 2, "(B, S)")
    S = symbols.shape[1]
    _check_symbols(symbols, B, S, C, termination_symbol)
    _check_boundary(boundary, B, S, T)
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
    _check_rnnt_type(rnnt_type)
    _check_ndim("logits", logits, 4, "(B, T, S+1, C)")
    _check_float("logits", logits)
    B, T, S1, C = logits.shape
    S = S1 - 1
    _check_symbols(symbols, B, S, C, termination_symbol)
    _check_boundary(boundary, B, S, T)
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

