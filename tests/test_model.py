"""Tests of the Zipformer2 transducer: icefall state_dict compatibility, the inference arithmetic,
the adapter insertion points, the training-only regularisers and the loss."""
import argparse
import math
from typing import Dict, List, Tuple

import pytest
import torch
from torch import nn

from zipformer.checkpoints.checkpoint import strip_ddp_prefix
from zipformer.core.errors import UserError
from zipformer.core.params import AttributeDict
from zipformer.model.builder import get_model, model_shape
from zipformer.model.flags import add_model_arguments
from zipformer.model.model import pad_token_ids, warmup_loss_scales
from zipformer.model.scaling import (
    ActivationDropoutAndLinear,
    Balancer,
    BiasNorm,
    Dropout3,
    ScaleGrad,
    ScheduledFloat,
    SwooshL,
    SwooshR,
    Whiten,
    limit_param_value,
    penalize_abs_values_gt,
    set_batch_count,
    whitening_metric,
)
from zipformer.model.subsampling import ConvNeXt, make_pad_mask
from zipformer.model.zipformer import (
    CompactRelPositionalEncoding,
    ConvolutionModule,
    RelPositionMultiheadAttentionWeights,
    SimpleDownsample,
    SimpleUpsample,
    Zipformer2EncoderLayer,
    convert_num_channels,
    rel_shift,
    rel_shift_indices,
)

TINY_FLAGS = [
    "--num-encoder-layers", "1",
    "--encoder-dim", "64,64,96,96,96,64",
    "--encoder-unmasked-dim", "48",
    "--feedforward-dim", "128,128,192,192,192,128",
    "--num-heads", "2",
    "--query-head-dim", "16",
    "--value-head-dim", "8",
    "--pos-dim", "16",
    "--cnn-module-kernel", "7,7,5,5,5,7",
    "--decoder-dim", "64",
    "--joiner-dim", "64",
]
ADAPTER_NAMES = ("mid_adapter", "post_sa_adapter", "post_conv_adapter", "adapter")


def make_params(flags: List[str], vocab_size: int = 500) -> AttributeDict:
    parser = argparse.ArgumentParser()
    add_model_arguments(parser)
    params = AttributeDict(vars(parser.parse_args(flags)))
    params.update(feature_dim=80, vocab_size=vocab_size, blank_id=0, context_size=2)
    return params


def encoder_layers(model: nn.Module) -> List[Zipformer2EncoderLayer]:
    return [m for m in model.modules() if isinstance(m, Zipformer2EncoderLayer)]


def param_count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())




@pytest.fixture(scope="module")
def normal_model() -> nn.Module:
    torch.manual_seed(0)
    return get_model(make_params([])).eval()


@pytest.fixture()
def tiny_model() -> nn.Module:
    torch.manual_seed(0)
    return get_model(make_params(TINY_FLAGS, vocab_size=30)).eval()


@pytest.fixture(scope="module")
def reference_rows(reference_data) -> List[Tuple[str, Tuple[int, ...], int]]:
    """(key, shape, numel) of icefall's model with dim-16 adapters, in state_dict order."""
    rows = []
    for line in (reference_data / "icefall_state_dict_adapter16.tsv").read_text().splitlines():
        key, shape, numel = line.split("\t")
        dims = tuple(int(d) for d in shape.strip("()").split(",") if d.strip())
        rows.append((key, dims, int(numel)))
    return rows


# ---------------------------------------------------------------------------------------------
# state_dict compatibility (normal configuration)
# ---------------------------------------------------------------------------------------------


def test_state_dict_matches_icefall_keys_shapes_and_order(normal_model, reference_rows):
    base = [(k, s) for k, s, _ in reference_rows if "adapter" not in k]
    state = normal_model.state_dict()
    assert len(base) == 743
    assert [(k, tuple(v.shape)) for k, v in state.items()] == base
    assert param_count(normal_model) == 65_549_011
    assert list(normal_model.buffers()) == []
    assert all(v.dtype == torch.float32 for v in state.values())


def test_component_parameter_counts(normal_model):
    encoder = normal_model.encoder
    stacks = encoder.encoders
    assert param_count(normal_model.encoder_embed) == 611_953
    layer_counts = [param_count(s.layers[0] if i == 0 else s.encoder.layers[0]) for i, s in enumerate(stacks)]
    assert layer_counts == [1_029_153, 1_912_753, 3_888_081, 7_585_633, 3_888_081, 1_912_753]
    assert [param_count(s) for s in stacks] == [
        2_058_306, 3_825_764, 11_664_631, 30_343_052, 11_664_631, 3_825_764,
    ]
    assert param_count(encoder.downsample_output) == 2
    assert param_count(normal_model.encoder_embed) + param_count(encoder) == 63_994_103
    assert param_count(normal_model.decoder) == 260_096
    assert param_count(normal_model.joiner) == 781_812
    assert param_count(normal_model.simple_am_proj) == param_count(normal_model.simple_lm_proj) == 256_500


