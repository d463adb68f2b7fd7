"""Building blocks of the Zipformer: activations, BiasNorm, initialisation helpers and the
parameter-free training regularisers (Balancer, Whiten, ScheduledFloat, dropout variants).

Every regulariser here is a no-op outside training (`module.training` False, or while tracing for
export): evaluation runs the plain inference function, and none of them owns a parameter or buffer.
"""
import random
from typing import Optional, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn


def scale_initial_params(module: nn.Module, initial_scale: float) -> nn.Module:
    """Multiply a freshly built Linear/Conv's default weight init by `initial_scale` and redraw its
    bias from U(-0.1 s, 0.1 s). Returns the module itself (its state_dict keys are unchanged)."""
    with torch.no_grad():
        module.weight.mul_(initial_scale)
        if module.bias is not None:
            nn.init.uniform_(module.bias, -0.1 * initial_scale, 0.1 * initial_scale)
    return module


def ScaledLinear(
    in_features: int, out_features: int, bias: bool = True, initial_scale: float = 1.0
) -> nn.Linear:
    """An nn.Linear whose default init is scaled: weight × s, bias ~ U(-0.1 s, 0.1 s).

    A plain nn.Linear after construction (same state_dict keys); the scale only sets the init,
    which is how Zipformer replaces 1/sqrt(d) factors in the forward pass.
    """
    return scale_initial_params(nn.Linear(in_features, out_features, bias=bias), initial_scale)


def contiguous_grad_view(weight: torch.Tensor, shape: Tuple[int, ...]) -> torch.Tensor:
    """`weight` viewed as `shape` (which may be its own shape): the view's backward hands
    `weight` its gradient in standard contiguous strides.

    mkldnn's channels-last kernels return a depthwise conv weight's gradient with stride 1 on its
    size-1 input-channel dim: the same memory, but DDP compares strides literally (and warns).
    """
    return weight.view(shape)


# --------------------------------------------------------------------------------------------
# Schedules
# --------------------------------------------------------------------------------------------


class ScheduledFloat(nn.Module):
    """A float that follows a piecewise-linear schedule in the training batch count.

    Use it as `float(self.dropout_rate)`. It is an nn.Module (without state) only so that it
    follows `model.train()` / `model.eval()` and is found by `set_batch_count`.

    The value is `default` when not training, while tracing for export, or before any batch count
    has been set; otherwise the schedule is interpolated at `batch_count` and held constant
    beyond its first and last points.

    Example: ScheduledFloat((0.0, 0.3), (20000.0, 0.1), default=0.0)
    """

    def __init__(self, *points: Tuple[float, float], default: float = 0.0) -> None:
        super().__init__()
        if not points:
            raise ValueError("ScheduledFloat needs at least one (batch_count, value) point")
        xs = [float(x) for x, _ in points]
        if xs != sorted(xs):
            raise ValueError(f"ScheduledFloat points must be sorted by batch count, got {points}")
        self.points = [(float(x), float(y)) for x, y in points]
        self.default = float(default)
        self.batch_count: Optional[float] = None

    def value_at(self, batch_count: float) -> float:
        """The schedule's value at `batch_count`, regardless of mode."""
        points = self.points
        if batch_count <= points[0][0]:
            return points[0][1]
        for (x0, y0), (x1, y1) in zip(points, points[1:]):
            if batch_count <= x1:
                return y0 + (y1 - y0) * (batch_count - x0) / (x1 - x0)
        return points[-1][1]

    def __float__(self) -> float:
        if self.batch_count is None or not self.training or torch.jit.is_tracing():
            return self.default
        return self.value_at(self.batch_count)

    def extra_repr(self) -> str:
        return f"points={self.points}, default={self.default}, batch_count={self.batch_count}"


FloatLike = Union[float, ScheduledFloat]


def set_batch_count(model: nn.Module, batch_count: float) -> None:
    """Set `batch_count` on every submodule that has that attribute (all ScheduledFloats)."""
    for module in model.modules():
        if hasattr(module, "batch_count"):
            module.batch_count = batch_count


def regularisers_active(module: nn.Module) -> bool:
    """True when a training-only regulariser should act (training, and not tracing for export)."""
    return module.training and not torch.jit.is_tracing()


# --------------------------------------------------------------------------------------------
# Activations
# --------------------------------------------------------------------------------------------


