"""ScaledAdam and the Eden learning-rate schedule, computing what icefall's zipformer/optim.py computes.

ScaledAdam is Adam whose step for a tensor is proportional to that tensor's RMS (so every
weight matrix changes by the same *relative* amount per step), plus:
  - a learned overall size of each tensor, updated every `size_update_period` steps by at most
    10% and kept within [param_min_rms, param_max_rms];
  - plain Adam with a smaller learning rate (lr * scalar_lr_scale) for one-element tensors,
    clamped to [-scalar_max, scalar_max] after each update;
  - gradient clipping against a threshold re-estimated from the median of recent norms.
The optimizer state is float32, as in the reference. tests/test_optim.py replays trajectories
recorded with icefall's optimizer (tests/data/README.md) and checks they agree step for step.

Where it deliberately differs (README.md, "Deliberate differences from icefall"): one clipping
norm over all parameter groups together; parameters whose `.grad` is None are skipped entirely
(their values and state stay untouched, so frozen weights stay bit-identical whether or not they
were given to the optimizer); a non-finite gradient norm is left out of the clipping window and
makes the whole step use zero gradients.
"""
import logging
import math
from collections import deque
from collections.abc import Iterable
from typing import Any, Callable, Optional

import torch
from torch import Tensor, nn

# Steps (before the first full window) at which the clipping threshold is re-estimated early,
# from the norms seen so far, and doubled because norms still change fast at the start.
_EARLY_THRESHOLD_STEPS = (10, 20, 40)
# The most a tensor's size may change, relatively, in one size update (either direction).
_MAX_SIZE_STEP = 0.1


def get_parameter_groups_with_lrs(
    model: nn.Module, lr: float, include_names: bool = True
) -> list[dict[str, Any]]:
    """Group the trainable parameters of `model` by learning rate.

    A module may define an attribute `lr_scale`; a parameter's lr is `lr` times the `lr_scale`
    of every module on its path (root included). A module may also define `param_min_rms`, the
    ScaledAdam floor of its parameters' step size (the innermost one wins): a zero-initialised
    tensor needs it, because ScaledAdam steps scale with the tensor's RMS and the default floor
    (1e-5) would keep it at zero. Parameters with requires_grad=False are left out.

    Returns a list of torch-style groups `{"params": [...], "lr": float}` (plus "param_min_rms" when
    set), one per distinct setting, in first-seen order. With include_names, "params" holds
    `(name, param)` tuples.
    """
    modules = dict(model.named_modules())
    groups: dict[tuple, list] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        cur_lr = lr * float(getattr(model, "lr_scale", 1.0))
        min_rms = getattr(model, "param_min_rms", None)
        prefix = ""
        for part in name.split(".")[:-1]:
            prefix = f"{prefix}.{part}" if prefix else part
            cur_lr *= float(getattr(modules[prefix], "lr_scale", 1.0))
            min_rms = getattr(modules[prefix], "param_min_rms", min_rms)
        groups.setdefault((cur_lr, min_rms), []).append((name, param) if include_names else param)
    if not groups:
        raise ValueError("the model has no trainable parameters (requires_grad=False everywhere)")
    return [
        {"params": params, "lr": group_lr, **({} if min_rms is None else {"param_min_rms": min_rms})}
        for (group_lr, min_rms), params in groups.items()
    ]


def _as_torch_param_groups(params: Iterable) -> list:
    """Accept icefall's `{"named_params": [(name, p), ...]}` groups as well as torch's forms."""
    if isinstance(params, Tensor):
        raise TypeError("params must be an iterable of tensors or groups, not a single tensor")
    groups = list(params)
    return [
        {**{k: v for k, v in g.items() if k != "named_params"}, "params": list(g["named_params"])}
        if isinstance(g, dict) and "named_params" in g
        else g
        for g in groups
    ]