def test_icefall_state_dict_loads_strictly_also_with_ddp_prefix(normal_model, reference_rows):
    original = {k: v.clone() for k, v in normal_model.state_dict().items() if "log_scale" in k}
    # The reference's key names with tensors of the reference shapes (checked above).
    checkpoint = {
        key: value
        for (key, _, _), value in zip(
            [row for row in reference_rows if "adapter" not in row[0]],
            normal_model.state_dict().values(),
        )
    }
    marked = "encoder.encoders.3.encoder.layers.2.norm.log_scale"
    checkpoint[marked] = torch.tensor(0.25)
    try:
        normal_model.load_state_dict(checkpoint, strict=True)
        assert normal_model.encoder.encoders[3].encoder.layers[2].norm.log_scale.item() == 0.25

        ddp_checkpoint = {"module." + k: v for k, v in checkpoint.items()}
        ddp_checkpoint["module." + marked] = torch.tensor(0.5)
        with pytest.raises(RuntimeError):
            normal_model.load_state_dict(ddp_checkpoint, strict=True)
        normal_model.load_state_dict(strip_ddp_prefix(ddp_checkpoint), strict=True)
        assert normal_model.encoder.encoders[3].encoder.layers[2].norm.log_scale.item() == 0.5
        assert strip_ddp_prefix(checkpoint).keys() == checkpoint.keys()
    finally:
        normal_model.load_state_dict(original, strict=False)


