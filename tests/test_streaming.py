"""Tests of the causal (streaming) Zipformer2: icefall's causal state_dict layout, the chunk
masks and chunk-causal convolution, padding invariance, and chunk-by-chunk streaming that equals
the full-utterance causal forward."""
import argparse
from typing import Dict, List

import pytest
import torch
from torch import nn

from zipformer.core.errors import UserError
from zipformer.core.params import AttributeDict
from zipformer.decoding.beam_search import greedy_search_batch
from zipformer.decoding.session import decode_batch
from zipformer.decoding.streaming_session import StreamingDecoder, check_streaming_flags
from zipformer.model.builder import check_causal, get_model
from zipformer.model.chunk_causal import ChunkCausalDepthwiseConv1d, chunk_attention_mask, sample_chunk_config
from zipformer.model.flags import add_model_arguments
from zipformer.model.streaming import (
    TAIL_PAD_FRAMES,
    append_tail_padding,
    cache_padding_mask,
    get_init_states,
    pad_for_chunks,
    stack_states,
    streaming_forward,
    unstack_states,
)
from zipformer.tuners.tensors import tuner_disabled
from zipformer_adapter.adapter import AdapterTuner, add_adapters

from conftest import TINY_MODEL_FLAGS

# The tiny model's largest convolution context is (5 // 2) · 8 = 16 frames (stack 3).
TINY_CONV_CONTEXT = 16


def make_params(flags: List[str], vocab_size: int = 30) -> AttributeDict:
    parser = argparse.ArgumentParser()
    add_model_arguments(parser)
    params = AttributeDict(vars(parser.parse_args(flags)))
    params.update(feature_dim=80, vocab_size=vocab_size, blank_id=0, context_size=2)
    return params


def causal_model(chunk_size: str, left_context: str, seed: int = 0) -> nn.Module:
    """A tiny causal model with non-trivial chunk scales, downsampling weights and bypasses."""
    torch.manual_seed(seed)
    flags = TINY_MODEL_FLAGS + [
        "--causal", "1", "--chunk-size", chunk_size, "--left-context-frames", left_context,
    ]
    model = get_model(make_params(flags)).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "scale" in name or name.endswith("bias"):
                param.add_(0.3 * torch.randn_like(param))
    return model


@pytest.fixture(scope="module", autouse=True)
def single_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def normal_causal_model() -> nn.Module:
    torch.manual_seed(0)
    return get_model(make_params(["--causal", "1"], vocab_size=500)).eval()


# ---------------------------------------------------------------------------------------------
# icefall's causal model layout
# ---------------------------------------------------------------------------------------------


def test_causal_state_dict_matches_icefall_keys_shapes_and_order(normal_causal_model, reference_data):
    rows = []
    for line in (reference_data / "icefall_state_dict_causal.tsv").read_text().splitlines():
        key, shape, _ = line.split("\t")
        rows.append((key, tuple(int(d) for d in shape.strip("()").split(",") if d.strip())))
    state = normal_causal_model.state_dict()
    assert len(rows) == 839
    assert [(k, tuple(v.shape)) for k, v in state.items()] == rows
    assert sum(p.numel() for p in normal_causal_model.parameters()) == 66_110_931
    assert list(normal_causal_model.buffers()) == []


def test_init_states_have_icefall_shapes_and_order():
    torch.manual_seed(0)
    model = get_model(
        make_params(["--causal", "1", "--chunk-size", "16", "--left-context-frames", "128"], 500)
    )
    states = get_init_states(model, 2, torch.device("cpu"))
    assert len(states) == 16 * 6 + 2
    # Layer 7 is the first of stack 3 (ds 8, dim 512, 8 heads, kernel 15): L = 128 // 8 = 16.
    layer7 = [tuple(s.shape) for s in states[42:48]]
    assert layer7 == [(16, 2, 256), (1, 2, 16, 384), (16, 2, 96), (16, 2, 96), (2, 512, 7), (2, 512, 7)]
    assert tuple(states[0].shape) == (128, 2, 128) and tuple(states[4].shape) == (2, 192, 15)
    assert tuple(states[-2].shape) == (2, 128, 3, 19)
    assert states[-1].dtype == torch.int32 and states[-1].tolist() == [0, 0]
    assert sum(s.numel() for s in states[:-1]) == 2 * 462_720
    assert all(not s.any() for s in states)


# ---------------------------------------------------------------------------------------------
# Chunk masks, chunk sampling, chunk-causal convolution
# ---------------------------------------------------------------------------------------------