class ScaledAdam(torch.optim.Optimizer):
    """Adam with steps scaled by each tensor's RMS, learned tensor sizes and median-based clipping.

    Args:
      params: parameters, `(name, param)` tuples, or groups (torch's "params" or icefall's
        "named_params" key; each group may set its own "lr").
      lr: learning rate; the relative change of a non-scalar tensor per step is about lr * 0.1.
      clipping_scale: the clipping threshold is this times the median recent gradient norm;
        None disables clipping.
      betas: (momentum, second-moment decay).
      scalar_lr_scale: lr factor for one-element tensors and for the size update.
      eps: added to the Adam denominators.
      param_min_rms: below this RMS a tensor is not shrunk further (and it floors the step size).
      param_max_rms: the size update never grows a tensor's RMS beyond this.
      scalar_max: one-element parameters are clamped to [-scalar_max, scalar_max] after each update.
      size_update_period: steps between size updates (and param_rms refreshes).
      clipping_update_period: steps between threshold re-estimates; also the norm window length.
    """

    def __init__(
        self,
        params: Iterable,
        lr: float = 3e-2,
        clipping_scale: Optional[float] = None,
        betas: tuple[float, float] = (0.9, 0.98),
        scalar_lr_scale: float = 0.1,
        eps: float = 1.0e-8,
        param_min_rms: float = 1.0e-5,
        param_max_rms: float = 3.0,
        scalar_max: float = 10.0,
        size_update_period: int = 4,
        clipping_update_period: int = 100,
    ) -> None:
        if clipping_scale is not None and clipping_scale <= 0:
            raise ValueError(f"clipping_scale must be positive or None, got {clipping_scale}")
        if size_update_period < 1 or clipping_update_period < 1:
            raise ValueError("size_update_period and clipping_update_period must be >= 1")
        defaults = dict(
            lr=lr,
            betas=betas,
            scalar_lr_scale=scalar_lr_scale,
            eps=eps,
            param_min_rms=param_min_rms,
            param_max_rms=param_max_rms,
            scalar_max=scalar_max,
            size_update_period=size_update_period,
        )
        super().__init__(_as_torch_param_groups(params), defaults)
        self.clipping_scale = clipping_scale
        self.clipping_update_period = clipping_update_period
        # Global clipping state (not per parameter, so it is saved by our state_dict()).
        self._num_steps = 0
        self._recent_norms: deque[float] = deque(maxlen=clipping_update_period)
        self._threshold: Optional[float] = None
        self._num_clipped = 0

    @property
    def clipping_threshold(self) -> Optional[float]:
        """The current gradient-norm threshold, or None before it is first estimated (step 10)."""
        return self._threshold

    @torch.no_grad()
    def step(self, closure: Optional[Callable[[], Tensor]] = None) -> Optional[Tensor]:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()

        active = [(g, p) for g in self.param_groups for p in g["params"] if p.grad is not None]
        if not active:
            return loss
        for group, p in active:
            if p.grad.is_sparse:
                raise RuntimeError("ScaledAdam does not support sparse gradients")
            if not self.state[p]:
                self._init_state(group, p, self.state[p])

        grad_factor = self._clipping_factor(active)
        for group, p in active:
            self._update(group, p, self.state[p], grad_factor)
        self._num_steps += 1
        return loss

    def _init_state(self, group: dict, p: Tensor, state: dict) -> None:
        # The moments are float32 whatever the parameter's dtype, as in the reference.
        state["step"] = 0
        state["delta"] = torch.zeros_like(p, dtype=torch.float32)
        state["exp_avg_sq"] = torch.zeros_like(p, dtype=torch.float32)
        if p.numel() > 1:
            state["param_rms"] = _rms(p).to(torch.float32)
            state["scale_exp_avg_sq"] = torch.zeros_like(state["param_rms"])
            state["scale_grads"] = torch.zeros(
                group["size_update_period"], dtype=torch.float32, device=p.device
            )

    def _clipping_factor(self, active: list[tuple[dict, Tensor]]) -> float:
        """The factor (<= 1) the gradients of this step are multiplied by.

        norm² = Σ |grad ⊙ param_rms|² over tensors + Σ (scalar_lr_scale · grad)² over scalars,
        summed in float32 over all groups together (see README, "Deliberate differences").
        """
        if self.clipping_scale is None:
            return 1.0
        step = self._num_steps
        if step == 0:
            # Like the reference: the first step neither records a norm nor clips.
            return 1.0

        sumsq_per_param = []
        for group, p in active:
            if p.numel() == 1:
                sumsq_per_param.append((p.grad**2).sum() * group["scalar_lr_scale"] ** 2)
            else:
                sumsq_per_param.append(((p.grad * self.state[p]["param_rms"]) ** 2).sum())
        tot_sumsq = torch.zeros((), dtype=torch.float32, device=active[0][1].device)
        for sumsq in sumsq_per_param:
            tot_sumsq += sumsq.to(tot_sumsq.device)
        tot_norm = tot_sumsq.sqrt()
        norm = tot_norm.item()
        finite = math.isfinite(norm)
        if finite:
            self._recent_norms.append(norm)

        early = step in _EARLY_THRESHOLD_STEPS and step < self.clipping_update_period
        if early or step % self.clipping_update_period == 0:
            self._estimate_threshold(early)
        if not finite:
            logging.warning(f"Gradient norm is {norm} at step {step}: ignoring this gradient")
            return 0.0
        if self._threshold is None:
            return 1.0
        factor = min(1.0, (self._threshold / (tot_norm + 1.0e-20)).item())
        if factor < 1.0:
            self._num_clipped += 1
        if factor < 0.5:
            worst = active[int(torch.stack([s.to(tot_sumsq.device) for s in sumsq_per_param]).argmax())][1]
            worst_name = _param_names(self.param_groups).get(worst, "an unnamed parameter")
            logging.warning(
                f"Scaling gradients by {factor:.3e} at step {step}: norm={norm:.3e}, "
                f"threshold={self._threshold:.3e}; largest contribution from {worst_name}"
            )
        return factor

    def _estimate_threshold(self, early: bool) -> None:
        norms = sorted(self._recent_norms)
        if not norms:
            raise RuntimeError("no finite gradient norm in the clipping window: training diverged")
        n = len(norms)
        # Quartiles at sorted index (n // 4) * k, as the reference does; the "median" is k = 2.
        quartiles = [norms[min(n - 1, (n // 4) * k)] for k in range(5)]
        threshold = self.clipping_scale * quartiles[2] * (2.0 if early else 1.0)
        percent_clipped = 100.0 * self._num_clipped / n
        self._threshold = threshold
        self._num_clipped = 0
        logging.info(
            f"Gradient clipping: clipping_scale={self.clipping_scale}, grad-norm quartiles "
            + " ".join(f"{q:.3e}" for q in quartiles)
            + f", threshold={threshold:.3e}, percent-clipped={percent_clipped:.1f}"
        )

    def _update(self, group: dict, p: Tensor, state: dict, grad_factor: float) -> None:
        """One step of one tensor: its Adam direction (times its RMS, plus every
        `size_update_period` steps a size step along itself) enters the momentum `delta`
        with weight 1 - beta1, and `delta` is added to the tensor; scalars are clamped after."""
        if grad_factor == 0.0:
            grad = torch.zeros_like(p.grad)  # not grad * 0, which keeps inf/nan as nan
        else:
            grad = p.grad if grad_factor == 1.0 else p.grad * grad_factor
        step = state["step"]
        if p.numel() == 1:
            direction = self._adam_direction(group, grad, state, group["lr"] * group["scalar_lr_scale"])
        else:
            period = group["size_update_period"]
            state["scale_grads"][step % period] = (p * grad).sum()
            if step % period == period - 1:
                state["param_rms"].copy_(_rms(p))
            direction = self._adam_direction(group, grad, state, group["lr"])
            direction *= state["param_rms"].clamp(min=group["param_min_rms"])
            if step % period == period - 1 and step > 0:
                direction.add_(p * self._size_step(group, state))
        beta1 = group["betas"][0]
        state["delta"].mul_(beta1).add_(direction, alpha=1 - beta1)
        p.add_(state["delta"])
        if p.numel() == 1:
            p.clamp_(min=-group["scalar_max"], max=group["scalar_max"])
        state["step"] = step + 1

    def _adam_direction(self, group: dict, grad: Tensor, state: dict, lr: float) -> Tensor:
        """-lr * grad / (sqrt(v̂) + eps), v the decaying mean of grad²; v is bias-corrected only
        while the correction exceeds 1% (the reference's rule; no beta1 correction at all)."""
        beta2 = group["betas"][1]
        exp_avg_sq = state["exp_avg_sq"]
        exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        bias_correction2 = 1 - beta2 ** (state["step"] + 1)
        if bias_correction2 < 0.99:
            exp_avg_sq = exp_avg_sq * (1.0 / bias_correction2)
        return -lr * grad / exp_avg_sq.sqrt().add_(group["eps"])

    def _size_step(self, group: dict, state: dict) -> Tensor:
        """The relative change of the tensor's size, from the last `period` values of
        sum(p * grad): Adam on the log of the size with lr * scalar_lr_scale, limited to
        ±_MAX_SIZE_STEP, 0 (no shrinking) below param_min_rms, never growing past param_max_rms."""
        beta2 = group["betas"][1]
        scale_grads = state["scale_grads"]
        param_rms = state["param_rms"]
        period = scale_grads.numel()
        # One size update per `period` steps: decay the moment by beta2 ** period each time.
        beta2_period = beta2**period
        scale_exp_avg_sq = state["scale_exp_avg_sq"]
        scale_exp_avg_sq.mul_(beta2_period).add_((scale_grads**2).mean(), alpha=1 - beta2_period)
        num_size_updates = (state["step"] + 1) // period
        bias_correction2 = 1 - beta2_period**num_size_updates
        size_lr = group["lr"] * group["scalar_lr_scale"]
        scale_step = (
            -size_lr * bias_correction2**0.5 * scale_grads.sum() / (scale_exp_avg_sq.sqrt() + group["eps"])
        )
        scale_step = scale_step.masked_fill(param_rms < group["param_min_rms"], 0.0)
        scale_step = scale_step.clamp(min=-_MAX_SIZE_STEP, max=_MAX_SIZE_STEP)
        return torch.minimum(scale_step, (group["param_max_rms"] - param_rms) / param_rms)

    def state_dict(self) -> dict[str, Any]:
        """torch's optimizer state plus the global clipping state, under "clipping"."""
        state_dict = super().state_dict()
        state_dict["clipping"] = {
            "num_steps": self._num_steps,
            "recent_norms": list(self._recent_norms),
            "threshold": self._threshold,
            "num_clipped": self._num_clipped,
        }
        return state_dict

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        state_dict = dict(state_dict)
        clipping = state_dict.pop("clipping", None)
        super().load_state_dict(state_dict)
        if clipping is not None:
            self._num_steps = clipping["num_steps"]
            self._recent_norms = deque(clipping["recent_norms"], maxlen=self.clipping_update_period)
            self._threshold = clipping["threshold"]
            self._num_clipped = clipping["num_clipped"]


def _rms(p: Tensor) -> Tensor:
    """Root mean square of all elements of `p`, as a 0-dim tensor."""
    return (p**2).mean().sqrt()


def _param_names(param_groups: list[dict]) -> dict[Tensor, str]:
    return {
        p: name
        for group in param_groups
        for p, name in zip(group["params"], group.get("param_names", ()))
    }


class LRScheduler:
    """Base of the batch-and-epoch learning-rate schedules.

    Unlike torch's schedulers it is driven explicitly: `step_batch(b)` after each backward and
    `step_epoch(e)` at the start of each epoch; subclasses define `get_lr()`. Each param group's
    initial lr is kept in the group as "base_lr". As in the reference, constructing the schedule
    leaves the groups' lrs as they are: the first `step_batch` or `step_epoch` sets them.
    """

    def __init__(self, optimizer: torch.optim.Optimizer) -> None:
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise TypeError(f"{type(optimizer).__name__} is not an Optimizer")
        self.optimizer = optimizer
        for group in optimizer.param_groups:
            group.setdefault("base_lr", group["lr"])
        self.base_lrs = [group["base_lr"] for group in optimizer.param_groups]
        self.epoch = 0
        self.batch = 0

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "batch": self.batch}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.epoch = state_dict["epoch"]
        self.batch = state_dict["batch"]
        self._set_lrs()

    def get_last_lr(self) -> list[float]:
        return [group["lr"] for group in self.optimizer.param_groups]

    def get_lr(self) -> list[float]:
        raise NotImplementedError

    def step_batch(self, batch: Optional[int] = None) -> None:
        """Set the batch count (`batch_idx_train`), or advance it by one."""
        self.batch = self.batch + 1 if batch is None else batch
        self._set_lrs()

    def step_epoch(self, epoch: Optional[float] = None) -> None:
        """Set the epoch count (epoch - 1 at the start of an epoch), or advance it by one."""
        self.epoch = self.epoch + 1 if epoch is None else epoch
        self._set_lrs()

    def _set_lrs(self) -> None:
        for group, lr in zip(self.optimizer.param_groups, self.get_lr()):
            group["lr"] = lr


class Eden(LRScheduler):
    """lr = base_lr * ((b² + B²)/B²)^-0.25 * ((e² + E²)/E²)^-0.25 * warmup(b).

    b = batch count, e = epoch count, B = lr_batches, E = lr_epochs;
    warmup(b) rises linearly from warmup_start at b = 0 to 1 at b = warmup_batches.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        lr_batches: float,
        lr_epochs: float,
        warmup_batches: float = 500.0,
        warmup_start: float = 0.5,
    ) -> None:
        if not 0.0 <= warmup_start <= 1.0:
            raise ValueError(f"warmup_start must be in [0, 1], got {warmup_start}")
        self.lr_batches = lr_batches
        self.lr_epochs = lr_epochs
        self.warmup_batches = warmup_batches
        self.warmup_start = warmup_start
        super().__init__(optimizer)

    def get_lr(self) -> list[float]:
        batch_factor = ((self.batch**2 + self.lr_batches**2) / self.lr_batches**2) ** -0.25
        epoch_factor = ((self.epoch**2 + self.lr_epochs**2) / self.lr_epochs**2) ** -0.25
        if self.batch >= self.warmup_batches:
            warmup = 1.0
        else:
            progress = self.batch / self.warmup_batches
            warmup = self.warmup_start + (1.0 - self.warmup_start) * progress
        factor = batch_factor * epoch_factor
        return [base_lr * factor * warmup for base_lr in self.base_lrs]
