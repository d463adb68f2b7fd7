"""ScaledAdam, Eden and the GradScaler policy against icefall's recorded trajectories and hand computations."""
import copy
import dataclasses
import io
import logging
import math

import pytest
import torch
from optim_cases import CASES, CHECKPOINT_STEPS, LARGE_GRADIENT_STEPS, replay
from torch import nn

from zipformer.training.grad_scale import GradScaleStatus, GradScaleTooSmallError, adjust_grad_scale, create_grad_scaler
from zipformer.training.optim import Eden, ScaledAdam, get_parameter_groups_with_lrs

from conftest import TEST_DATA_DIR


def _rms(t: torch.Tensor) -> float:
    return t.pow(2).mean().sqrt().item()


# ---------------------------------------------------------------- icefall's trajectories

# Float32 rounding: the two optimizers sum the clipping norm in a different order (icefall
# stacks tensors of the same shape), which moves a parameter by an ulp or so now and then.
RTOL, ATOL = 1e-5, 1e-6


@pytest.fixture(scope="module")
def icefall_reference() -> dict:
    """tests/data/icefall_optim_reference.pt: icefall's parameters after each checkpointed step."""
    return torch.load(TEST_DATA_DIR / "icefall_optim_reference.pt", weights_only=True)["cases"]


def _our_threshold(optimizer: ScaledAdam):
    return optimizer.clipping_threshold


@pytest.mark.parametrize("case_name", list(CASES))
def test_replays_icefall_trajectory(case_name: str, icefall_reference: dict) -> None:
    """Same problems, same gradients: the same lrs, clipping thresholds and parameters after
    steps 1, 10, 50, 100, 200 and 300 as icefall's ScaledAdam + Eden."""
    recorded = icefall_reference[case_name]
    replayed = replay(CASES[case_name], ScaledAdam, Eden, _our_threshold)
    assert sorted(recorded) == sorted(replayed) == list(CHECKPOINT_STEPS)
    for step in CHECKPOINT_STEPS:
        want, got = recorded[step], replayed[step]
        assert got["lrs"] == pytest.approx(want["lrs"], rel=1e-12), f"lrs after step {step}"
        if want["threshold"] is None:
            assert got["threshold"] is None, f"threshold after step {step}"
        else:
            assert got["threshold"] == pytest.approx(want["threshold"], rel=RTOL), f"threshold after step {step}"
        for name, value in want["params"].items():
            torch.testing.assert_close(
                got["params"][name], value, rtol=RTOL, atol=ATOL,
                msg=lambda m, name=name, step=step: f"{name} after step {step}: {m}",
            )


def test_the_recorded_cases_exercise_every_branch(icefall_reference: dict, caplog: pytest.LogCaptureFixture) -> None:
    """What makes the replays discriminating: clipping acts, the scalars sit at scalar_max, a
    tensor is held at param_max_rms and the zero-initialised one moves off its floor."""
    caplog.set_level(logging.WARNING)
    replay(CASES["seed_lr"], ScaledAdam, Eden, _our_threshold)
    clipped = [r for r in caplog.records if r.getMessage().startswith("Scaling gradients")]
    assert len(clipped) == len(LARGE_GRADIENT_STEPS)
    large = icefall_reference["large_lr"][300]["params"]
    assert abs(large["gain"].item()) == CASES["large_lr"].optimizer["scalar_max"]
    # dec.weight is pulled towards RMS 5; the size update stops at param_max_rms (3), the
    # Adam part overshoots it a little.
    assert 3.0 < _rms(icefall_reference["seed_lr"][300]["params"]["dec.weight"]) < 3.4
    assert _rms(icefall_reference["groups"][300]["params"]["tiny.weight"]) > 1e-2