def test_chunk_attention_mask_sees_own_chunk_and_left_chunks():
    mask = chunk_attention_mask(6, chunk_size=2, left_context_chunks=1, device=torch.device("cpu"))
    visible = (~mask).int().tolist()
    assert visible == [
        [1, 1, 0, 0, 0, 0],
        [1, 1, 0, 0, 0, 0],
        [1, 1, 1, 1, 0, 0],
        [1, 1, 1, 1, 0, 0],
        [0, 0, 1, 1, 1, 1],
        [0, 0, 1, 1, 1, 1],
    ]
    unlimited = chunk_attention_mask(6, 2, -1, torch.device("cpu"))
    assert torch.equal(unlimited, torch.ones(6, 6).triu(1).bool() & ~torch.block_diag(*[torch.ones(2, 2)] * 3).bool())
    assert chunk_attention_mask(6, -1, -1, torch.device("cpu")) is None


def test_chunk_sampling_rounds_left_context_to_whole_chunks():
    assert sample_chunk_config([-1], [64]) == (-1, -1)
    assert sample_chunk_config([32], [64]) == (32, 2)
    assert sample_chunk_config([64], [32]) == (64, 1)  # at least one chunk
    assert sample_chunk_config([16], [-1]) == (16, -1)
    drawn = {sample_chunk_config([16, 32, 64, -1], [64, 128, 256, -1]) for _ in range(400)}
    assert (-1, -1) in drawn and (16, 4) in drawn and (64, -1) in drawn and (32, 8) in drawn


def test_chunk_causal_conv_never_looks_past_its_chunk():
    torch.manual_seed(0)
    conv = ChunkCausalDepthwiseConv1d(4, 7)
    with torch.no_grad():
        conv.chunkwise_conv_scale.normal_()
    x = torch.randn(1, 4, 20)
    changed = x.clone()
    changed[..., 12:] += 1.0  # frame 12 starts chunk 3 of 4 frames
    with torch.no_grad():
        a, b = conv(x, chunk_size=4), conv(changed, chunk_size=4)
        assert torch.equal(a[..., :12], b[..., :12])
        assert not torch.allclose(a[..., 12], b[..., 12])
        # Without chunking frame 11 sees frame 12 through the chunkwise kernel.
        assert not torch.allclose(conv(x)[..., 11], conv(changed)[..., 11])


def test_chunk_causal_conv_with_zero_scale_is_causal_plus_in_chunk_conv():
    torch.manual_seed(1)
    conv = ChunkCausalDepthwiseConv1d(3, 5)
    x = torch.randn(2, 3, 12)
    with torch.no_grad():
        causal = nn.functional.conv1d(nn.functional.pad(x, (2, 0)), conv.causal_conv.weight, conv.causal_conv.bias, groups=3)
        chunks = [
            nn.functional.conv1d(x[..., s : s + 4], conv.chunkwise_conv.weight, conv.chunkwise_conv.bias, padding=2, groups=3)
            for s in (0, 4, 8)
        ]
        torch.testing.assert_close(conv(x, chunk_size=4), causal + torch.cat(chunks, dim=-1))


@pytest.mark.parametrize("chunk_size", [4, -1, 16])
def test_chunk_causal_conv_gives_each_padded_sequence_its_own_output(chunk_size):
    torch.manual_seed(2)
    conv = ChunkCausalDepthwiseConv1d(3, 7)
    with torch.no_grad():
        conv.chunkwise_conv_scale.normal_()
    lengths = [13, 5, 10]
    batch = torch.zeros(3, 3, 13)
    singles = []
    for i, length in enumerate(lengths):
        singles.append(torch.randn(1, 3, length))
        batch[i, :, :length] = singles[-1][0]
    with torch.no_grad():
        batched = conv(batch, chunk_size=chunk_size, lengths=torch.tensor(lengths))
        for i, length in enumerate(lengths):
            torch.testing.assert_close(batched[i, :, :length], conv(singles[i], chunk_size)[0])


def test_causal_encoder_padding_invariance():
    for chunk_size in ("16", "-1", "64"):
        model = causal_model(chunk_size, "32")
        lengths = [101, 37, 203, 150]
        utterances = [torch.randn(1, t, 80) for t in lengths]
        batch = 1000.0 * torch.randn(len(lengths), max(lengths), 80)
        for i, u in enumerate(utterances):
            batch[i, : lengths[i]] = u[0]
        with torch.no_grad():
            batched, _ = model.forward_encoder(batch, torch.tensor(lengths))
            for i, u in enumerate(utterances):
                alone, _ = model.forward_encoder(u, torch.tensor([lengths[i]]))
                torch.testing.assert_close(batched[i, : alone.shape[1]], alone[0], atol=1e-4, rtol=0)


