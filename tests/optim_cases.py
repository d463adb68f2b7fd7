"""Deterministic optimisation problems for replaying ScaledAdam + Eden step by step.

The same problems are run by tests/data/record_icefall_optim.py with icefall's optimizer (its
recording is tests/data/icefall_optim_reference.pt) and by tests/test_optim.py with this
project's, which must land on the same parameters. Only torch is imported here, so that the
recorder can load this file in a virtual environment that has icefall's code instead of ours.

Each problem: a handful of float32 tensors (matrices of the same and of different shapes, a 3-D
kernel, biases, a zero-initialised matrix, one-element parameters of shape () and (1,)), and at
step t the gradient of sum(curvature/2 * (p - target)²) plus seeded noise, 30 times larger at
a few steps so that gradient clipping acts. The training loop is icefall's: step_epoch(e) at the
start of an epoch, then per batch step_batch(t) (t counted from 1 over all epochs) before step().
"""
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import torch

NUM_STEPS = 300
CHECKPOINT_STEPS = (1, 10, 50, 100, 200, 300)
# Steps whose gradients are 30 times larger than usual: above 2x the median norm, so clipped.
LARGE_GRADIENT_STEPS = (15, 16, 45, 130, 131, 250)
LARGE_GRADIENT_FACTOR = 30.0

# name: (shape, init scale, target scale); init scale 0 means zeros.
_PARAMETERS = {
    "enc.weight": ((16, 12), 0.3, 0.4),
    "enc.bias": ((16,), 0.05, 0.2),
    "dec.weight": ((16, 12), 2.0, 5.0),  # pulled beyond param_max_rms (3.0)
    "conv.weight": ((4, 3, 5), 0.5, 0.3),
    "out.bias": ((12,), 0.1, 0.1),
    "tiny.weight": ((8, 4), 0.0, 0.2),  # zero-initialised: moves only with a step floor
    "gain": ((), 0.5, 8.0),  # pulled beyond scalar_max in the "large_lr" case
    "scale": ((1,), -0.2, -3.0),
}


@dataclass(frozen=True)
class Case:
    """One replay: optimizer and schedule settings, and how the parameters are grouped.

    groups: per group, the parameter names and the group's own settings (e.g. "lr",
    "param_min_rms"); None gives the optimizer one plain list of (name, parameter) pairs.
    epoch_starts: batch t -> the epoch index passed to step_epoch before batch t.
    """

    lr: float
    optimizer: dict[str, Any]
    eden: dict[str, Any]
    epoch_starts: dict[int, int]
    groups: Optional[tuple[tuple[tuple[str, ...], dict[str, Any]], ...]] = None
    seed: int = 0
    noise: float = 0.5
    curvature: dict[str, float] = field(default_factory=lambda: {"gain": 0.5, "scale": 2.0})


CASES = {
    # The seed's --base-lr and schedule; the epoch changes mid-run.
    "seed_lr": Case(
        lr=0.045,
        optimizer={"clipping_scale": 2.0},
        eden={"lr_batches": 7500, "lr_epochs": 3.5},
        epoch_starts={1: 0, 151: 1},
    ),
    # A large lr: size steps hit their +-10% limit, scalars their (small) scalar_max.
    "large_lr": Case(
        lr=0.5,
        optimizer={"clipping_scale": 2.0, "scalar_max": 1.0},
        eden={"lr_batches": 5000, "lr_epochs": 100, "warmup_batches": 50, "warmup_start": 0.2},
        epoch_starts={1: 0},
        seed=1,
    ),
    # Two groups with their own lr and step floor (no clipping, which the two optimizers
    # organise differently across groups: README.md, "Deliberate differences from icefall").
    "groups": Case(
        lr=0.05,
        optimizer={},
        eden={"lr_batches": 100, "lr_epochs": 2, "warmup_batches": 30},
        epoch_starts={1: 0, 101: 1, 201: 2},
        groups=(
            (("enc.weight", "enc.bias", "dec.weight", "conv.weight", "out.bias", "gain"), {"lr": 0.05}),
            (("tiny.weight", "scale"), {"lr": 0.2, "param_min_rms": 0.05}),
        ),
        seed=2,
    ),
}


def make_parameters(case: Case) -> tuple[dict[str, torch.nn.Parameter], dict[str, torch.Tensor]]:
    """The case's seeded initial parameters and the targets their gradients pull them to."""
    gen = torch.Generator().manual_seed(case.seed)
    params, targets = {}, {}
    for name, (shape, init_scale, target_scale) in _PARAMETERS.items():
        init = torch.randn(shape, generator=gen) * init_scale
        params[name] = torch.nn.Parameter(init)
        targets[name] = torch.randn(shape, generator=gen) * target_scale
    return params, targets


def param_groups(case: Case, params: dict[str, torch.nn.Parameter]) -> list:
    """The optimizer's first argument: (name, parameter) pairs, or icefall-style named groups."""
    if case.groups is None:
        return list(params.items())
    return [
        {"named_params": [(name, params[name]) for name in names], **settings}
        for names, settings in case.groups
    ]


def set_gradients(case: Case, step: int, params: dict[str, torch.nn.Parameter], targets: dict) -> None:
    """p.grad = curvature * (p - target) + noise, the noise seeded by (case, step)."""
    gen = torch.Generator().manual_seed(1000 * case.seed + step)
    factor = LARGE_GRADIENT_FACTOR if step in LARGE_GRADIENT_STEPS else 1.0
    for name, p in params.items():
        noise = torch.randn(p.shape, generator=gen) * case.noise
        curvature = case.curvature.get(name, 1.0)
        p.grad = (curvature * (p.detach() - targets[name]) + noise) * factor


def replay(
    case: Case,
    optimizer_class: type,
    scheduler_class: type,
    threshold_of: Callable[[Any], Optional[float]],
) -> dict[int, dict[str, Any]]:
    """Run the case; at each of CHECKPOINT_STEPS (after that many steps) record the parameters,
    the groups' lrs and the clipping threshold (None before it is first estimated)."""
    params, targets = make_parameters(case)
    optimizer = optimizer_class(param_groups(case, params), lr=case.lr, **case.optimizer)
    scheduler = scheduler_class(optimizer, **case.eden)
    checkpoints = {}
    for step in range(1, NUM_STEPS + 1):
        if step in case.epoch_starts:
            scheduler.step_epoch(case.epoch_starts[step])
        set_gradients(case, step, params, targets)
        scheduler.step_batch(step)
        optimizer.step()
        optimizer.zero_grad()
        if step in CHECKPOINT_STEPS:
            checkpoints[step] = {
                "params": {name: p.detach().clone() for name, p in params.items()},
                "lrs": [group["lr"] for group in optimizer.param_groups],
                "threshold": threshold_of(optimizer),
            }
    return checkpoints