def test_clipping_is_one_norm_over_all_groups() -> None:
    """Splitting the parameters into groups with the same settings changes nothing, clipping
    included (icefall would clip each group on its own: README, "Deliberate differences")."""
    one_group = replay(CASES["seed_lr"], ScaledAdam, Eden, _our_threshold)
    names = tuple(one_group[1]["params"])
    split = dataclasses.replace(CASES["seed_lr"], groups=((names[:3], {}), (names[3:], {})))
    two_groups = replay(split, ScaledAdam, Eden, _our_threshold)
    for step in CHECKPOINT_STEPS:
        assert two_groups[step]["threshold"] == one_group[step]["threshold"]
        for name, value in one_group[step]["params"].items():
            assert torch.equal(two_groups[step]["params"][name], value), (name, step)


# ---------------------------------------------------------------- Eden


@pytest.mark.parametrize(
    "batch, epoch, expected",
    [
        (0, 0, 0.0225),
        (500, 0, 0.04495),
        (1000, 1, 0.04393),
        (2000, 3, 0.03854),
        (5000, 9, 0.02471),
        (10000, 19, 0.01484),
    ],
)
def test_eden_matches_hand_computed_values(batch: int, epoch: int, expected: float) -> None:
    opt = ScaledAdam([nn.Parameter(torch.ones(3))], lr=0.045)
    scheduler = Eden(opt, lr_batches=7500, lr_epochs=3.5)
    scheduler.step_epoch(epoch)
    scheduler.step_batch(batch)
    # The reference values are rounded to 4 significant digits.
    assert scheduler.get_last_lr()[0] == pytest.approx(expected, abs=5e-6)
    assert opt.param_groups[0]["lr"] == scheduler.get_last_lr()[0]


def test_eden_warmup_is_linear_and_applies_to_every_group() -> None:
    a, b = nn.Parameter(torch.ones(2)), nn.Parameter(torch.ones(2))
    opt = ScaledAdam([{"params": [a], "lr": 0.04}, {"params": [b], "lr": 0.01}], lr=0.04)
    scheduler = Eden(opt, lr_batches=1e12, lr_epochs=1e12)  # only the warm-up factor remains
    scheduler.step_batch(250)
    assert scheduler.get_last_lr() == pytest.approx([0.04 * 0.75, 0.01 * 0.75])
    scheduler.step_batch()
    assert scheduler.batch == 251


def test_eden_leaves_the_lrs_alone_until_its_first_step() -> None:
    """As icefall's: constructing Eden changes no lr; step_epoch or step_batch sets them."""
    opt = ScaledAdam([nn.Parameter(torch.ones(2))], lr=0.045)
    scheduler = Eden(opt, lr_batches=7500, lr_epochs=3.5)
    assert opt.param_groups[0]["lr"] == 0.045
    scheduler.step_epoch(0)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.045 * 0.5)
    with pytest.raises(ValueError, match="warmup_start"):
        Eden(opt, lr_batches=7500, lr_epochs=3.5, warmup_start=1.5)


def test_eden_state_dict_round_trip() -> None:
    opt = ScaledAdam([nn.Parameter(torch.ones(2))], lr=0.045)
    scheduler = Eden(opt, lr_batches=7500, lr_epochs=3.5)
    scheduler.step_epoch(4)
    scheduler.step_batch(3210)
    state = scheduler.state_dict()
    assert state == {"epoch": 4, "batch": 3210}

    opt2 = ScaledAdam([nn.Parameter(torch.ones(2))], lr=0.045)
    scheduler2 = Eden(opt2, lr_batches=7500, lr_epochs=3.5)
    scheduler2.load_state_dict(state)
    assert scheduler2.get_last_lr() == scheduler.get_last_lr()


# ---------------------------------------------------------------- ScaledAdam: the formulas