# ---------------------------------------------------------------------------------------------
# Streaming equals the full causal forward
# ---------------------------------------------------------------------------------------------


def stream(model: nn.Module, features: torch.Tensor, chunk_size: int) -> torch.Tensor:
    """Encoder output of one padded (n·2C + 13, F) feature sequence decoded chunk by chunk."""
    states = get_init_states(model, 1, features.device)
    outputs = []
    window = 2 * chunk_size + 13
    for start in range(0, features.shape[0] - 13, 2 * chunk_size):
        chunk = features[start : start + window].unsqueeze(0)
        out, out_lens, states = streaming_forward(model, chunk, torch.tensor([window]), states)
        assert out_lens.tolist() == [chunk_size // 2]
        outputs.append(out[0])
    return torch.cat(outputs)


@pytest.mark.parametrize(
    "chunk_size, left_context, num_frames",
    [(8, 16, 203), (16, 32, 190), (16, 64, 150), (32, 32, 121)],
)
def test_streaming_equals_full_causal_forward(chunk_size, left_context, num_frames):
    # The left contexts are shorter than the utterances (50 Hz lengths 98, 91, 71, 57), and
    # none of the utterances is a whole number of chunks.
    model = causal_model(str(chunk_size), str(left_context))
    torch.manual_seed(5)
    features = torch.randn(num_frames, 80)
    padded = pad_for_chunks(features, chunk_size)
    with torch.no_grad():
        streamed = stream(model, padded, chunk_size)
        full, _ = model.forward_encoder(padded.unsqueeze(0), torch.tensor([padded.shape[0]]))
        torch.testing.assert_close(streamed, full[0, : streamed.shape[0]], atol=2e-5, rtol=0)
        # On the unpadded utterance the chunks that end 3 frames (the ConvNeXt's look-ahead)
        # before its end are the same too; later ones see the tail padding instead.
        unpadded, _ = model.forward_encoder(features.unsqueeze(0), torch.tensor([num_frames]))
        embed_frames = (num_frames - 7) // 2
        complete = (embed_frames - 3) // chunk_size * chunk_size // 2
        assert complete > 0
        torch.testing.assert_close(streamed[:complete], unpadded[0, :complete], atol=2e-5, rtol=0)
        both = min(streamed.shape[0], unpadded.shape[1])
        assert not torch.allclose(streamed[complete:both], unpadded[0, complete:both])


def test_batched_streams_equal_single_streams():
    chunk_size = 16
    model = causal_model("16", "32")
    torch.manual_seed(6)
    utterances = [pad_for_chunks(torch.randn(t, 80), chunk_size) for t in (230, 150)]
    window = 2 * chunk_size + 13
    with torch.no_grad():
        alone = [stream(model, u, chunk_size) for u in utterances]
        # Stream 1 starts 3 chunks after stream 0, then both run in one batch.
        states = [get_init_states(model, 1, torch.device("cpu")) for _ in utterances]
        outputs: List[List[torch.Tensor]] = [[], []]
        position = [0, 0]
        for step in range(20):
            active = [i for i in (0, 1) if (i == 0 or step >= 3) and position[i] + window <= utterances[i].shape[0]]
            if not active:
                break
            chunk = torch.stack([utterances[i][position[i] : position[i] + window] for i in active])
            out, _, new = streaming_forward(
                model, chunk, torch.full((len(active),), window), stack_states([states[i] for i in active])
            )
            for j, (i, stream_states) in enumerate(zip(active, unstack_states(new))):
                states[i] = stream_states
                outputs[i].append(out[j])
                position[i] += 2 * chunk_size
        for i in (0, 1):
            torch.testing.assert_close(torch.cat(outputs[i]), alone[i], atol=2e-5, rtol=0)


def test_unfilled_cache_slots_are_masked():
    assert cache_padding_mask(torch.tensor([0, 2, 9]), 4).int().tolist() == [
        [1, 1, 1, 1], [1, 1, 0, 0], [0, 0, 0, 0]
    ]
    # Without the mask the zero caches are attended to and the first chunks change.
    model = causal_model("16", "64")
    torch.manual_seed(7)
    padded = pad_for_chunks(torch.randn(150, 80), 16)
    chunk = padded[: 2 * 16 + 13].unsqueeze(0)
    with torch.no_grad():
        states = get_init_states(model, 1, torch.device("cpu"))
        masked, _, _ = streaming_forward(model, chunk, torch.tensor([45]), states)
        states[-1] = torch.tensor([64], dtype=torch.int32)
        unmasked, _, _ = streaming_forward(model, chunk, torch.tensor([45]), states)
    assert (masked - unmasked).abs().max() > 1e-2


# ---------------------------------------------------------------------------------------------
# Flags
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--chunk-size", "16"], "--chunk-size 16 needs --causal 1"),
        (["--left-context-frames", "128"], "--left-context-frames 128 needs --causal 1"),
        (["--causal", "1", "--chunk-size", "12"], "not a multiple of the downsampling factor 8"),
        (["--causal", "1", "--chunk-size", "16", "--left-context-frames", "32"], "at least 56"),
    ],
)
def test_bad_chunk_flags_raise_user_errors(flags, message):
    with pytest.raises(UserError, match=message):
        get_model(make_params(flags, 500))