def _softplus_stable(z: torch.Tensor) -> torch.Tensor:
    """log(1 + exp(z)) without overflow, in elementary ops that ONNX export understands."""
    return z.clamp(min=0.0) + torch.log1p(torch.exp(-z.abs()))


def _swoosh_in_place(
    x32: torch.Tensor, z: torch.Tensor, out: torch.Tensor, offset: float
) -> torch.Tensor:
    """Swoosh from z = x32 - shift, written into `out` (z is overwritten); returns `out`.

    The same float32 operations in the same order as `_softplus_stable(z) - 0.08 * x32 - offset`,
    so bit-identical to it, but on two buffers: on CPU, touching a freshly allocated tensor costs
    more than the arithmetic, and the plain formula allocates six.
    """
    torch.abs(z, out=out).neg_().exp_().log1p_().add_(z.clamp_(min=0.0))
    return out.sub_(torch.mul(x32, 0.08, out=z)).sub_(offset)


class _HalfDerivativeSwoosh(torch.autograd.Function):
    """Swoosh(x) = log(1 + e^(x - shift)) - 0.08 x - offset, saving only sigmoid(x - shift) in
    float16 for the backward pass (the derivative is that sigmoid minus 0.08).

    Half the memory of keeping x, and deterministic: the float16 sigmoid is within 2^-12 of the
    exact one. (icefall keeps a randomly rounded 8-bit derivative, within 1/255 and half this
    memory, but its uniform draw per element took longer than the rest of the function.)
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, shift: float, offset: float) -> torch.Tensor:
        x32 = x.float()
        z = x32 - shift
        out = torch.sigmoid(z)
        ctx.save_for_backward(out.to(torch.float16))
        return _swoosh_in_place(x32, z, out, offset).to(x.dtype)

    @staticmethod
    def backward(ctx, y_grad: torch.Tensor):
        (sigmoid,) = ctx.saved_tensors
        return sigmoid.to(y_grad.dtype, copy=True).sub_(0.08).mul_(y_grad), None, None


def _swoosh(x: torch.Tensor, shift: float, offset: float) -> torch.Tensor:
    if torch.jit.is_tracing():
        # Out-of-place elementary ops: the exported graph.
        return _softplus_stable(x - shift) - 0.08 * x - offset
    if x.requires_grad and torch.is_grad_enabled():
        return _HalfDerivativeSwoosh.apply(x, shift, offset)
    x32 = x.float()
    z = x32 - shift
    return _swoosh_in_place(x32, z, torch.empty_like(z), offset).to(x.dtype)


def swoosh_l(x: torch.Tensor) -> torch.Tensor:
    """SwooshL(x) = log(1 + e^(x - 4)) - 0.08 x - 0.035."""
    return _swoosh(x, 4.0, 0.035)


def swoosh_r(x: torch.Tensor) -> torch.Tensor:
    """SwooshR(x) = log(1 + e^(x - 1)) - 0.08 x - 0.313261687 (SwooshR(0) is about 0)."""
    return _swoosh(x, 1.0, 0.313261687)


class SwooshL(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return swoosh_l(x)


class SwooshR(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return swoosh_r(x)


# --------------------------------------------------------------------------------------------
# Gradient-only helpers (identity in forward)
# --------------------------------------------------------------------------------------------


class _ScaleGradFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, alpha: float) -> torch.Tensor:
        ctx.alpha = alpha
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return grad * ctx.alpha, None


class ScaleGrad(nn.Module):
    """Identity in forward; multiplies the gradient by `alpha` in training."""

    def __init__(self, alpha: float) -> None:
        super().__init__()
        self.alpha = alpha

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not regularisers_active(self) or not x.requires_grad:
            return x
        return _ScaleGradFunction.apply(x, self.alpha)


class _PenalizeAbsValuesFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, limit: float, penalty: float) -> torch.Tensor:
        ctx.save_for_backward(x)
        ctx.limit = limit
        ctx.penalty = penalty
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (x,) = ctx.saved_tensors
        # The gradient of penalty * relu(|x| - limit): pushes large values back towards the limit.
        extra = (x.abs() > ctx.limit).to(grad.dtype) * x.sign().to(grad.dtype) * ctx.penalty
        return grad + extra, None, None


def penalize_abs_values_gt(x: torch.Tensor, limit: float, penalty: float) -> torch.Tensor:
    """Identity in forward; in backward, adds the gradient of `penalty * sum(relu(|x| - limit))`,
    as if that auxiliary loss had been added to the objective."""
    if not x.requires_grad:
        return x
    return _PenalizeAbsValuesFunction.apply(x, limit, penalty)


class _LimitParamValueFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, min_value: float, max_value: float) -> torch.Tensor:
        ctx.save_for_backward(x)
        ctx.min_value = min_value
        ctx.max_value = max_value
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (x,) = ctx.saved_tensors
        # A descent step moves x by -grad: reverse the gradient wherever that step would push an
        # out-of-range value further out, so the optimizer brings it back instead.
        outward = ((x < ctx.min_value) & (grad > 0)) | ((x > ctx.max_value) & (grad < 0))
        return torch.where(outward, -grad, grad), None, None


def limit_param_value(
    x: torch.Tensor, min_value: float, max_value: float, prob: float = 0.6, training: bool = True
) -> torch.Tensor:
    """Identity in forward; in training (on a random `prob` fraction of calls) keeps a parameter
    within [min_value, max_value] by reversing gradients that would push it further outside."""
    if not training or not x.requires_grad or torch.jit.is_tracing() or random.random() >= prob:
        return x
    return _LimitParamValueFunction.apply(x, min_value, max_value)


# --------------------------------------------------------------------------------------------
# Balancer and Whiten (identity in forward, gradient terms in training)
# --------------------------------------------------------------------------------------------


class _BalancerFunction(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx,
        x: torch.Tensor,
        channel_dim: int,
        bounds: Tuple[float, float, float, float],
        grad_scale: float,
    ) -> torch.Tensor:
        ctx.save_for_backward(x)
        ctx.channel_dim = channel_dim
        ctx.bounds = bounds
        ctx.grad_scale = grad_scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (x,) = ctx.saved_tensors
        min_positive, max_positive, min_abs, max_abs = ctx.bounds
        channel_dim = ctx.channel_dim % x.ndim
        other_dims = [d for d in range(x.ndim) if d != channel_dim]
        x32 = x.float()
        # One full-size buffer for |x|, then (x > 0) as 0/1 floats, then the direction below:
        # allocating a fresh large tensor costs more on CPU than the arithmetic on it.
        buffer = x32.abs()
        mean_abs = buffer.mean(dim=other_dims, keepdim=True)
        positive = torch.sign(x32, out=buffer).clamp_(min=0.0)
        positive_fraction = positive.mean(dim=other_dims, keepdim=True)
        # +1 where a channel should move down (its positive fraction is too high), -1 up.
        shift_direction = (positive_fraction > max_positive).float() - (
            positive_fraction < min_positive
        ).float()
        # +1 where a channel's magnitude should shrink, -1 grow; applied along sign(x).
        scale_direction = (mean_abs > max_abs).float() - (mean_abs < min_abs).float()
        if not (shift_direction.any() or scale_direction.any()):
            return grad, None, None, None
        # The direction is in {0, ±1, ±2}, so |grad| · direction · grad_scale rounds exactly like
        # grad_scale · |grad| · direction.
        direction = torch.sign(x32, out=buffer).mul_(scale_direction).add_(shift_direction)
        grad32 = grad.float()
        extra = grad32.abs().mul_(direction).mul_(ctx.grad_scale)
        return extra.add_(grad32).to(grad.dtype), None, None, None


class Balancer(nn.Module):
    """Identity in forward. In training it nudges per-channel statistics into bounds through the
    gradient: when a channel's fraction of positive values is outside [min_positive, max_positive]
    or its mean |x| is outside [min_abs, max_abs], a term of relative size `grad_scale` (times |grad|)
    is added to the gradient, pushing the channel back. Applied on a random `prob` fraction of calls.
    All bounds and `prob` may be ScheduledFloats.
    """

    def __init__(
        self,
        num_channels: int,
        channel_dim: int,
        min_positive: FloatLike = 0.05,
        max_positive: FloatLike = 0.95,
        min_abs: FloatLike = 0.2,
        max_abs: FloatLike = 100.0,
        grad_scale: FloatLike = 0.04,
        prob: Optional[FloatLike] = None,
    ) -> None:
        super().__init__()
        self.num_channels = num_channels
        self.channel_dim = channel_dim
        self.min_positive = min_positive
        self.max_positive = max_positive
        self.min_abs = min_abs
        self.max_abs = max_abs
        self.grad_scale = grad_scale
        self.prob = ScheduledFloat((0.0, 0.5), (8000.0, 0.125), default=0.4) if prob is None else prob

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not regularisers_active(self) or not x.requires_grad or random.random() >= float(self.prob):
            return x
        if x.shape[self.channel_dim] != self.num_channels:
            raise ValueError(
                f"Balancer expects {self.num_channels} channels on dim {self.channel_dim}, "
                f"got shape {tuple(x.shape)}"
            )
        bounds = (
            float(self.min_positive),
            float(self.max_positive),
            float(self.min_abs),
            float(self.max_abs),
        )
        return _BalancerFunction.apply(x, self.channel_dim, bounds, float(self.grad_scale))


def whitening_metric(x: torch.Tensor, num_groups: int) -> torch.Tensor:
    """How far the channel covariance of x is from a multiple of the identity, per group.

    x: (..., C). For each group of C/num_groups channels with covariance S (c×c), the metric is
    c·tr(S²)/tr(S)², which is 1 for white features and c for rank-one ones; returns the mean over
    groups (a 0-dim tensor).
    """
    num_channels = x.shape[-1]
    x = x.reshape(-1, num_groups, num_channels // num_groups).transpose(0, 1)
    x = x - x.mean(dim=1, keepdim=True)
    covar = torch.matmul(x.transpose(1, 2), x)
    group_channels = covar.shape[-1]
    trace = covar.diagonal(dim1=1, dim2=2).sum(dim=-1)
    trace_of_square = (covar**2).sum(dim=(1, 2))
    metric = group_channels * trace_of_square / (trace**2 + 1e-20)
    return metric.mean()


class _WhitenFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, num_groups: int, limit: float, grad_scale: float):
        ctx.save_for_backward(x)
        ctx.num_groups = num_groups
        ctx.limit = limit
        ctx.grad_scale = grad_scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (x,) = ctx.saved_tensors
        with torch.enable_grad():
            x_detached = x.detach().float().requires_grad_(True)
            excess = whitening_metric(x_detached, ctx.num_groups) - ctx.limit
            if excess.item() <= 0:
                return grad, None, None, None
            (penalty_grad,) = torch.autograd.grad(excess, x_detached)
        # Give the whitening term a norm of grad_scale times the incoming gradient's norm.
        scale = ctx.grad_scale * grad.float().norm() / (penalty_grad.norm() + 1e-20)
        return (grad.float() + scale * penalty_grad).to(grad.dtype), None, None, None


class Whiten(nn.Module):
    """Identity in forward. In training (on a random `prob` fraction of calls) it adds to the
    gradient a term that lowers `whitening_metric` of the channels on `channel_dim` whenever it
    exceeds `whitening_limit`, scaled to `grad_scale` times the norm of the incoming gradient.
    """

    def __init__(
        self,
        num_groups: int,
        whitening_limit: FloatLike,
        prob: float = 0.1,
        grad_scale: float = 0.01,
        channel_dim: int = -1,
    ) -> None:
        super().__init__()
        self.num_groups = num_groups
        self.channel_dim = channel_dim
        self.whitening_limit = whitening_limit
        self.prob = prob
        self.grad_scale = grad_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (
            not regularisers_active(self)
            or not x.requires_grad
            or self.grad_scale == 0
            or random.random() >= self.prob
        ):
            return x
        if x.shape[self.channel_dim] % self.num_groups != 0:
            raise ValueError(
                f"Whiten: {x.shape[self.channel_dim]} channels do not split into "
                f"{self.num_groups} groups"
            )
        x = x.movedim(self.channel_dim, -1)
        x = _WhitenFunction.apply(x, self.num_groups, float(self.whitening_limit), self.grad_scale)
        return x.movedim(-1, self.channel_dim)


def whitening_schedule(limit: float, ratio: float = 2.0) -> ScheduledFloat:
    """A whitening limit that loosens from `limit` to `ratio * limit` over 20k batches."""
    return ScheduledFloat((0.0, limit), (20000.0, ratio * limit), default=limit)


# --------------------------------------------------------------------------------------------
# Dropout variants
# --------------------------------------------------------------------------------------------


def _shared_dropout(x: torch.Tensor, p: float, shared_dim: int) -> torch.Tensor:
    """Dropout whose mask has size 1 on `shared_dim`, so it is the same along that dim."""
    mask_shape = list(x.shape)
    mask_shape[shared_dim] = 1
    mask = (torch.rand(mask_shape, device=x.device) >= p).to(x.dtype)
    return x * mask * (1.0 / (1.0 - p))


class Dropout3(nn.Module):
    """Dropout whose mask is shared along `shared_dim` (e.g. the same channels dropped on every
    frame of a sequence); the rate may be a ScheduledFloat."""

    def __init__(self, p: FloatLike, shared_dim: int) -> None:
        super().__init__()
        self.p = p
        self.shared_dim = shared_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = float(self.p)
        if not regularisers_active(self) or p == 0.0:
            return x
        return _shared_dropout(x, p, self.shared_dim)


# --------------------------------------------------------------------------------------------
# Layers with parameters
# --------------------------------------------------------------------------------------------


class BiasNorm(nn.Module):
    """y = x · exp(log_scale) / sqrt(mean_c((x - bias)²)), the mean taken over `channel_dim`.

    No epsilon, and the bias only enters the RMS (it is not added to the output). log_scale is a
    0-dim parameter; in training it is kept in [-1.5, 1.5] through its gradient.
    """

    def __init__(self, num_channels: int, channel_dim: int = -1, log_scale: float = 1.0) -> None:
        super().__init__()
        self.num_channels = num_channels
        self.channel_dim = channel_dim
        self.log_scale = nn.Parameter(torch.tensor(log_scale))
        self.bias = nn.Parameter(torch.empty(num_channels).normal_(mean=0.0, std=1e-4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (..., C) with C on `channel_dim`; returns the same shape."""
        if x.shape[self.channel_dim] != self.num_channels:
            raise ValueError(
                f"BiasNorm expects {self.num_channels} channels, got shape {tuple(x.shape)}"
            )
        bias = self.bias
        channel_dim = self.channel_dim % x.ndim
        for _ in range(channel_dim + 1, x.ndim):
            bias = bias.unsqueeze(-1)
        log_scale = limit_param_value(self.log_scale, -1.5, 1.5, training=regularisers_active(self))
        inverse_rms = torch.mean((x - bias) ** 2, dim=channel_dim, keepdim=True) ** -0.5
        return x * (inverse_rms * log_scale.exp())


