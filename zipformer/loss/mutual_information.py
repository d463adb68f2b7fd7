"""The log-semiring "mutual information" recursion over an (s, t) lattice, in pure PyTorch with
k2's numerics, and its k2 / fast_rnnt backends: every RNN-T loss of zipformer.loss.rnnt_loss
reduces to it.

The lattice has a node (s, t) for s in [0, S], t in [0, T]; x-arcs emit symbol s (to (s+1, t), or
(s+1, t+1) in the "modified" topology) and y-arcs consume frame t (to (s, t+1)). The recursion
(see `mutual_information_recursion` for the formula) runs one anti-diagonal s + t = k at a time,
vectorised over the batch and over s, inside a custom autograd Function, so no per-cell autograd
graph is kept; backward scales the arc occupation probabilities computed with the forward.
"""
import importlib
import math
from typing import Dict, Optional, Tuple, Union

import torch
from torch import Tensor

from zipformer.loss.checks import check_float, check_ndim, split_boundary

BACKENDS = ("torch", "k2", "fast_rnnt")

# k2's LogAdd returns max(x, y) when min - max < log(machine epsilon) of the working dtype.
_LOG_ADD_CUTOFF = {
    torch.float32: math.log(torch.finfo(torch.float32).eps),
    torch.float64: math.log(torch.finfo(torch.float64).eps),
}


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
        self.s_begin, self.t_begin, self.s_end, self.t_end = split_boundary(
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
    check_ndim("px", px, 3, "(B, S, T+1) or (B, S, T)")
    check_ndim("py", py, 3, "(B, S+1, T)")
    check_float("px", px)
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