def test_a_stored_chunk_size_of_0_is_a_user_error():
    """The flag fails at parse time (test_flags.py); a configuration from elsewhere is checked again."""
    params = make_params(["--causal", "1"], 500)
    params.chunk_size = (0,)
    with pytest.raises(UserError, match="positive or -1"):
        get_model(params)


def test_chunk_flag_defaults_are_accepted_without_causal():
    for flags in ([], ["--chunk-size", "16,32,64,-1", "--left-context-frames", "64,128,256,-1"],
                  ["--chunk-size", "-1", "--left-context-frames", "-1"]):
        encoder = get_model(make_params(TINY_MODEL_FLAGS + flags)).encoder
        assert not encoder.causal and encoder.chunk_config() == (-1, -1)


def test_causal_mismatch_between_checkpoint_and_flags_names_the_flag():
    causal = causal_model("16", "32").state_dict()
    plain = get_model(make_params(TINY_MODEL_FLAGS)).state_dict()
    with pytest.raises(UserError, match=r"^the checkpoint is a causal \(streaming\) model: pass --causal 1$"):
        check_causal(causal, False)
    with pytest.raises(UserError, match=r"^x.pt is a non-causal model: pass --causal 0$"):
        check_causal(plain, True, "x.pt")
    check_causal(causal, True)
    check_causal(plain, False)


# ---------------------------------------------------------------------------------------------
# Real streaming decoding (zipformer/decoding/streaming_session.py) against simulated streaming
# ---------------------------------------------------------------------------------------------


class RecordingDecoder(StreamingDecoder):
    """Keeps every stream's encoder output chunk by chunk."""

    def __init__(self, *args) -> None:
        super().__init__(*args)
        self.outputs: Dict[str, List[torch.Tensor]] = {}

    def step(self, streams):
        encoder_out = super().step(streams)
        for stream, out in zip(streams, encoder_out):
            self.outputs.setdefault(stream.cut_id, []).append(out)
        return encoder_out


def simulated_streaming(model: nn.Module, features: torch.Tensor) -> torch.Tensor:
    """decode.py's encoder output for a causal model: 30 tail frames, full forward."""
    padded, lens = append_tail_padding(features.unsqueeze(0), torch.tensor([features.shape[0]]))
    return model.forward_encoder(padded, lens)[0][0]


class _WordsOfTokens:
    """A stand-in BPE model: one word per token id."""

    def decode(self, hyps: List[List[int]]) -> List[str]:
        return [" ".join(map(str, hyp)) for hyp in hyps]


@pytest.mark.parametrize("chunk_size, left_context, tail", [("-1", "-1", 0), ("16", "32", TAIL_PAD_FRAMES)])
def test_decode_pads_the_tail_only_when_decoding_in_chunks(chunk_size, left_context, tail):
    # Full context decodes the utterance as it is, as sherpa-onnx's offline recognizer does.
    model = causal_model(chunk_size, left_context)
    seen = []
    forward_encoder = model.forward_encoder
    model.forward_encoder = lambda x, x_lens: seen.append(x_lens.tolist()) or forward_encoder(x, x_lens)
    params = AttributeDict(
        causal=True, chunk_size=(int(chunk_size),), left_context_frames=(int(left_context),),
        decoding_method="greedy_search", max_sym_per_frame=1,
    )
    batch = {"inputs": torch.randn(2, 120, 80), "supervisions": {"num_frames": torch.tensor([120, 90])}}
    with torch.no_grad():
        words = decode_batch(params, model, _WordsOfTokens(), batch)
    assert seen == [[120 + tail, 90 + tail]] and len(words) == 2