class ActivationDropoutAndLinear(nn.Module):
    """y = W · dropout(activation(x)) + b, with W (out, in) and b (out) registered directly on
    this module (keys `weight`, `bias`), as icefall's checkpoints expect.

    The dropout mask is shared along `dropout_shared_dim` (e.g. 0 = time for (T, N, C) input).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        bias: bool = True,
        activation: str = "SwooshL",
        dropout_p: FloatLike = 0.0,
        dropout_shared_dim: Optional[int] = -1,
        initial_scale: float = 1.0,
    ) -> None:
        super().__init__()
        activations = {"SwooshL": swoosh_l, "SwooshR": swoosh_r}
        if activation not in activations:
            raise ValueError(f"activation must be one of {sorted(activations)}, got {activation}")
        linear = ScaledLinear(in_channels, out_channels, bias=bias, initial_scale=initial_scale)
        self.weight = linear.weight
        self.bias = linear.bias
        self.activation = activation
        self._activation_fn = activations[activation]
        self.dropout_p = dropout_p
        self.dropout_shared_dim = dropout_shared_dim

    def activate(self, x: torch.Tensor) -> torch.Tensor:
        """The activation alone: what the linear map sees at inference (dropout trains only)."""
        return self._activation_fn(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.activate(x)
        p = float(self.dropout_p)
        if regularisers_active(self) and p > 0.0:
            if self.dropout_shared_dim is None:
                x = F.dropout(x, p, training=True)
            else:
                x = _shared_dropout(x, p, self.dropout_shared_dim)
        return F.linear(x, self.weight, self.bias)

    def extra_repr(self) -> str:
        out_channels, in_channels = self.weight.shape
        return f"{in_channels} -> {out_channels}, activation={self.activation}"