def test_single_and_second_step_match_hand_computation() -> None:
    """Adam part (scaled by param_rms, bias-corrected, momentum) and scalar part, by hand.
    float64 parameters, float32 optimizer state (as icefall's): equal to float32 rounding of the steps."""
    lr, eps = 0.1, 1e-8
    w0 = torch.tensor([[1.0, -2.0], [3.0, 0.5]], dtype=torch.float64)
    g1 = torch.tensor([[0.1, 0.2], [-0.3, 0.05]], dtype=torch.float64)
    g2 = torch.tensor([[-0.2, 0.1], [0.4, 0.3]], dtype=torch.float64)
    s0, sg1, sg2 = 0.7, 0.4, -0.1

    w = nn.Parameter(w0.clone())
    s = nn.Parameter(torch.tensor(s0, dtype=torch.float64))
    opt = ScaledAdam([w, s], lr=lr, eps=eps)

    w.grad, s.grad = g1.clone(), torch.tensor(sg1, dtype=torch.float64)
    opt.step()
    rms = math.sqrt((1 + 4 + 9 + 0.25) / 4)
    # Step 0: v = 0.02 g², bias correction 1 - 0.98 = 0.02, so v̂ = g².
    delta_w1 = -lr * 0.1 * rms * g1 / (g1.abs() + eps)
    torch.testing.assert_close(w.detach(), w0 + delta_w1, rtol=0, atol=1e-8)
    delta_s1 = -lr * 0.1 * 0.1 * sg1 / (abs(sg1) + eps)
    assert s.item() == pytest.approx(s0 + delta_s1, abs=1e-8)

    w.grad, s.grad = g2.clone(), torch.tensor(sg2, dtype=torch.float64)
    opt.step()
    # Step 1: v = 0.98·0.02·g1² + 0.02·g2², bias correction 1 - 0.98².
    v = 0.98 * 0.02 * g1**2 + 0.02 * g2**2
    bc = 1 - 0.98**2
    delta_w2 = 0.9 * delta_w1 - lr * 0.1 * rms * g2 / ((v / bc).sqrt() + eps)
    torch.testing.assert_close(w.detach(), w0 + delta_w1 + delta_w2, rtol=0, atol=1e-8)
    v_s = 0.98 * 0.02 * sg1**2 + 0.02 * sg2**2
    delta_s2 = 0.9 * delta_s1 - lr * 0.1 * 0.1 * sg2 / (math.sqrt(v_s / bc) + eps)
    assert s.item() == pytest.approx(s0 + delta_s1 + delta_s2, abs=1e-8)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16])
def test_the_optimizer_state_is_float32(dtype: torch.dtype) -> None:
    """icefall keeps every moment, the RMS and the size gradients in float32, whatever the dtype."""
    w = nn.Parameter(torch.ones(3, 4, dtype=dtype))
    s = nn.Parameter(torch.ones((), dtype=dtype))
    opt = ScaledAdam([w, s], lr=0.05)
    w.grad, s.grad = torch.ones_like(w), torch.ones_like(s)
    opt.step()
    for p in (w, s):
        tensors = {k: v for k, v in opt.state[p].items() if isinstance(v, torch.Tensor)}
        assert tensors and all(v.dtype == torch.float32 for v in tensors.values()), tensors
    assert w.dtype == dtype


def test_scalar_is_clamped_after_its_update() -> None:
    """As in icefall: p += delta, then p is clamped to [-scalar_max, scalar_max]."""
    step = 0.1 * 0.1 * 0.1 * 1.0 / (1.0 + 1e-8)  # lr * scalar_lr_scale * (1 - beta1) * g / |g|
    s = nn.Parameter(torch.tensor(12.0, dtype=torch.float64))
    opt = ScaledAdam([s], lr=0.1, scalar_max=10.0)
    s.grad = torch.tensor(1.0, dtype=torch.float64)
    opt.step()
    assert s.item() == 10.0  # 12 - step, clamped
    inside = nn.Parameter(torch.tensor(10.0 - step / 2, dtype=torch.float64))
    opt = ScaledAdam([inside], lr=0.1, scalar_max=10.0)
    inside.grad = torch.tensor(-1.0, dtype=torch.float64)
    opt.step()
    assert inside.item() == 10.0  # pushed across the limit, clamped back to it
    free = nn.Parameter(torch.tensor(5.0, dtype=torch.float64))
    opt = ScaledAdam([free], lr=0.1, scalar_max=10.0)
    free.grad = torch.tensor(1.0, dtype=torch.float64)
    opt.step()
    assert free.item() == pytest.approx(5.0 - step, abs=1e-8)