@pytest.mark.parametrize("method", ["greedy_search", "modified_beam_search"])
def test_real_streaming_encoder_output_equals_simulated_streaming(method):
    chunk_size = 16
    model = causal_model("16", "32")
    params = AttributeDict(decoding_method=method, beam_size=3)
    torch.manual_seed(8)
    utterances = [(f"utt{i}", ["ref"], torch.randn(t, 80)) for i, t in enumerate((230, 97, 161))]
    decoder = RecordingDecoder(model, params, chunk_size)
    with torch.no_grad():
        finished = {stream.cut_id: tokens for stream, tokens in decoder.decode(utterances, max_streams=2)}
        assert sorted(finished) == ["utt0", "utt1", "utt2"]
        assert decoder.stats.steps < sum(len(chunks) for chunks in decoder.outputs.values())  # batched
        for cut_id, _, features in utterances:
            streamed = torch.cat(decoder.outputs[cut_id])
            simulated = simulated_streaming(model, features)
            # Chunks complete in the simulated forward (with the 3 look-ahead frames) agree.
            embed_frames = (features.shape[0] + 30 - 7) // 2
            complete = (embed_frames - 3) // chunk_size * chunk_size // 2
            torch.testing.assert_close(streamed[:complete], simulated[:complete], atol=2e-5, rtol=0)
            # Real streaming covers the whole padded utterance.
            assert streamed.shape[0] >= simulated.shape[0]
            if method == "greedy_search":
                # The tokens are the searches over the streamed frames.
                expected = greedy_search_batch(model, streamed.unsqueeze(0), torch.tensor([streamed.shape[0]]))
                assert finished[cut_id] == expected[0]


def test_streaming_flags_are_checked():
    base = AttributeDict(
        causal=True, chunk_size=(16,), left_context_frames=(64,), decoding_method="greedy_search",
        max_sym_per_frame=1, num_decode_streams=10,
    )
    assert check_streaming_flags(base) == (16, 64)
    for change, message in [
        (dict(causal=False), "--causal 1"),
        (dict(decoding_method="beam_search"), "not available for streaming"),
        (dict(chunk_size=(16, 32)), "one --chunk-size"),
        (dict(left_context_frames=(40,)), "not a multiple of --chunk-size 16: use e.g. 32"),
        (dict(left_context_frames=(-1,)), "finite"),
    ]:
        with pytest.raises(UserError, match=message):
            check_streaming_flags(AttributeDict(base, **change))


# ---------------------------------------------------------------------------------------------
# Adapters on a causal model
# ---------------------------------------------------------------------------------------------


def test_adapters_act_in_streaming_as_in_the_full_forward():
    chunk_size = 16
    model = causal_model("16", "32")
    torch.manual_seed(9)
    features = pad_for_chunks(torch.randn(170, 80), chunk_size)
    lens = torch.tensor([features.shape[0]])
    with torch.no_grad():
        base_streamed = stream(model, features, chunk_size)
        base_full = model.forward_encoder(features.unsqueeze(0), lens)[0]
        add_adapters(model, 4, init="icefall")
        for name, param in model.named_parameters():
            if "adapter" in name:
                param.normal_(std=0.3)
        adapted = stream(model, features, chunk_size)
        full = model.forward_encoder(features.unsqueeze(0), lens)[0]
        torch.testing.assert_close(adapted, full[0, : adapted.shape[0]], atol=2e-5, rtol=0)
        assert (adapted - base_streamed).abs().max() > 0.1
        # Switched off (what --use-adapters 0 decodes), both paths give the base model exactly.
        with tuner_disabled(model, AdapterTuner()):
            assert torch.equal(stream(model, features, chunk_size), base_streamed)
            assert torch.equal(model.forward_encoder(features.unsqueeze(0), lens)[0], base_full)


def test_traced_causal_encoder_has_full_context():
    # As icefall's export: no chunk mask in a traced full forward, whatever the chunk flags.
    model = causal_model("16", "32")
    x, lens = torch.randn(1, 120, 80), torch.tensor([120])
    with torch.no_grad():
        embed, embed_lens = model.encoder_embed(x, lens)
        embed = embed.permute(1, 0, 2)
        traced = torch.jit.trace(model.encoder, (embed, embed_lens), check_trace=False)
        chunked = model.encoder(embed, embed_lens)[0]
        model.encoder.chunk_size, model.encoder.left_context_frames = (-1,), (-1,)
        full = model.encoder(embed, embed_lens)[0]
        torch.testing.assert_close(traced(embed, embed_lens)[0], full)
        assert not torch.allclose(chunked, full)
