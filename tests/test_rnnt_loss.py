"""Tests of the pure-PyTorch pruned RNN-T loss against k2's own outputs and the definition."""
import importlib.util
import math
from typing import Optional, Tuple

import pytest
import torch

from zipformer.loss.mutual_information import mutual_information_recursion
from zipformer.loss.rnnt_loss import (
    do_rnnt_pruning,
    get_rnnt_logprobs_smoothed,
    get_rnnt_prune_ranges,
    rnnt_loss,
    rnnt_loss_pruned,
    rnnt_loss_simple,
    rnnt_loss_smoothed,
)

NEG_INF = float("-inf")




def joiner(am: torch.Tensor, lm: torch.Tensor) -> torch.Tensor:
    """The reference data's joiner: logits = tanh(am + lm) * 3."""
    return torch.tanh(am + lm) * 3


def full_logits(am: torch.Tensor, lm: torch.Tensor) -> torch.Tensor:
    return joiner(am.unsqueeze(2), lm.unsqueeze(1))


def make_boundary(s_len, t_len) -> torch.Tensor:
    s_len, t_len = torch.tensor(s_len), torch.tensor(t_len)
    zeros = torch.zeros_like(s_len)
    return torch.stack([zeros, zeros, s_len, t_len], dim=1)


def random_case(B: int, S: int, T: int, V: int, seed: int, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    am = torch.randn(B, T, V, generator=g, dtype=dtype)
    lm = torch.randn(B, S + 1, V, generator=g, dtype=dtype)
    symbols = torch.randint(1, V, (B, S), generator=g)
    return am, lm, symbols


# ------------------------------------------------------------------------------------------
# k2's own outputs (tests/data/pruned_rnnt_reference.pt, computed with k2 1.23)
# ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def reference_cases(reference_data):
    data = torch.load(reference_data / "pruned_rnnt_reference.pt", weights_only=True)
    return data["cases"]


def assert_close_f32(actual: torch.Tensor, expected: torch.Tensor, ulps: float = 2.0) -> None:
    """Within a few float32 ulps of the largest magnitude involved."""
    scale = expected.abs().max().clamp(min=1.0)
    atol = ulps * torch.finfo(torch.float32).eps * scale.item()
    torch.testing.assert_close(actual, expected, rtol=0.0, atol=atol)


@pytest.mark.parametrize("case_index", [0, 1, 2, 3])
def test_reproduces_k2_reference(reference_cases, case_index):
    case = reference_cases[case_index]
    am = case["am"].clone().requires_grad_()
    lm = case["lm"].clone().requires_grad_()
    symbols, boundary, s_range = case["symbols"], case["boundary"], case["s_range"]

    smoothed, (px_grad, py_grad) = rnnt_loss_smoothed(
        lm=lm, am=am, symbols=symbols, termination_symbol=0,
        lm_only_scale=case["lm_only_scale"], am_only_scale=case["am_only_scale"],
        boundary=boundary, reduction="none", return_grad=True,
    )
    simple = rnnt_loss_simple(lm.detach(), am.detach(), symbols, 0, boundary, reduction="none")
    assert_close_f32(smoothed.detach(), case["smoothed_loss"])
    assert_close_f32(simple, case["simple_loss"])
    torch.testing.assert_close(px_grad, case["px_grad"], rtol=0.0, atol=2e-5)
    torch.testing.assert_close(py_grad, case["py_grad"], rtol=0.0, atol=2e-5)

    # Ranges are a deterministic function of the occupations: exact from k2's own ones, and
    # exact end to end from ours.
    from_k2 = get_rnnt_prune_ranges(case["px_grad"], case["py_grad"], boundary, s_range)
    assert torch.equal(from_k2, case["ranges"])
    ranges = get_rnnt_prune_ranges(px_grad, py_grad, boundary, s_range)
    assert torch.equal(ranges, case["ranges"])

    am_pruned, lm_pruned = do_rnnt_pruning(am, lm, ranges)
    pruned = rnnt_loss_pruned(
        logits=joiner(am_pruned, lm_pruned), symbols=symbols, ranges=ranges,
        termination_symbol=0, boundary=boundary, reduction="none",
    )
    full = rnnt_loss(full_logits(am.detach(), lm.detach()), symbols, 0, boundary, reduction="none")
    assert_close_f32(pruned.detach(), case["pruned_loss"])
    assert_close_f32(full, case["full_loss"])

    (0.5 * smoothed.sum() + pruned.sum()).backward()
    assert_close_f32(am.grad, case["am_grad"], ulps=10)
    assert_close_f32(lm.grad, case["lm_grad"], ulps=10)


# ------------------------------------------------------------------------------------------
# A deterministic case checked against k2's values: every variant, bit for bit
# ------------------------------------------------------------------------------------------


def det(shape, a: float, b: float) -> torch.Tensor:
    i = torch.arange(math.prod(shape), dtype=torch.float64)
    return (torch.sin(i * a) * b + torch.cos(i * 0.37 * a) * 0.5).float().reshape(shape)


@pytest.fixture
def checklist():
    B, T, S, V = 2, 7, 3, 5
    am = det((B, T, V), 0.113, 1.3)
    lm = det((B, S + 1, V), 0.071, 0.9)
    symbols = torch.tensor([[1, 2, 3], [4, 1, 0]])
    boundary = torch.tensor([[0, 0, 3, 7], [0, 0, 2, 5]])
    return am, lm, symbols, boundary


def test_checklist_simple_and_smoothed_variants(checklist):
    am, lm, symbols, boundary = checklist

    def smoothed(**kw):
        kw.setdefault("boundary", boundary)
        kw.setdefault("reduction", "none")
        return rnnt_loss_smoothed(lm, am, symbols, 0, **kw).tolist()

    assert rnnt_loss_simple(lm, am, symbols, 0, boundary, reduction="none").tolist() == [
        12.098749160766602, 8.678898811340332]
    assert smoothed(lm_only_scale=0.25, am_only_scale=0.0) == [
        12.141692161560059, 8.569244384765625]
    assert smoothed(lm_only_scale=0.25, am_only_scale=0.0, reduction="mean") == 10.35546875
    assert smoothed(lm_only_scale=0.25, am_only_scale=0.0, reduction="sum") == 20.7109375
    assert smoothed(lm_only_scale=0.25, am_only_scale=0.0, boundary=None) == [
        12.141692161560059, 11.641484260559082]
    assert smoothed(lm_only_scale=0.1, am_only_scale=0.1) == [12.060300827026367, 8.672999382019043]
    assert smoothed(lm_only_scale=0.25, am_only_scale=0.0, delay_penalty=0.5) == [
        10.273179054260254, 7.972257137298584]
    assert smoothed(lm_only_scale=0.25, am_only_scale=0.0, rnnt_type="modified") == [
        8.082306861877441, 5.823918342590332]
    assert smoothed(lm_only_scale=0.25, am_only_scale=0.0, rnnt_type="constrained") == [
        13.076584815979004, 9.01563835144043]


def test_checklist_occupations_and_logprobs(checklist):
    am, lm, symbols, boundary = checklist
    _, (px_grad, py_grad) = rnnt_loss_smoothed(
        lm, am, symbols, 0, 0.25, 0.0, boundary, reduction="none", return_grad=True
    )
    expected_px_b1_s1 = [0.076674, 0.146621, 0.207173, 0.259718, 0.309815, 0, 0, 0]
    expected_py_b0_s3 = [0.017362, 0.066005, 0.155138, 0.288832, 0.469184, 0.701976, 1.0]
    torch.testing.assert_close(px_grad[1, 1], torch.tensor(expected_px_b1_s1), atol=1e-6, rtol=0)
    torch.testing.assert_close(py_grad[0, 3], torch.tensor(expected_py_b0_s3), atol=1e-6, rtol=0)
    assert torch.all(px_grad[1, 2] == 0) and torch.all(py_grad[1, 3] == 0)

    px, py = get_rnnt_logprobs_smoothed(lm, am, symbols, 0, 0.25, 0.0, boundary)
    # Column T_b = 5 and column T = 7 are -inf; column 6 is finite padding, never read.
    expected_px_b1_s0 = [-1.76662, -1.63884, -1.52522, -1.45647, -1.44602, NEG_INF, -1.58887]
    torch.testing.assert_close(px[1, 0, :7], torch.tensor(expected_px_b1_s0), atol=1e-5, rtol=0)
    assert px[1, 0, 7] == NEG_INF
    torch.testing.assert_close(
        py[0, 0],
        torch.tensor([-1.98030, -1.90883, -1.78552, -1.65292, -1.54961, -1.49934, -1.51156]),
        atol=1e-5, rtol=0,
    )


S_RANGE_2_LOSS = [13.929183959960938, 9.983552932739258]


@pytest.mark.parametrize(
    "s_range, starts, pruned_loss",
    [
        (1, [[0, 0, 0, 1, 2, 2, 2], [0, 0, 1, 1, 1, 1, 1]], S_RANGE_2_LOSS),
        (2, [[0, 0, 0, 1, 2, 2, 2], [0, 0, 1, 1, 1, 1, 1]], S_RANGE_2_LOSS),
        (3, [[0, 0, 0, 1, 1, 1, 1], [0] * 7], [12.107501983642578, 8.802824974060059]),
        (4, [[0] * 7, [0] * 7], [11.656214714050293, 8.802824974060059]),
    ],
)
def test_checklist_ranges_and_pruned_loss(checklist, s_range, starts, pruned_loss):
    am, lm, symbols, boundary = checklist
    _, (px_grad, py_grad) = rnnt_loss_smoothed(
        lm, am, symbols, 0, 0.25, 0.0, boundary, reduction="none", return_grad=True
    )
    ranges = get_rnnt_prune_ranges(px_grad, py_grad, boundary, s_range)
    R = max(s_range, 2)  # s_range 1 is raised to 2: 3 symbols need (R-1) * T_b >= S_b
    assert ranges.shape == (2, 7, R)
    assert ranges[:, :, 0].tolist() == starts
    assert torch.equal(ranges - ranges[:, :, :1], torch.arange(R).expand(2, 7, R))
    logits = joiner(*do_rnnt_pruning(am, lm, ranges))
    assert rnnt_loss_pruned(logits, symbols, ranges, 0, boundary, reduction="none").tolist() == (
        pruned_loss
    )
    full = rnnt_loss(full_logits(am, lm), symbols, 0, boundary, reduction="none")
    assert full.tolist() == [11.656214714050293, 8.802824974060059]


def test_checklist_modified_ranges_and_pruned_loss(checklist):
    am, lm, symbols, boundary = checklist
    _, (px_grad, py_grad) = rnnt_loss_smoothed(
        lm, am, symbols, 0, 0.25, 0.0, boundary, rnnt_type="modified", reduction="none",
        return_grad=True,
    )
    ranges = get_rnnt_prune_ranges(px_grad, py_grad, boundary, 2)
    assert ranges[:, :, 0].tolist() == [[0, 0, 0, 1, 1, 2, 2], [0, 0, 0, 1, 1, 1, 1]]
    logits = joiner(*do_rnnt_pruning(am, lm, ranges))
    loss = rnnt_loss_pruned(logits, symbols, ranges, 0, boundary, "modified", reduction="none")
    assert loss.tolist() == [8.323943138122559, 6.235836505889893]


@pytest.mark.parametrize(
    "s_range, starts",
    [(2, [0, 0, 1, 2, 2, 3]), (3, [0, 0, 1, 1, 1, 2])],
)
def test_prune_ranges_hand_made_occupations_break_ties_to_first(s_range, starts):
    py_grad = torch.tensor(
        [
            [1.0, 0.5, 0.0, 0.0, 0.0, 0.0],
            [0.0, 0.5, 0.4, 0.0, 0.0, 0.0],
            [0.0, 0.0, 0.4, 0.3, 0.0, 0.0],
            [0.0, 0.0, 0.2, 0.7, 1.0, 1.0],
            [0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
        ]
    ).unsqueeze(0)
    px_grad = torch.zeros(1, 4, 7)
    px_grad[0, 0, 1], px_grad[0, 1, 1], px_grad[0, 2, 2], px_grad[0, 2, 3] = 0.5, 0.4, 0.2, 0.3
    ranges = get_rnnt_prune_ranges(px_grad, py_grad, make_boundary([4], [6]), s_range)
    assert ranges[0, :, 0].tolist() == starts


# ------------------------------------------------------------------------------------------
# The recursion against its definition, and gradients
# ------------------------------------------------------------------------------------------


def naive_recursion(px: torch.Tensor, py: torch.Tensor, boundary: torch.Tensor) -> torch.Tensor:
    """Cell-by-cell float64 recursion of the definition, differentiable through autograd."""
    regular = px.shape[2] == py.shape[2] + 1
    scores = []
    for b, (sb, tb, se, te) in enumerate(boundary.tolist()):
        p = {(sb, tb): px.new_zeros(())}  # unreachable cells stay absent
        for s in range(sb, se + 1):
            for t in range(tb, te + 1):
                terms = []
                if (s, t - 1) in p:
                    terms.append(p[(s, t - 1)] + py[b, s, t - 1])
                x_pred = (s - 1, t) if regular else (s - 1, t - 1)
                if x_pred in p:
                    terms.append(p[x_pred] + px[b, x_pred[0], x_pred[1]])
                if terms and (s, t) != (sb, tb):
                    p[(s, t)] = torch.logsumexp(torch.stack(terms), 0)
        scores.append(p.get((se, te), px.new_tensor(NEG_INF)))
    return torch.stack(scores)


@pytest.mark.parametrize("rnnt_type", ["regular", "modified"])
def test_recursion_matches_definition_with_begins_and_ends(rnnt_type):
    g = torch.Generator().manual_seed(5)
    B, S, T = 4, 4, 6
    T1 = T + 1 if rnnt_type == "regular" else T
    px = torch.randn(B, S, T1, generator=g, dtype=torch.float64).requires_grad_()
    py = torch.randn(B, S + 1, T, generator=g, dtype=torch.float64).requires_grad_()
    boundary = torch.tensor([[0, 0, 4, 6], [1, 2, 3, 5], [0, 1, 2, 6], [2, 0, 4, 4]])
    scores, (px_grad, py_grad) = mutual_information_recursion(px, py, boundary, return_grad=True)
    expected = naive_recursion(px, py, boundary)
    torch.testing.assert_close(scores, expected.detach(), rtol=1e-12, atol=1e-12)
    exp_px_grad, exp_py_grad = torch.autograd.grad(expected.sum(), [px, py])
    torch.testing.assert_close(px_grad, exp_px_grad, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(py_grad, exp_py_grad, rtol=1e-10, atol=1e-12)


def test_recursion_keeps_no_graph_and_scales_by_upstream_gradient():
    px = torch.randn(2, 3, 6).requires_grad_()
    py = torch.randn(2, 4, 5).requires_grad_()
    scores, (px_grad, py_grad) = mutual_information_recursion(px, py, return_grad=True)
    # One custom node straight to the inputs: no per-cell graph was recorded.
    assert {type(f).__name__ for f, _ in scores.grad_fn.next_functions} == {"AccumulateGrad"}
    assert not px_grad.requires_grad
    (scores * torch.tensor([2.0, -3.0])).sum().backward()
    torch.testing.assert_close(px.grad, px_grad * torch.tensor([2.0, -3.0]).view(2, 1, 1))
    torch.testing.assert_close(py.grad, py_grad * torch.tensor([2.0, -3.0]).view(2, 1, 1))


@pytest.mark.parametrize("rnnt_type", ["regular", "modified"])
def test_gradcheck_recursion(rnnt_type):
    g = torch.Generator().manual_seed(7)
    B, S, T = 2, 3, 4
    T1 = T + 1 if rnnt_type == "regular" else T
    px = torch.randn(B, S, T1, generator=g, dtype=torch.float64).requires_grad_()
    py = torch.randn(B, S + 1, T, generator=g, dtype=torch.float64).requires_grad_()
    boundary = make_boundary([3, 2], [4, 3])
    def scores(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return mutual_information_recursion(x, y, boundary)

    assert torch.autograd.gradcheck(scores, (px, py))


def test_gradcheck_losses():
    am, lm, symbols = random_case(B=2, S=3, T=5, V=4, seed=3, dtype=torch.float64)
    am.requires_grad_()
    lm.requires_grad_()
    boundary = make_boundary([3, 2], [5, 4])

    def smoothed(lm_, am_):
        return rnnt_loss_smoothed(lm_, am_, symbols, 0, 0.25, 0.1, boundary, reduction="none")

    assert torch.autograd.gradcheck(smoothed, (lm, am))
    ranges = get_rnnt_prune_ranges(
        *rnnt_loss_smoothed(lm, am, symbols, 0, boundary=boundary, return_grad=True)[1], boundary, 2
    )
    pruned_logits = joiner(*do_rnnt_pruning(am, lm, ranges)).detach().requires_grad_()
    assert torch.autograd.gradcheck(
        lambda x: rnnt_loss_pruned(x, symbols, ranges, 0, boundary, reduction="none"),
        (pruned_logits,),
    )
    logits = full_logits(am, lm).detach().requires_grad_()
    assert torch.autograd.gradcheck(
        lambda x: rnnt_loss(x, symbols, 0, boundary, reduction="sum"), (logits,)
    )


# ------------------------------------------------------------------------------------------
# Properties
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("rnnt_type", ["regular", "modified", "constrained"])
def test_pruned_with_full_range_equals_full_loss(rnnt_type):
    B, S, T, V = 3, 5, 9, 7
    am, lm, symbols = random_case(B, S, T, V, seed=11)
    boundary = make_boundary([5, 3, 0], [9, 6, 4])
    _, (px_grad, py_grad) = rnnt_loss_smoothed(
        lm, am, symbols, 0, 0.25, 0.0, boundary, rnnt_type, return_grad=True
    )
    ranges = get_rnnt_prune_ranges(px_grad, py_grad, boundary, s_range=S + 1)
    assert ranges.shape == (B, T, S + 1) and torch.all(ranges[:, :, 0] == 0)
    am.requires_grad_()
    lm.requires_grad_()
    pruned = rnnt_loss_pruned(
        joiner(*do_rnnt_pruning(am, lm, ranges)), symbols, ranges, 0, boundary, rnnt_type,
        reduction="none",
    )
    full = rnnt_loss(full_logits(am, lm), symbols, 0, boundary, rnnt_type, reduction="none")
    torch.testing.assert_close(pruned, full, rtol=1e-6, atol=0)
    pruned_grads = torch.autograd.grad(pruned.sum(), [am, lm])
    full_grads = torch.autograd.grad(full.sum(), [am, lm])
    for a, b in zip(pruned_grads, full_grads):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_padded_batch_equals_each_sequence_alone():
    B, S, T, V = 3, 4, 8, 6
    am, lm, symbols = random_case(B, S, T, V, seed=13)
    s_len, t_len = [4, 2, 0], [8, 5, 3]
    boundary = make_boundary(s_len, t_len)
    am.requires_grad_()
    lm.requires_grad_()
    simple = rnnt_loss_simple(lm, am, symbols, 0, boundary, reduction="none")
    full = rnnt_loss(full_logits(am, lm), symbols, 0, boundary, reduction="none")
    simple_am_grad, simple_lm_grad = torch.autograd.grad(simple.sum(), [am, lm])
    for b in range(B):
        sb, tb = s_len[b], t_len[b]
        am_b = am[b : b + 1, :tb].detach().requires_grad_()
        lm_b = lm[b : b + 1, : sb + 1].detach().requires_grad_()
        alone = rnnt_loss_simple(lm_b, am_b, symbols[b : b + 1, :sb], 0, reduction="none")
        alone_full = rnnt_loss(
            full_logits(am_b, lm_b), symbols[b : b + 1, :sb], 0, reduction="none"
        )
        torch.testing.assert_close(simple[b : b + 1], alone, rtol=1e-6, atol=0)
        torch.testing.assert_close(full[b : b + 1], alone_full, rtol=1e-6, atol=0)
        am_grad, lm_grad = torch.autograd.grad(alone.sum(), [am_b, lm_b])
        torch.testing.assert_close(simple_am_grad[b, :tb], am_grad[0], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(simple_lm_grad[b, : sb + 1], lm_grad[0], rtol=1e-5, atol=1e-6)
        assert torch.all(simple_am_grad[b, tb:] == 0)
        assert torch.all(simple_lm_grad[b, sb + 1 :] == 0)


def test_nan_in_padding_never_leaks():
    B, S, T = 3, 3, 6
    g = torch.Generator().manual_seed(17)
    px = torch.randn(B, S, T + 1, generator=g)
    py = torch.randn(B, S + 1, T, generator=g)
    # Row 2 starts at (s, t) = (1, 2): arcs before the begins feed the region's first cells.
    boundary = torch.tensor([[0, 0, 3, 6], [0, 0, 1, 3], [1, 2, 3, 5]])
    clean = mutual_information_recursion(px, py, boundary)
    px[1, 1:], px[1, :, 4:] = float("nan"), float("nan")  # rows >= S_b + 1 / beyond T_b
    py[1, 2:], py[1, :, 3:] = float("nan"), float("inf")
    px[2, 0], py[2, :, :2], py[2, 0] = float("nan"), float("nan"), float("inf")  # before begins
    px.requires_grad_()
    py.requires_grad_()
    scores, (px_grad, py_grad) = mutual_information_recursion(px, py, boundary, return_grad=True)
    assert torch.equal(scores.detach(), clean)
    scores.sum().backward()
    assert torch.isfinite(px.grad).all() and torch.isfinite(py.grad).all()
    assert torch.all(px_grad[1, 1:] == 0) and torch.all(py_grad[1, :, 3:] == 0)
    assert torch.all(px_grad[2, 0] == 0) and torch.all(py_grad[2, :, :2] == 0)


def test_smoothed_with_zero_combined_scale_stays_finite_on_padded_batch():
    # lm_only_scale + am_only_scale = 1 gives 0 * -inf in k2's column T; it must not reach the loss.
    am, lm, symbols = random_case(B=2, S=3, T=6, V=5, seed=19)
    am.requires_grad_()
    lm.requires_grad_()
    boundary = make_boundary([3, 2], [6, 4])
    loss = rnnt_loss_smoothed(lm, am, symbols, 0, 0.25, 0.75, boundary, reduction="none")
    loss_no_boundary = rnnt_loss_smoothed(lm, am, symbols, 0, 0.25, 0.75, reduction="none")
    assert torch.isfinite(loss).all() and torch.isfinite(loss_no_boundary).all()
    (loss.sum() + loss_no_boundary.sum()).backward()
    assert torch.isfinite(am.grad).all() and torch.isfinite(lm.grad).all()


def test_pipeline_gradients_finite_on_hard_batch():
    """Short sequences, an empty transcript, a sequence with more symbols than frames, very
    peaked and -inf inputs: occupations stay consistent and every gradient is finite."""
    B, S, T, V = 4, 6, 10, 8
    am, lm, symbols = random_case(B, S, T, V, seed=23)
    am[0] *= 60.0  # extremely peaked
    lm[1] *= 60.0
    am[2, :, 3] = NEG_INF  # a symbol that is never emitted elsewhere; blank stays finite
    symbols[2] = torch.tensor([1, 2, 4, 5, 6, 7])
    s_len, t_len = [6, 0, 3, 6], [10, 7, 4, 3]  # sequence 3: 6 symbols in 3 frames
    boundary = make_boundary(s_len, t_len)
    am.requires_grad_()
    lm.requires_grad_()

    simple, (px_grad, py_grad) = rnnt_loss_smoothed(
        lm, am, symbols, 0, 0.25, 0.0, boundary, reduction="sum", return_grad=True
    )
    for b in range(B):
        frame_mass = py_grad[b, :, : t_len[b]].sum(0)
        symbol_mass = px_grad[b, : s_len[b]].sum(1)
        torch.testing.assert_close(frame_mass, torch.ones_like(frame_mass), atol=1e-4, rtol=0)
        torch.testing.assert_close(symbol_mass, torch.ones_like(symbol_mass), atol=1e-4, rtol=0)
    ranges = get_rnnt_prune_ranges(px_grad, py_grad, boundary, s_range=2)
    assert ranges.shape[2] == 3  # raised so that 6 symbols fit into 3 frames
    logits = joiner(*do_rnnt_pruning(am, lm, ranges))
    pruned = rnnt_loss_pruned(logits, symbols, ranges, 0, boundary, reduction="none")
    assert torch.isfinite(simple) and torch.isfinite(pruned).all()
    (0.5 * simple + pruned.sum()).backward()
    assert torch.isfinite(am.grad).all() and torch.isfinite(lm.grad).all()


def test_empty_transcript_and_no_frames():
    py = torch.randn(3, 3, 4)
    px = torch.randn(3, 2, 5)
    px[2, :, 0] = NEG_INF  # what the builders put in column T_b = 0
    boundary = make_boundary([0, 0, 2], [4, 0, 0])
    scores, (px_grad, py_grad) = mutual_information_recursion(px, py, boundary, return_grad=True)
    torch.testing.assert_close(scores[0], py[0, 0].sum())  # S_b = 0: blanks only
    assert scores[1] == 0.0  # S_b = T_b = 0: the empty path
    assert scores[2] == NEG_INF  # symbols but no frame: no path
    assert torch.equal(py_grad[0, 0], torch.ones(4)) and torch.all(px_grad[0] == 0)
    assert torch.isfinite(px_grad).all() and torch.isfinite(py_grad).all()


def test_loss_without_any_path_is_inf_with_finite_gradients():
    am, lm, symbols = random_case(B=2, S=2, T=3, V=4, seed=41)
    am.requires_grad_()
    lm.requires_grad_()
    loss = rnnt_loss_simple(lm, am, symbols, 0, make_boundary([2, 2], [3, 0]), reduction="none")
    assert torch.isfinite(loss[0]) and loss[1] == float("inf")
    loss[0].backward()
    assert torch.isfinite(am.grad).all() and torch.isfinite(lm.grad).all()


def test_float64_agrees_with_float32():
    am, lm, symbols = random_case(B=2, S=4, T=7, V=6, seed=29)
    boundary = make_boundary([4, 3], [7, 5])
    loss32 = rnnt_loss_smoothed(lm, am, symbols, 0, 0.25, 0.0, boundary, reduction="none")
    loss64 = rnnt_loss_smoothed(
        lm.double(), am.double(), symbols, 0, 0.25, 0.0, boundary, reduction="none"
    )
    assert loss64.dtype == torch.float64
    torch.testing.assert_close(loss32.double(), loss64, rtol=1e-6, atol=0)


# ------------------------------------------------------------------------------------------
# Bad input
# ------------------------------------------------------------------------------------------


def _bad_calls():
    am, lm, symbols = random_case(B=2, S=3, T=5, V=4, seed=31)
    boundary = make_boundary([3, 2], [5, 4])
    ranges = torch.zeros(2, 5, 2, dtype=torch.int64) + torch.arange(2)
    logits = torch.randn(2, 5, 2, 4)
    return [
        ("symbols must have shape", lambda: rnnt_loss_simple(lm, am, symbols[:, :2], 0)),
        ("must agree on B and C", lambda: rnnt_loss_simple(lm[..., :3], am, symbols, 0)),
        ("cast it to float32", lambda: rnnt_loss_smoothed(lm.half(), am.half(), symbols, 0)),
        ("boundary must be an int64",
         lambda: rnnt_loss_simple(lm, am, symbols, 0, boundary[:, :3])),
        ("s_end <= S", lambda: rnnt_loss_simple(lm, am, symbols, 0, make_boundary([4, 2], [5, 4]))),
        ("reduction must be one of", lambda: rnnt_loss_simple(lm, am, symbols, 0, reduction="avg")),
        ("rnnt_type must be one of", lambda: rnnt_loss_simple(lm, am, symbols, 0, rnnt_type="x")),
        ("symbols must lie in", lambda: rnnt_loss_simple(lm, am, symbols + 4, 0)),
        ("do not fit",
         lambda: mutual_information_recursion(torch.zeros(2, 3, 6), torch.zeros(2, 3, 5))),
        ("ranges rows must be consecutive",
         lambda: rnnt_loss_pruned(logits, symbols, ranges.flip(-1), 0, boundary)),
        ("ranges must be int64", lambda: do_rnnt_pruning(am, lm, ranges[:, :4])),
        ("window slots", lambda: rnnt_loss_pruned(logits[:, :, :1], symbols, ranges, 0, boundary)),
        ("do not fit",
         lambda: get_rnnt_prune_ranges(torch.zeros(2, 3, 6), torch.zeros(2, 3, 5), None, 2)),
    ]


@pytest.mark.parametrize("index", range(len(_bad_calls())))
def test_bad_input_raises_clear_value_error(index):
    message, call = _bad_calls()[index]
    with pytest.raises(ValueError, match=message):
        call()


# ------------------------------------------------------------------------------------------
# Optional k2 / fast_rnnt backend
# ------------------------------------------------------------------------------------------


def test_unknown_or_missing_backend_is_a_clear_error():
    px, py = torch.zeros(1, 2, 4), torch.zeros(1, 3, 3)
    with pytest.raises(ValueError, match="must be one of"):
        mutual_information_recursion(px, py, backend="cuda")
    for name in ("k2", "fast_rnnt"):
        if importlib.util.find_spec(name) is None:
            with pytest.raises(ValueError, match=f"import {name}"):
                mutual_information_recursion(px, py, backend=name)


def _importable(name: str) -> Optional[object]:
    if importlib.util.find_spec(name) is None:
        return None
    try:
        return importlib.import_module(name)
    except Exception:  # a wheel built for another torch fails at import time
        return None


@pytest.mark.parametrize("name", ["k2", "fast_rnnt"])
def test_matches_installed_k2_or_fast_rnnt(name):
    module = _importable(name)
    if module is None:
        pytest.skip(f"{name} is not importable here (optional backend; not a project dependency)")
    B, S, T, V = 3, 5, 12, 9
    am, lm, symbols = random_case(B, S, T, V, seed=37)
    boundary = make_boundary([5, 3, 1], [12, 9, 4])

    def pipeline(backend: str) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        simple, (px_grad, py_grad) = rnnt_loss_smoothed(
            lm, am, symbols, 0, 0.25, 0.0, boundary, reduction="none", return_grad=True, backend=backend
        )
        ranges = get_rnnt_prune_ranges(px_grad, py_grad, boundary, 3)
        logits = joiner(*do_rnnt_pruning(am, lm, ranges))
        pruned = rnnt_loss_pruned(logits, symbols, ranges, 0, boundary, reduction="none", backend=backend)
        return simple, ranges, pruned

    ours = pipeline("torch")
    theirs_direct = module.rnnt_loss_smoothed(
        lm=lm, am=am, symbols=symbols, termination_symbol=0, lm_only_scale=0.25,
        am_only_scale=0.0, boundary=boundary, reduction="none",
    )
    torch.testing.assert_close(ours[0], theirs_direct, rtol=1e-6, atol=0)
    with_backend = pipeline(name)
    torch.testing.assert_close(ours[0], with_backend[0], rtol=1e-6, atol=0)
    assert torch.equal(ours[1], with_backend[1])
    torch.testing.assert_close(ours[2], with_backend[2], rtol=1e-6, atol=0)