def test_size_update_pulls_rms_down_to_param_max_rms() -> None:
    """With zero gradients only the param_max_rms limit acts: at step 3 the size step is
    (max - rms) / rms and enters delta with weight 1 - beta1 = 0.1."""
    w0 = torch.randn(4, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    w0 *= 2.5 / _rms(w0)
    w = nn.Parameter(w0.clone())
    opt = ScaledAdam([w], lr=0.05, param_max_rms=1.0)
    for _ in range(3):
        w.grad = torch.zeros_like(w)
        opt.step()
    torch.testing.assert_close(w.detach(), w0, rtol=0, atol=0)
    w.grad = torch.zeros_like(w)
    opt.step()
    size_step = (1.0 - 2.5) / 2.5
    torch.testing.assert_close(w.detach(), w0 * (1 + 0.1 * size_step), rtol=1e-6, atol=0)
    w.grad = torch.zeros_like(w)
    opt.step()  # momentum only
    expected = w0 * (1 + 0.1 * size_step * (1 + 0.9))
    torch.testing.assert_close(w.detach(), expected, rtol=1e-6, atol=0)


def test_size_update_does_not_grow_rms_beyond_param_max_rms() -> None:
    """A gradient that keeps pushing the tensor to grow (loss = -|w|²/2): without the limit the
    RMS explodes; with it the RMS settles at the limit (the Adam part overshoots it by ~4·lr)."""

    def max_rms_over_run(param_max_rms: float) -> float:
        w0 = torch.randn(16, 16, generator=torch.Generator().manual_seed(1))
        w = nn.Parameter(w0 * (2.5 / _rms(w0)))
        opt = ScaledAdam([w], lr=0.01, param_max_rms=param_max_rms)
        worst = 0.0
        for _ in range(400):
            w.grad = -w.detach().clone()
            opt.step()
            worst = max(worst, _rms(w.detach()))
        return worst

    assert max_rms_over_run(1e9) > 100.0
    assert max_rms_over_run(3.0) < 3.0 * 1.1


# ---------------------------------------------------------------- clipping


def _feed(opt: ScaledAdam, params: list[nn.Parameter], grads: list[torch.Tensor]) -> None:
    for p, g in zip(params, grads):
        p.grad = g.clone()
    opt.step()


def test_clipping_threshold_follows_the_median_rule(caplog: pytest.LogCaptureFixture) -> None:
    """norm² = |g ⊙ param_rms|² + (0.1·g_scalar)²; threshold = 2·median of the norms so far,
    doubled at steps 10/20/40, then 2·median of the last 100 norms every 100 steps.
    The reference's median of n sorted norms is element (n // 4) * 2."""
    gen = torch.Generator().manual_seed(3)
    w = nn.Parameter(torch.randn(3, 5, generator=gen))
    s = nn.Parameter(torch.tensor(0.3))
    opt = ScaledAdam([w, s], lr=0.0, clipping_scale=2.0)  # lr 0: param_rms stays rms(w)
    direction = torch.randn(3, 5, generator=gen)
    factors = torch.rand(201, generator=gen) * 10 + 0.1
    scalar_grads = torch.randn(201, generator=gen)
    norms = [
        math.sqrt((_rms(w.detach()) * f * direction.norm().item()) ** 2 + (0.1 * sg) ** 2)
        for f, sg in zip(factors.tolist(), scalar_grads.tolist())
    ]

    def median(values: list[float]) -> float:
        return sorted(values)[(len(values) // 4) * 2]

    caplog.set_level(logging.INFO)
    thresholds = {}
    for step in range(201):
        _feed(opt, [w, s], [direction * factors[step], scalar_grads[step]])
        thresholds[step] = opt.clipping_threshold
    # Step 0 records no norm (as in the reference), so step k's window is norms[1..k].
    assert thresholds[9] is None
    assert thresholds[10] == pytest.approx(2.0 * 2.0 * median(norms[1:11]), rel=1e-5)
    assert thresholds[19] == thresholds[10]
    assert thresholds[20] == pytest.approx(2.0 * 2.0 * median(norms[1:21]), rel=1e-5)
    assert thresholds[40] == pytest.approx(2.0 * 2.0 * median(norms[1:41]), rel=1e-5)
    assert thresholds[99] == thresholds[40]
    assert thresholds[100] == pytest.approx(2.0 * median(norms[1:101]), rel=1e-5)
    assert thresholds[199] == thresholds[100]
    assert thresholds[200] == pytest.approx(2.0 * median(norms[101:201]), rel=1e-5)
    assert any(
        "clipping" in r.getMessage().lower() and r.levelno == logging.INFO for r in caplog.records
    )


def test_gradient_above_threshold_is_scaled_down_to_it() -> None:
    """A huge gradient must have exactly the effect of the same gradient scaled to the threshold."""
    history = [torch.tensor(v) for v in (1.0, -2.0, 0.5, 3.0, -1.0, 2.0, 1.5, -0.5, 0.7, 1.2, -2.5)]

    def run(last_grad: float, clipping_scale) -> tuple[float, ScaledAdam]:
        s = nn.Parameter(torch.tensor(0.5, dtype=torch.float64))
        opt = ScaledAdam([s], lr=0.1, clipping_scale=clipping_scale)
        for g in history:  # steps 0..10: the threshold is set at step 10
            _feed(opt, [s], [g.double()])
        _feed(opt, [s], [torch.tensor(last_grad, dtype=torch.float64)])
        return s.item(), opt

    clipped, opt = run(1000.0, 2.0)
    # For a scalar the clipping norm is 0.1·|g|.
    at_threshold, _ = run(opt.clipping_threshold / 0.1, 2.0)
    unclipped, _ = run(1000.0, None)
    assert clipped == pytest.approx(at_threshold, abs=1e-8)
    assert abs(clipped - unclipped) > 1e-4


def test_non_finite_gradient_is_ignored(caplog: pytest.LogCaptureFixture) -> None:
    w = nn.Parameter(torch.randn(3, 3, generator=torch.Generator().manual_seed(5)))
    opt = ScaledAdam([w], lr=0.05, clipping_scale=2.0)
    for _ in range(12):
        _feed(opt, [w], [torch.randn(3, 3)])
    before = w.detach().clone()
    bad = torch.ones(3, 3)
    bad[0, 0] = float("inf")
    _feed(opt, [w], [bad])
    # Only the momentum of earlier steps moves w; nothing non-finite gets in.
    assert torch.isfinite(w).all() and not torch.equal(w.detach(), before)
    assert "Gradient norm is inf" in caplog.text


# ---------------------------------------------------------------- groups, frozen, resume, convergence


class _Tree(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Sequential(nn.Linear(3, 3), nn.Linear(3, 3))
        self.b = nn.Linear(3, 2)


def test_parameter_groups_multiply_lr_scale_down_the_tree() -> None:
    model = _Tree()
    model.lr_scale = 2.0
    model.a.lr_scale = 0.5
    model.a[1].lr_scale = 0.1
    model.b.bias.requires_grad_(False)
    groups = get_parameter_groups_with_lrs(model, lr=1.0, include_names=True)
    lr_of = {name: g["lr"] for g in groups for name, _ in g["params"]}
    assert lr_of == pytest.approx(
        {"a.0.weight": 1.0, "a.0.bias": 1.0, "a.1.weight": 0.1, "a.1.bias": 0.1, "b.weight": 2.0}
    )
    plain = get_parameter_groups_with_lrs(model, lr=1.0, include_names=False)
    assert all(isinstance(p, torch.Tensor) for g in plain for p in g["params"])
    opt = ScaledAdam(groups, lr=1.0)
    assert opt.param_groups[0]["param_names"] == ["a.0.weight", "a.0.bias"]
    with pytest.raises(ValueError, match="no trainable parameters"):
        get_parameter_groups_with_lrs(nn.Linear(2, 2).requires_grad_(False), lr=1.0)


def test_a_zero_initialised_tensor_moves_only_with_a_step_floor() -> None:
    """ScaledAdam steps scale with a tensor's RMS: from zero, only a module's param_min_rms gets it going."""
    torch.manual_seed(0)
    moved = {}
    for floor in (None, 0.05):
        model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4))
        nn.init.zeros_(model[1].weight)
        if floor is not None:
            model[1].param_min_rms = floor
        groups = get_parameter_groups_with_lrs(model, lr=0.05)
        assert len(groups) == (1 if floor is None else 2)
        opt = ScaledAdam(groups, lr=0.05)
        x = torch.randn(16, 4)
        for _ in range(20):
            loss = ((model(x) - x) ** 2).sum()
            loss.backward()
            opt.step()
            opt.zero_grad()
        moved[floor] = model[1].weight.abs().max().item()
    assert moved[None] < 1e-4
    assert moved[0.05] > 1e-2


def test_accepts_icefall_named_params_groups() -> None:
    lin = nn.Linear(2, 2)
    opt = ScaledAdam([{"named_params": list(lin.named_parameters()), "lr": 0.3}], lr=0.1)
    assert opt.param_groups[0]["param_names"] == ["weight", "bias"]
    assert opt.param_groups[0]["lr"] == 0.3


@pytest.mark.parametrize("give_frozen_to_optimizer", [False, True])
def test_frozen_params_stay_bit_identical(give_frozen_to_optimizer: bool) -> None:
    torch.manual_seed(0)
    model = _Tree()
    model.a.requires_grad_(False)
    frozen_before = copy.deepcopy(model.a.state_dict())
    trainable_before = model.b.weight.detach().clone()
    if give_frozen_to_optimizer:
        opt = ScaledAdam(model.named_parameters(), lr=0.05, clipping_scale=2.0)
    else:
        opt = ScaledAdam(get_parameter_groups_with_lrs(model, lr=0.05), lr=0.05, clipping_scale=2.0)
    x = torch.randn(8, 3)
    for _ in range(12):
        opt.zero_grad()
        model.b(model.a(x)).pow(2).sum().backward()
        opt.step()
    for k, v in model.a.state_dict().items():
        assert torch.equal(v, frozen_before[k]), k
    assert not torch.equal(model.b.weight.detach(), trainable_before)


def _regression_problem() -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(7)
    x = torch.randn(128, 6, generator=gen)
    y = x @ torch.randn(6, 3, generator=gen) * 0.8
    return x, y


class _Regressor(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(6, 3, bias=False)
        self.gain = nn.Parameter(torch.tensor(0.5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x) * self.gain


def _train(model: nn.Module, opt: ScaledAdam, scheduler: Eden, steps: range, x, y) -> list[float]:
    losses = []
    for step in steps:
        opt.zero_grad()
        loss = (model(x) - y).pow(2).mean()
        loss.backward()
        scheduler.step_batch(step)
        opt.step()
        losses.append(loss.item())
    return losses


def test_minimises_a_regression_problem() -> None:
    torch.manual_seed(0)
    x, y = _regression_problem()
    model = _Regressor()
    opt = ScaledAdam(get_parameter_groups_with_lrs(model, lr=0.05), lr=0.05, clipping_scale=2.0)
    scheduler = Eden(opt, lr_batches=1000, lr_epochs=1, warmup_batches=10)
    losses = _train(model, opt, scheduler, range(300), x, y)
    assert losses[-1] < 0.01 * losses[0]


def test_state_dict_round_trip_gives_identical_updates() -> None:
    """Resume (via torch.save/torch.load) mid-run: the continued run must match bit for bit,
    across size updates and the step-40 and step-100 threshold re-estimates."""
    x, y = _regression_problem()

    def make() -> tuple[_Regressor, ScaledAdam, Eden]:
        model = _Regressor()
        opt = ScaledAdam(get_parameter_groups_with_lrs(model, lr=0.05), lr=0.05, clipping_scale=2.0)
        return model, opt, Eden(opt, lr_batches=100, lr_epochs=1, warmup_batches=10)

    torch.manual_seed(0)
    model_a, opt_a, sched_a = make()
    _train(model_a, opt_a, sched_a, range(23), x, y)
    buffer = io.BytesIO()
    saved = {"model": model_a.state_dict(), "opt": opt_a.state_dict(), "sched": sched_a.state_dict()}
    torch.save(saved, buffer)

    torch.manual_seed(1)
    model_b, opt_b, sched_b = make()
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)
    model_b.load_state_dict(saved["model"])
    opt_b.load_state_dict(saved["opt"])
    sched_b.load_state_dict(saved["sched"])
    assert opt_b.clipping_threshold == opt_a.clipping_threshold

    losses_a = _train(model_a, opt_a, sched_a, range(23, 110), x, y)
    losses_b = _train(model_b, opt_b, sched_b, range(23, 110), x, y)
    assert losses_a == losses_b
    for (name, pa), pb in zip(model_a.named_parameters(), model_b.parameters()):
        assert torch.equal(pa, pb), name
    assert opt_b.clipping_threshold == opt_a.clipping_threshold


# ---------------------------------------------------------------- GradScaler policy


def _used_scaler(scale: float) -> torch.amp.GradScaler:
    # An enabled scaler on CPU, only to exercise the policy; the recipe disables it off CUDA.
    scaler = torch.amp.GradScaler("cpu", init_scale=scale, enabled=True)
    scaler.scale(torch.ones(()))
    return scaler


@pytest.mark.parametrize(
    "scale, batch_idx, expected_scale",
    [
        (4.0, 100, 8.0),
        (4.0, 101, 4.0),
        (16.0, 100, 16.0),
        (16.0, 400, 32.0),
        (32.0, 400, 32.0),
        (0.5, 0, 1.0),
    ],
)
def test_grad_scale_growth_policy(scale: float, batch_idx: int, expected_scale: float) -> None:
    scaler = _used_scaler(scale)
    assert adjust_grad_scale(scaler, batch_idx) is GradScaleStatus.OK
    assert scaler.get_scale() == expected_scale


def test_grad_scale_collapse_saves_the_model_and_stops(tmp_path) -> None:
    model = nn.Linear(2, 2)
    status = adjust_grad_scale(_used_scaler(0.005), 200, tmp_path, 1, model)
    assert status is GradScaleStatus.SMALL
    first_warning = tmp_path / "bad-model-first-warning-1.pt"
    saved = torch.load(first_warning, weights_only=True)["model"]
    assert torch.equal(saved["weight"], model.weight)
    # Saved once only: a later warning keeps the first file.
    with torch.no_grad():
        model.weight.zero_()
    adjust_grad_scale(_used_scaler(0.005), 300, tmp_path, 1, model)
    kept = torch.load(first_warning, weights_only=True)["model"]["weight"]
    assert not torch.equal(kept, model.weight)

    with pytest.raises(GradScaleTooSmallError, match="diverged.*bad-model-1.pt"):
        adjust_grad_scale(_used_scaler(1e-6), 200, tmp_path, 1, model)
    assert (tmp_path / "bad-model-1.pt").is_file()
    # Only checked every 100 batches; without exp_dir/model nothing is saved.
    assert adjust_grad_scale(_used_scaler(1e-6), 201) is GradScaleStatus.OK
    with pytest.raises(GradScaleTooSmallError):
        adjust_grad_scale(_used_scaler(1e-6), 100)


def test_grad_scaler_is_disabled_on_cpu() -> None:
    scaler = create_grad_scaler(enabled=True, device_type="cpu")
    assert not scaler.is_enabled()
    assert adjust_grad_scale(scaler, 100) is GradScaleStatus.OK
    assert not create_grad_scaler(enabled=False, device_type="cuda").is_enabled()