class Bottleneck(nn.Module):
    """Stand-in with the reference adapter's parameter layout: x + out(swoosh(in(x)))."""

    def __init__(self, dim: int, bottleneck: int) -> None:
        super().__init__()
        self.in_proj = nn.Linear(dim, bottleneck)
        self.out_proj = nn.Linear(bottleneck, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.out_proj(torch.relu(self.in_proj(x)))


def test_insertion_points_reproduce_icefall_adapter_key_order(normal_model, reference_rows):
    layers = encoder_layers(normal_model)
    try:
        for layer in layers:
            for name in ADAPTER_NAMES:
                setattr(layer, name, Bottleneck(layer.embed_dim, 16))
        assert [(k, tuple(v.shape)) for k, v in normal_model.state_dict().items()] == [
            (k, s) for k, s, _ in reference_rows
        ]
        assert param_count(normal_model) == 66_310_355
    finally:
        for layer in layers:
            for name in ADAPTER_NAMES:
                setattr(layer, name, None)
    assert len(normal_model.state_dict()) == 743


def test_normal_model_output_shape(normal_model):
    with torch.no_grad():
        out, out_lens = normal_model.forward_encoder(torch.randn(1, 100, 80), torch.tensor([100]))
    assert out.shape == (1, 23, 512)
    assert out_lens.tolist() == [23]
    assert torch.isfinite(out).all()


def padded_batch_and_singles(lengths: List[int], feature_dim: int = 80):
    """Random utterances of `lengths` frames, and them in one batch padded with large values."""
    utterances = [torch.randn(1, length, feature_dim) for length in lengths]
    batch = 1000.0 * torch.randn(len(lengths), max(lengths), feature_dim)
    for i, utterance in enumerate(utterances):
        batch[i, : lengths[i]] = utterance[0]
    return batch, utterances


def assert_padding_invariant(model: nn.Module, lengths: List[int]) -> None:
    """The encoder output of each utterance in a padded batch equals its output alone."""
    batch, utterances = padded_batch_and_singles(lengths)
    with torch.no_grad():
        batched, batched_lens = model.forward_encoder(batch, torch.tensor(lengths))
        for i, utterance in enumerate(utterances):
            alone, alone_lens = model.forward_encoder(utterance, torch.tensor([lengths[i]]))
            assert batched_lens[i] == alone_lens[0] == alone.shape[1]
            torch.testing.assert_close(batched[i, : alone.shape[1]], alone[0], atol=1e-4, rtol=0)


# Not multiples of the downsampling factors: odd embedding lengths (15, 47, 71) and partial
# groups in every downsampled stack. The longest is not first.
PADDING_TEST_LENGTHS = [101, 37, 203, 150]


def test_normal_encoder_padding_invariance(normal_model):
    torch.manual_seed(3)
    # Shorter than the tiny model's lengths, for speed; embedding lengths 27, 15 and 47.
    assert_padding_invariant(normal_model, [61, 37, 101])


# ---------------------------------------------------------------------------------------------
# Shapes, padding, modes (tiny configuration)
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("num_frames", [9, 10, 16, 100, 203])
def test_output_lengths(tiny_model, num_frames):
    x = torch.randn(2, num_frames, 80)
    x_lens = torch.tensor([num_frames, max(9, num_frames - 5)])
    with torch.no_grad():
        out, out_lens = tiny_model.forward_encoder(x, x_lens)
    expected = [((t - 7) // 2 + 1) // 2 for t in x_lens.tolist()]
    assert out.shape == (2, expected[0], 96)
    assert out_lens.tolist() == expected


def test_too_short_input_is_rejected(tiny_model):
    with pytest.raises(ValueError, match="at least 9 feature frames"):
        tiny_model.forward_encoder(torch.randn(1, 8, 80), torch.tensor([8]))


def test_padding_invariance_of_the_full_encoder(tiny_model):
    torch.manual_seed(4)
    # Non-uniform downsampling weights, so any padding that reaches a group shows up.
    with torch.no_grad():
        for name, param in tiny_model.named_parameters():
            if name.endswith("downsample.bias") or name.endswith("downsample_output.bias"):
                param.normal_()
    assert_padding_invariant(tiny_model, PADDING_TEST_LENGTHS)


def test_eval_is_deterministic_and_training_is_random(tiny_model):
    x = torch.randn(2, 60, 80)
    x_lens = torch.tensor([60, 50])
    with torch.no_grad():
        first = tiny_model.forward_encoder(x, x_lens)[0]
        second = tiny_model.forward_encoder(x, x_lens)[0]
        assert torch.equal(first, second)

        tiny_model.train()
        set_batch_count(tiny_model, 0.0)
        torch.manual_seed(5)
        train1 = tiny_model.forward_encoder(x, x_lens)[0]
        train2 = tiny_model.forward_encoder(x, x_lens)[0]
    assert not torch.allclose(train1, train2)
    assert not torch.allclose(train1, first)


def test_schedules_follow_batch_count_and_mode(tiny_model):
    dropout = tiny_model.encoder_embed.dropout.p
    assert isinstance(dropout, ScheduledFloat)
    tiny_model.train()
    assert float(dropout) == 0.0  # no batch count yet: the default
    set_batch_count(tiny_model, 10000.0)
    assert float(dropout) == pytest.approx(0.2)
    layer_skip = encoder_layers(tiny_model)[0].bypass.skip_rate
    assert float(layer_skip) == pytest.approx(0.035)  # stack 0 (ds 1) is past its warm-up
    tiny_model.eval()
    assert float(dropout) == 0.0


# ---------------------------------------------------------------------------------------------
# Adapter insertion points
# ---------------------------------------------------------------------------------------------


class Recorder(nn.Module):
    """Identity that remembers its input."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen = x.detach().clone()
        return x


def test_insertion_points_sit_at_the_reference_positions(tiny_model):
    layer = encoder_layers(tiny_model)[0]
    recorders = {name: Recorder() for name in ADAPTER_NAMES}
    for name in ADAPTER_NAMES:
        setattr(layer, name, recorders[name])
    captured: Dict[str, torch.Tensor] = {}

    def residual_sum(name):
        def hook(module, args, output):
            captured[name] = (args[0] + output).detach().clone()
        return hook

    def output_of(name):
        def hook(module, args, output):
            captured[name] = output.detach().clone()
        return hook

    handles = [
        layer.self_attn1.register_forward_hook(residual_sum("post_sa_adapter")),
        layer.bypass_mid.register_forward_hook(output_of("mid_adapter")),
        layer.conv_module2.register_forward_hook(residual_sum("post_conv_adapter")),
        layer.register_forward_hook(output_of("adapter")),
    ]
    with torch.no_grad():
        tiny_model.forward_encoder(torch.randn(2, 40, 80), torch.tensor([40, 33]))
    for handle in handles:
        handle.remove()
    for name in ADAPTER_NAMES:
        torch.testing.assert_close(recorders[name].seen, captured[name], atol=0, rtol=0)


def test_zero_residual_adapters_keep_the_output_and_trained_ones_change_it(tiny_model):
    x = torch.randn(1, 50, 80)
    x_lens = torch.tensor([50])
    with torch.no_grad():
        base = tiny_model.forward_encoder(x, x_lens)[0]
    base_keys = set(tiny_model.state_dict())

    layer = tiny_model.encoder.encoders[2].encoder.layers[0]
    layer.mid_adapter = Bottleneck(96, 4)
    nn.init.zeros_(layer.mid_adapter.out_proj.weight)
    nn.init.zeros_(layer.mid_adapter.out_proj.bias)
    new_keys = set(tiny_model.state_dict()) - base_keys
    assert new_keys == {
        f"encoder.encoders.2.encoder.layers.0.mid_adapter.{p}.{w}"
        for p in ("in_proj", "out_proj") for w in ("weight", "bias")
    }
    with torch.no_grad():
        assert torch.equal(tiny_model.forward_encoder(x, x_lens)[0], base)
        nn.init.normal_(layer.mid_adapter.out_proj.weight)
        changed = tiny_model.forward_encoder(x, x_lens)[0]
    assert (changed - base).abs().max() > 1e-3

    layer.mid_adapter = None
    assert set(tiny_model.state_dict()) == base_keys
    with torch.no_grad():
        assert torch.equal(tiny_model.forward_encoder(x, x_lens)[0], base)


# ---------------------------------------------------------------------------------------------
# Loss and training
# ---------------------------------------------------------------------------------------------


def test_training_steps_decrease_the_transducer_loss(tiny_model):
    torch.manual_seed(6)
    x = torch.randn(3, 60, 80)
    x_lens = torch.tensor([60, 52, 45])
    y = [[3, 4, 5, 6], [7, 8], [9, 10, 11]]
    tiny_model.train()
    # Schedules at their final values, as in fine-tuning: no random skipping of whole modules.
    set_batch_count(tiny_model, 1e6)
    optimizer = torch.optim.Adam(tiny_model.parameters(), lr=3e-3)
    losses = []
    for _ in range(6):
        simple_loss, pruned_loss = tiny_model(x, x_lens, y, prune_range=3, lm_scale=0.25)
        assert simple_loss.ndim == 0 and pruned_loss.ndim == 0
        loss = 0.5 * simple_loss + pruned_loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert all(math.isfinite(v) for v in losses)
    assert losses[-1] < 0.7 * losses[0]
    without_grad = {name for name, p in tiny_model.named_parameters() if p.grad is None}
    # Only the layer-level bypass_scale, which icefall keeps in checkpoints but never uses.
    assert without_grad == {
        name for name, _ in tiny_model.named_parameters() if name.endswith("layers.0.bypass_scale")
    }


def test_loss_rejects_mismatched_transcripts(tiny_model):
    with pytest.raises(ValueError, match="transcripts"):
        tiny_model(torch.randn(2, 40, 80), torch.tensor([40, 40]), [[1, 2]])


def test_pad_token_ids():
    padded, lengths = pad_token_ids([[5, 6, 7], [], [8]], padding_value=0)
    assert padded.tolist() == [[5, 6, 7], [0, 0, 0], [8, 0, 0]]
    assert lengths.tolist() == [3, 0, 1]


def test_warmup_loss_scales():
    assert warmup_loss_scales(0, 2000, 0.5) == (1.0, 0.1)
    simple, pruned = warmup_loss_scales(1000, 2000, 0.5)
    assert simple == pytest.approx(0.75) and pruned == pytest.approx(0.55)
    assert warmup_loss_scales(2000, 2000, 0.5) == (0.5, 1.0)
    assert warmup_loss_scales(50000, 2000, 0.5) == (0.5, 1.0)


# ---------------------------------------------------------------------------------------------
# Inference arithmetic of the building blocks
# ---------------------------------------------------------------------------------------------


def test_positional_encoding_formula():
    dim, num_frames = 48, 6
    pe = CompactRelPositionalEncoding(dim, dropout_rate=0.15).eval()(torch.zeros(num_frames, 1, 8))
    assert pe.shape == (1, 2 * num_frames - 1, dim)
    c = math.sqrt(dim)
    for column in range(2 * num_frames - 1):
        r = column - (num_frames - 1)  # key index - query index
        compressed = c * math.copysign(1.0, r) * (math.log(abs(r) + c) - math.log(c)) if r else 0.0
        angle = math.atan(compressed / (dim / (2 * math.pi)))
        expected = []
        for k in range(dim // 2):
            expected += [math.cos((k + 1) * angle), math.sin((k + 1) * angle)]
        expected[-1] = 1.0
        torch.testing.assert_close(pe[0, column], torch.tensor(expected), atol=1e-5, rtol=0)


def test_attention_weights_use_key_minus_query_offsets_without_scaling():
    torch.manual_seed(7)
    heads, qd, pd, dim, pos_dim, T, N = 2, 4, 3, 16, 8, 5, 2
    module = RelPositionMultiheadAttentionWeights(dim, pos_dim, heads, qd, pd).eval()
    x = torch.randn(T, N, dim)
    pos_emb = CompactRelPositionalEncoding(pos_dim, 0.0)(x)
    mask = torch.zeros(N, T, dtype=torch.bool)
    mask[1, 3:] = True
    with torch.no_grad():
        weights = module(x, pos_emb, key_padding_mask=mask)
        proj = module.in_proj(x)
        pos = module.linear_pos(pos_emb)[0]  # (2T-1, H*pd)
    expected = torch.empty(heads, N, T, T)
    for h in range(heads):
        for n in range(N):
            for i in range(T):
                for j in range(T):
                    q = proj[i, n, h * qd : (h + 1) * qd]
                    k = proj[j, n, heads * qd + h * qd : heads * qd + (h + 1) * qd]
                    p = proj[i, n, 2 * heads * qd + h * pd : 2 * heads * qd + (h + 1) * pd]
                    score = q @ k + p @ pos[(T - 1) + (j - i), h * pd : (h + 1) * pd]
                    expected[h, n, i, j] = -1000.0 if mask[n, j] else score
    torch.testing.assert_close(weights, expected.softmax(dim=-1), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("left_context_len", [0, 3])
def test_rel_shift_selects_what_the_gather_selects_and_passes_the_same_gradient(left_context_len):
    heads, N, T = 2, 3, 5
    width = left_context_len + 2 * T - 1
    scores = torch.randn(heads, N, T, width, requires_grad=True)
    index = rel_shift_indices(T, scores.device, left_context_len).expand(heads, N, -1, -1)
    expected = torch.gather(scores, dim=-1, index=index)
    shifted = rel_shift(scores, T + left_context_len)
    assert torch.equal(shifted, expected)
    out_grad = torch.randn_like(expected)
    (want,) = torch.autograd.grad(expected, scores, out_grad)
    (got,) = torch.autograd.grad(shifted, scores, out_grad)
    assert torch.equal(got, want)


def test_attention_weights_keep_no_offset_scores_for_the_backward():
    """The (H, N, T, 2T - 1) offset scores are not kept alive until the backward (gather kept them)."""
    heads, qd, pd, dim, pos_dim, T, N = 2, 4, 3, 16, 8, 7, 2
    module = RelPositionMultiheadAttentionWeights(dim, pos_dim, heads, qd, pd, pos_emb_skip_rate=0.0)
    x = torch.randn(T, N, dim, requires_grad=True)
    pos_emb = CompactRelPositionalEncoding(pos_dim, 0.0)(x)
    saved_shapes = []

    def pack(t: torch.Tensor) -> torch.Tensor:
        saved_shapes.append(tuple(t.shape))
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        module(x, pos_emb).sum().backward()
    assert (heads, N, T, T) in saved_shapes  # the softmax output is kept, as it must be
    assert not [s for s in saved_shapes if s[-1] == 2 * T - 1 and len(s) == 4]


def test_biasnorm_formula():
    norm = BiasNorm(6)
    with torch.no_grad():
        norm.bias.copy_(torch.arange(6.0) / 10)
        norm.log_scale.fill_(0.3)
    x = torch.randn(4, 3, 6)
    expected = x * math.exp(0.3) / ((x - norm.bias) ** 2).mean(dim=-1, keepdim=True).sqrt()
    torch.testing.assert_close(norm(x), expected)
    assert norm.log_scale.shape == ()


def test_swoosh_values_and_gradients():
    x = torch.tensor([-200.0, -5.0, -1.0, 0.0, 0.5, 1.0, 4.0, 10.0, 200.0])
    log1pexp = lambda z: torch.logaddexp(torch.zeros_like(z), z)  # noqa: E731
    torch.testing.assert_close(SwooshL()(x), log1pexp(x - 4) - 0.08 * x - 0.035)
    torch.testing.assert_close(SwooshR()(x), log1pexp(x - 1) - 0.08 * x - 0.313261687)
    assert abs(SwooshR()(torch.zeros(1))).item() < 1e-6

    x = torch.linspace(-6, 10, 200, requires_grad=True)
    SwooshL()(x).sum().backward()
    exact = torch.sigmoid(x.detach() - 4) - 0.08
    assert (x.grad - exact).abs().max() <= 1.0 / 255 + 1e-6


def test_simple_downsample_repeats_last_frame_and_weights_by_softmax():
    module = SimpleDownsample(3, downsample=2)
    with torch.no_grad():
        module.bias.copy_(torch.tensor([0.0, math.log(3.0)]))  # weights 0.25, 0.75
    x = torch.arange(15.0).reshape(5, 1, 3)
    out = module(x)
    assert out.shape == (3, 1, 3)
    torch.testing.assert_close(out[0], 0.25 * x[0] + 0.75 * x[1])
    torch.testing.assert_close(out[2], x[4])  # last frame paired with a copy of itself
    up = SimpleUpsample(2)(out)
    assert up.shape == (6, 1, 3) and torch.equal(up[0], up[1])


def test_simple_downsample_pads_each_sequence_with_its_own_last_frame():
    module = SimpleDownsample(3, downsample=4)
    with torch.no_grad():
        module.bias.copy_(torch.tensor([0.1, -0.4, 0.7, 0.2]))
    torch.manual_seed(10)
    x = torch.randn(6, 2, 3)
    out = module(x, src_lens=torch.tensor([6, 3]))
    assert out.shape == (2, 2, 3)
    alone = module(x[:3, 1:])
    torch.testing.assert_close(out[:1, 1:], alone, atol=0, rtol=0)
    torch.testing.assert_close(out[:, :1], module(x[:, :1]), atol=0, rtol=0)


def test_simple_downsample_with_full_lengths_is_bit_identical_to_the_reference():
    torch.manual_seed(11)
    module = SimpleDownsample(5, downsample=4)
    with torch.no_grad():
        module.bias.normal_()
    x = torch.randn(7, 1, 5)
    # icefall's formula: pad with copies of the last frame to a multiple of 4, weighted sum.
    padded = torch.cat((x, x[-1:].expand(1, 1, 5)), dim=0).reshape(2, 4, 1, 5)
    expected = (padded * module.bias.softmax(dim=0).reshape(1, 4, 1, 1)).sum(dim=1)
    with torch.no_grad():
        assert torch.equal(module(x, src_lens=torch.tensor([7])), expected)
        assert torch.equal(module(x), expected)


def test_convnext_with_full_lengths_matches_the_reference(tiny_model):
    convnext = tiny_model.encoder_embed.convnext
    torch.manual_seed(12)
    x = torch.randn(1, 128, 11, 19)
    with torch.no_grad():
        # icefall's formula in eval mode (the balancers and whitening are the identity); the
        # module computes the 1×1 convs as matmuls, equal up to float32 rounding.
        hidden = SwooshL()(convnext.pointwise_conv1(convnext.depthwise_conv(x)))
        expected = x + convnext.pointwise_conv2(hidden)
        unmasked = convnext(x)
        assert torch.equal(convnext(x, torch.tensor([11])), unmasked)
    torch.testing.assert_close(unmasked, expected, rtol=1e-5, atol=1e-6)


def test_convnext_ignores_frames_past_each_sequence_end(tiny_model):
    convnext = tiny_model.encoder_embed.convnext
    torch.manual_seed(13)
    x = torch.randn(2, 128, 12, 19)
    x[1, :, 8:] = 1000.0
    with torch.no_grad():
        batched = convnext(x, torch.tensor([12, 8]))
        alone = convnext(x[1:, :, :8])
    torch.testing.assert_close(batched[1:, :, :8], alone, atol=1e-5, rtol=0)


def test_channel_conversion_and_full_dim_output_assembly(tiny_model):
    x = torch.randn(2, 1, 4)
    assert torch.equal(convert_num_channels(x, 3), x[..., :3])
    widened = convert_num_channels(x, 6)
    assert torch.equal(widened[..., :4], x) and torch.equal(widened[..., 4:], torch.zeros(2, 1, 2))
    dims = tiny_model.encoder.encoder_dim  # (64, 64, 96, 96, 96, 64)
    outputs = [torch.full((1, 1, d), float(i)) for i, d in enumerate(dims)]
    full = tiny_model.encoder._full_dim_output(outputs)
    assert full.shape == (1, 1, 96)
    assert torch.equal(full[0, 0, :64], torch.full((64,), 5.0))
    assert torch.equal(full[0, 0, 64:], torch.full((32,), 4.0))


# ---------------------------------------------------------------------------------------------
# Training-only regularisers
# ---------------------------------------------------------------------------------------------


def test_scheduled_float_interpolation():
    schedule = ScheduledFloat((0.0, 0.2), (4000.0, 0.05), (16000.0, 0.0), default=0.3)
    assert float(schedule) == 0.3  # no batch count
    schedule.batch_count = 2000.0
    assert float(schedule) == pytest.approx(0.125)
    schedule.batch_count = 1e6
    assert float(schedule) == 0.0
    schedule.eval()
    assert float(schedule) == 0.3


def _grad_through(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    x = x.clone().requires_grad_(True)
    y = module(x)
    assert torch.equal(y, x)
    y.backward(torch.ones_like(y))
    return x.grad


def test_balancer_pushes_out_of_bound_channels_only_in_training():
    x = -torch.rand(50, 4) - 0.5  # never positive: below min_positive
    balancer = Balancer(4, channel_dim=-1, min_positive=0.05, max_positive=0.95, prob=1.0)
    grad = _grad_through(balancer, x)
    # The extra term lowers the loss gradient, i.e. a descent step moves x upwards.
    torch.testing.assert_close(grad, torch.full_like(x, 0.96))
    balancer.eval()
    assert torch.equal(_grad_through(balancer, x), torch.ones_like(x))


def test_whiten_adds_gradient_only_when_correlated_and_training():
    torch.manual_seed(8)
    correlated = torch.randn(200, 1) * torch.randn(1, 8) + 0.01 * torch.randn(200, 8)
    assert whitening_metric(correlated, 1) > 7.0
    assert whitening_metric(torch.randn(5000, 8), 1) < 1.1
    whiten = Whiten(num_groups=1, whitening_limit=2.0, prob=1.0, grad_scale=0.1)
    grad = _grad_through(whiten, correlated)
    assert not torch.allclose(grad, torch.ones_like(grad))
    relative_change = (grad - 1).norm() / torch.ones_like(grad).norm()
    assert relative_change == pytest.approx(0.1, rel=1e-3)
    whiten.eval()
    assert torch.equal(_grad_through(whiten, correlated), torch.ones_like(correlated))


def test_gradient_only_helpers():
    x = torch.tensor([-3.0, 0.0, 3.0], requires_grad=True)
    limit_param_value(x, -1.0, 1.0, prob=1.0).mul(torch.tensor([1.0, 1.0, -1.0])).sum().backward()
    # -3 with a positive gradient would move further down, 3 with a negative one further up.
    assert x.grad.tolist() == [-1.0, 1.0, 1.0]

    x = torch.tensor([-30.0, 1.0, 30.0], requires_grad=True)
    penalize_abs_values_gt(x, limit=25.0, penalty=0.5).sum().backward()
    assert x.grad.tolist() == [0.5, 1.0, 1.5]

    scale_grad = ScaleGrad(0.2)
    torch.testing.assert_close(_grad_through(scale_grad, torch.randn(3)), torch.full((3,), 0.2))
    scale_grad.eval()
    assert torch.equal(_grad_through(scale_grad, torch.randn(3)), torch.ones(3))


def test_shared_dropout_masks_whole_slices():
    torch.manual_seed(9)
    dropout = Dropout3(0.5, shared_dim=1)
    y = dropout(torch.ones(8, 20, 16))
    zero = y == 0
    assert zero.any() and not zero.all()
    assert torch.equal(zero, zero[:, :1].expand_as(zero))  # same channels on every frame
    dropout.eval()
    assert torch.equal(dropout(torch.ones(2, 3, 4)), torch.ones(2, 3, 4))

    scheduled = Dropout3(ScheduledFloat((0.0, 0.5), (10.0, 0.0)), shared_dim=0)
    set_batch_count(scheduled, 0.0)
    assert (scheduled(torch.ones(1, 1000)) == 0).any()
    set_batch_count(scheduled, 10.0)
    assert torch.equal(scheduled(torch.ones(1, 1000)), torch.ones(1, 1000))


def test_activation_dropout_and_linear_registers_weight_and_bias_directly():
    layer = ActivationDropoutAndLinear(6, 4, activation="SwooshR", dropout_p=0.0).eval()
    assert list(layer.state_dict()) == ["weight", "bias"]
    x = torch.randn(3, 6)
    torch.testing.assert_close(layer(x), nn.functional.linear(SwooshR()(x), layer.weight, layer.bias))


# ---------------------------------------------------------------------------------------------
# CPU-speed formulations against straightforward references
# ---------------------------------------------------------------------------------------------

# torch.jit.trace is how the ONNX export sees the model; its deprecation notice is noise here.
ignore_trace_deprecation = pytest.mark.filterwarnings("ignore:`torch.jit.trace:DeprecationWarning")


@ignore_trace_deprecation
@pytest.mark.parametrize(
    "activation, shift, offset", [(SwooshL, 4.0, 0.035), (SwooshR, 1.0, 0.313261687)]
)
def test_swoosh_is_the_plain_formula_in_every_path_with_a_deterministic_gradient(
    activation, shift, offset
):
    def formula(x: torch.Tensor) -> torch.Tensor:
        z = x - shift
        return z.clamp(min=0.0) + torch.log1p(torch.exp(-z.abs())) - 0.08 * x - offset

    torch.manual_seed(20)
    x = torch.randn(6, 50) * 4
    x[0, :4] = torch.tensor([-200.0, 0.0, shift, 200.0])
    module = activation()
    expected = formula(x)
    with torch.no_grad():
        assert torch.equal(module(x), expected)  # inference, in place
    assert torch.equal(torch.jit.trace(module, x)(x), expected)  # export
    leaf = x.clone().requires_grad_(True)
    y = module(leaf)  # training: the autograd function
    assert torch.equal(y.detach(), expected)

    grad_out = torch.randn_like(x)
    y.backward(grad_out, retain_graph=True)
    grad = leaf.grad.clone()
    exact = grad_out.double() * (torch.sigmoid(x.double() - shift) - 0.08)
    # The sigmoid is kept in float16: within 2^-12 of the exact one (float32 rounding on top).
    assert ((grad.double() - exact).abs() <= grad_out.abs().double() * (2**-12 + 1e-6)).all()
    leaf.grad = None
    y.backward(grad_out)
    assert torch.equal(leaf.grad, grad)  # no random rounding


def reference_balancer_grad(
    x: torch.Tensor, grad: torch.Tensor, channel_dim: int, bounds: Tuple[float, ...], scale: float
) -> torch.Tensor:
    """The Balancer's gradient written out directly (one tensor per intermediate)."""
    min_positive, max_positive, min_abs, max_abs = bounds
    other_dims = [d for d in range(x.ndim) if d != channel_dim % x.ndim]
    positive_fraction = (x > 0).float().mean(dim=other_dims, keepdim=True)
    mean_abs = x.abs().mean(dim=other_dims, keepdim=True)
    shift = (positive_fraction > max_positive).float() - (positive_fraction < min_positive).float()
    magnitude = (mean_abs > max_abs).float() - (mean_abs < min_abs).float()
    return grad + scale * grad.abs() * (shift + magnitude * x.sign())


@pytest.mark.parametrize("channel_dim", [1, -1])
def test_balancer_gradient_equals_the_direct_formula(channel_dim):
    torch.manual_seed(21)
    # Channels: too small, mostly positive, mostly negative, too large, within bounds (x2).
    scales = torch.tensor([0.1, 1.0, 1.0, 10.0, 1.0, 2.0])
    offsets = torch.tensor([0.0, 3.0, -3.0, 0.0, 0.0, 0.0])
    x = torch.randn(3, 40, 6) * scales + offsets
    x[:, 30:] = 0.0  # zeroed padding frames count as neither positive nor negative
    if channel_dim == 1:
        x = x.transpose(1, 2).contiguous()
    grad_out = torch.randn_like(x)
    bounds = (0.2, 0.8, 0.5, 5.0)

    def grad_through(balancer: Balancer) -> torch.Tensor:
        # The input is a strided slice of a larger tensor, as the attention keys are.
        leaf = torch.cat((x, torch.randn_like(x)), dim=-1).requires_grad_(True)
        balancer(leaf[..., : x.shape[-1]]).backward(grad_out)
        return leaf.grad[..., : x.shape[-1]]

    grad = grad_through(Balancer(6, channel_dim, *bounds, grad_scale=0.04, prob=1.0))
    assert torch.equal(grad, reference_balancer_grad(x, grad_out, channel_dim, bounds, 0.04))
    assert not torch.equal(grad, grad_out)
    in_bounds = Balancer(6, channel_dim, 0.0, 1.0, 0.0, 100.0, grad_scale=0.04, prob=1.0)
    assert torch.equal(grad_through(in_bounds), grad_out)


def reference_convnext(
    convnext: ConvNeXt, hidden_balancer: Balancer, x: torch.Tensor, x_lens: torch.Tensor
) -> torch.Tensor:
    """ConvNeXt with nn.Conv2d calls on (N, C, T, F), as icefall writes it (padding zeroed)."""
    bypass = x
    x = x.masked_fill(make_pad_mask(x_lens, x.shape[2]).unsqueeze(1).unsqueeze(-1), 0.0)
    x = convnext.pointwise_conv1(convnext.depthwise_conv(x))
    x = convnext.pointwise_conv2(convnext.activation(hidden_balancer(x)))
    return convnext.out_whiten(convnext.out_balancer(bypass + x))


def test_convnext_matches_the_conv2d_reference_in_training_with_gradients():
    torch.manual_seed(22)
    convnext = ConvNeXt(16).train()
    with torch.no_grad():
        convnext.pointwise_conv2.weight.mul_(50.0)  # make the branch matter next to the bypass
    # Every regulariser on with probability 1 (so the random draws decide nothing), the same
    # ones in the reference.
    convnext.hidden_balancer.prob = ScheduledFloat((0.0, 1.0), default=1.0)
    convnext.out_balancer.prob = ScheduledFloat((0.0, 1.0), default=1.0)
    convnext.out_whiten.prob = 1.0
    hidden = convnext.hidden_balancer
    hidden_nchw = Balancer(
        48, 1, hidden.min_positive, hidden.max_positive, hidden.min_abs, hidden.max_abs,
        grad_scale=hidden.grad_scale, prob=1.0,
    )
    x = torch.randn(2, 16, 12, 9)
    x_lens = torch.tensor([12, 8])
    grad_out = torch.randn_like(x)

    def run(forward):
        convnext.zero_grad()
        leaf = x.clone().requires_grad_(True)
        y = forward(leaf)
        y.backward(grad_out)
        # Gradients in their parameter's strides, as DDP's buckets expect.
        assert all(p.grad.stride() == p.stride() for p in convnext.parameters())
        grads = {name: p.grad.clone() for name, p in convnext.named_parameters()}
        return y.detach(), leaf.grad, grads

    y, x_grad, param_grads = run(lambda t: convnext(t, x_lens))
    y_ref, x_grad_ref, param_grads_ref = run(
        lambda t: reference_convnext(convnext, hidden_nchw, t, x_lens)
    )
    torch.testing.assert_close(y, y_ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(x_grad, x_grad_ref, rtol=1e-5, atol=1e-6)
    assert param_grads.keys() == param_grads_ref.keys()
    for name in param_grads:
        torch.testing.assert_close(param_grads[name], param_grads_ref[name], rtol=1e-5, atol=1e-6)


@ignore_trace_deprecation
def test_convnext_traced_for_export_matches_eager_eval():
    torch.manual_seed(23)
    convnext = ConvNeXt(16).eval()
    x = torch.randn(2, 16, 12, 9)
    x_lens = torch.tensor([12, 8])
    traced = torch.jit.trace(convnext, (x, x_lens))
    other = torch.randn(3, 16, 20, 9)  # the trace is not specialised to the example's shape
    other_lens = torch.tensor([20, 5, 13])
    with torch.no_grad():
        for inputs, lens in ((x, x_lens), (other, other_lens)):
            torch.testing.assert_close(
                traced(inputs, lens), convnext(inputs, lens), rtol=1e-5, atol=1e-6
            )


@pytest.mark.parametrize("kernel_size", [7, 31])
def test_conv_module_depthwise_conv_matches_conv1d_with_gradients(kernel_size):
    torch.manual_seed(24)
    module = ConvolutionModule(12, kernel_size)
    time_major = torch.randn(25, 3, 12)  # (T, N, C), viewed as (N, C, T) as in forward
    grad_out = torch.randn(3, 12, 25)

    def run(conv):
        module.zero_grad()
        leaf = time_major.clone().requires_grad_(True)
        y = conv(leaf.permute(1, 2, 0))
        y.backward(grad_out)
        weight = module.depthwise_conv.weight
        assert weight.grad.stride() == weight.stride()  # as DDP's buckets expect
        return y.detach(), leaf.grad, weight.grad, module.depthwise_conv.bias.grad

    ours = run(module._depthwise_conv_channels_last)
    reference = run(module.depthwise_conv)
    assert ours[0].shape == (3, 12, 25)
    for got, expected in zip(ours, reference):
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------------------------------
# Flags
# ---------------------------------------------------------------------------------------------


def test_flag_defaults_are_the_reference_normal_model():
    params = make_params([])
    assert params.num_encoder_layers == (2, 2, 3, 4, 3, 2)
    assert params.downsampling_factor == (1, 2, 4, 8, 4, 2)
    assert params.feedforward_dim == (512, 768, 1024, 1536, 1024, 768)
    assert params.encoder_dim == (192, 256, 384, 512, 384, 256)
    assert params.query_head_dim == (32,) and params.value_head_dim == (12,)
    assert params.pos_dim == 48 and params.decoder_dim == 512 and params.joiner_dim == 512
    assert params.causal is False and params.use_transducer is True and params.use_ctc is False
    # Builders also accept the comma-separated strings of icefall-style params.
    params.num_heads = "4,4,4,8,4,4"
    assert model_shape(params).num_heads == (4, 4, 4, 8, 4, 4)


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--encoder-dim", "192,256"], "--encoder-dim has 2 values but --downsampling-factor has 6"),
        (["--use-ctc", "1"], "--use-ctc 0"),
        (["--use-transducer", "0"], "--use-transducer 1"),
        (["--cnn-module-kernel", "30"], "odd"),
        (["--encoder-unmasked-dim", "300"], "must not exceed"),
    ],
)
def test_bad_flags_raise_user_errors(flags, message):
    with pytest.raises(UserError, match=message):
        get_model(make_params(flags))


def test_non_integer_flag_is_an_argparse_error():
    parser = argparse.ArgumentParser()
    add_model_arguments(parser)
    with pytest.raises(SystemExit):
        parser.parse_args(["--num-heads", "4,x"])
