"""Streaming ONNX export (zipformer/deploy/export_streaming.py and the export-onnx-streaming.py scripts
of the base, adapter and LoRA recipes) and chunk-by-chunk decoding of the files with onnxruntime
(zipformer/deploy/streaming_inference.py, onnx_pretrained-streaming.py).

A tiny causal model with random weights (non-trivial chunk scales, biases and adapters of dim 4,
the joiner biased away from <unk>) is exported by the scripts, run in this process; most tests
read those files. sherpa-onnx's online recognizer on a briefly trained model: see
test_sherpa_online.py.
"""
import argparse
import shutil
from pathlib import Path
from types import SimpleNamespace
from typing import Dict, List, Sequence

import numpy as np
import onnx
import pytest
import torch
from test_onnx_export import run_main, write_tokens

from zipformer.checkpoints.config import model_config
from zipformer.checkpoints.loader import DecodingRecipe
from zipformer.checkpoints.vocabulary import tokens_vocabulary
from zipformer.core.errors import UserError
from zipformer.core.params import AttributeDict
from zipformer.decoding.streaming_session import StreamingDecoder
from zipformer.deploy.export import export_encoder
from zipformer.deploy.export_streaming import (
    LAYER_STATE_NAMES,
    OnnxStreamingEncoder,
    onnx_init_states,
    state_names,
    streaming_differences,
    streaming_metadata,
)
from zipformer.deploy.inference import read_tokens, tokens_to_text
from zipformer.deploy.streaming_inference import OnnxStreamingTransducer
from zipformer.model.builder import get_model
from zipformer.model.flags import add_model_arguments
from zipformer.tuners.recipes import TunerDecodingRecipe, get_tuned_model
from zipformer_adapter.adapter import AdapterTuner
from zipformer_lora.lora import LoraTuner

from conftest import TINY_MODEL_FLAGS, run_script

REPO = Path(__file__).resolve().parents[1]
BASE_EXPORT = REPO / "zipformer" / "export-onnx-streaming.py"
ADAPTER_EXPORT = REPO / "zipformer_adapter" / "export-onnx-streaming.py"
LORA_EXPORT = REPO / "zipformer_lora" / "export-onnx-streaming.py"
PRETRAINED = REPO / "zipformer" / "onnx_pretrained-streaming.py"

CHUNK, LEFT = 16, 32
CHUNK_FLAGS = ["--causal", "1", "--chunk-size", str(CHUNK), "--left-context-frames", str(LEFT)]
CHECKPOINT_FLAGS = ["--epoch", "1", "--avg", "1", "--use-averaged-model", "0"]
SUFFIX = f"epoch-1-avg-1-chunk-{CHUNK}-left-{LEFT}"
NUM_LAYERS = 6  # one per stack
UNK_ID = 2
LETTERS = [chr(c) for c in range(ord("A"), ord("Z") + 1)]
SYMBOLS = ["<blk>", "<sos/eos>", "<unk>", "\u2581"] + LETTERS + ["\u2581" + c for c in LETTERS[:10]]
ADAPTER_DIM = 4
LORA_RANK = 2


def tiny_params(**extra) -> AttributeDict:
    parser = argparse.ArgumentParser()
    add_model_arguments(parser)
    params = AttributeDict(vars(parser.parse_args(TINY_MODEL_FLAGS + CHUNK_FLAGS)))
    params.update(feature_dim=80, vocab_size=len(SYMBOLS), blank_id=0, context_size=2, **extra)
    return params


def random_tuned_model(params: AttributeDict, tuner, seed: int = 0) -> torch.nn.Module:
    """A tiny causal model whose chunk scales, biases and tuner weights all matter."""
    torch.manual_seed(seed)
    model = get_tuned_model(params, tuner)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "adapter" in name and "out_proj" in name or "lora_B" in name:
                param.normal_(0.0, 0.1)  # fresh tuners are the identity: make them matter
            elif "scale" in name or name.endswith("bias"):
                param.add_(0.3 * torch.randn_like(param))
        model.joiner.output_linear.weight.mul_(4.0)  # varied (random) transcripts
        model.joiner.output_linear.bias[UNK_ID] = -30.0  # sherpa-onnx never emits <unk>
    return model.eval()


def save_checkpoint(model: torch.nn.Module, params: AttributeDict, recipe, exp_dir: Path, base_only: bool = False) -> None:
    exp_dir.mkdir(parents=True, exist_ok=True)
    state = {k: v for k, v in model.state_dict().items() if not base_only or ("adapter" not in k and "lora" not in k)}
    torch.save(
        {
            "model": state,
            "model_config": model_config(params, recipe.config_keys),
            "vocabulary": tokens_vocabulary(dict(enumerate(SYMBOLS))),
        },
        exp_dir / "epoch-1.pt",
    )


def onnx_files(exp_dir: Path, suffix: str = SUFFIX) -> Dict[str, Path]:
    files = {}
    for name in ("encoder", "decoder", "joiner"):
        files[name] = exp_dir / f"{name}-{suffix}.onnx"
        files[f"{name}.int8"] = exp_dir / f"{name}-{suffix}.int8.onnx"
    return files


def export_argv(exp_dir: Path, tokens: Path, *extra: str) -> List[str]:
    return ["--tokens", str(tokens), "--exp-dir", str(exp_dir), *CHECKPOINT_FLAGS, *TINY_MODEL_FLAGS, *CHUNK_FLAGS, *extra]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> SimpleNamespace:
    """One adapter checkpoint exported with adapters on (adapted/) and off (adapters_off/), and its
    base weights alone exported by the base recipe (base/)."""
    root = tmp_path_factory.mktemp("onnx_streaming")
    tokens = write_tokens(root / "tokens.txt", SYMBOLS)
    tuner = AdapterTuner()
    params = tiny_params(use_adapters=True, adapter_dim=ADAPTER_DIM)
    model = random_tuned_model(params, tuner)
    save_checkpoint(model, params, TunerDecodingRecipe(tuner), root / "adapted")
    shutil.copytree(root / "adapted", root / "adapters_off")
    base_params = tiny_params()
    save_checkpoint(model, base_params, DecodingRecipe(), root / "base", base_only=True)

    adapter_flags = ["--use-adapters", "1", "--adapter-dim", str(ADAPTER_DIM)]
    run_main(ADAPTER_EXPORT, export_argv(root / "adapted", tokens, *adapter_flags))
    run_main(ADAPTER_EXPORT, export_argv(root / "adapters_off", tokens, "--use-adapters", "0"))
    run_main(BASE_EXPORT, export_argv(root / "base", tokens))
    return SimpleNamespace(
        root=root, tokens=tokens, model=model,
        adapted=onnx_files(root / "adapted"), off=onnx_files(root / "adapters_off"), base=onnx_files(root / "base"),
    )


def session(files: Dict[str, Path], int8: bool = False) -> OnnxStreamingTransducer:
    kind = ".int8" if int8 else ""
    return OnnxStreamingTransducer.from_files(files[f"encoder{kind}"], files[f"decoder{kind}"], files[f"joiner{kind}"])


def random_features(seed: int, lengths: Sequence[int]) -> List[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.normal(-6.0, 3.0, size=(n, 80)).astype(np.float32) for n in lengths]


def stream_encoder_out(model: OnnxStreamingTransducer, features: np.ndarray) -> np.ndarray:
    """(T, 80) -> the encoder outputs of all chunks of one stream, (chunks · C/2, J)."""
    states, outputs = model.init_states(1), []
    for start in range(0, features.shape[0] - model.window + 1, model.decode_chunk_len):
        encoder_out, states = model.run_chunk(features[None, start : start + model.window], states)
        outputs.append(encoder_out[0])
    return np.concatenate(outputs)


# ---------------------------------------------------------------------------------------------
# The contract sherpa-onnx reads
# ---------------------------------------------------------------------------------------------


def test_files_are_written_fp32_and_int8_without_leftovers(tiny):
    for files in (tiny.adapted, tiny.off, tiny.base):
        assert all(path.is_file() for path in files.values()), files
        assert files["encoder.int8"].stat().st_size < 0.8 * files["encoder"].stat().st_size
    assert not list(tiny.root.rglob(".tmp-*"))


@pytest.mark.parametrize("int8", [False, True])
def test_encoder_inputs_and_outputs_follow_the_online_zipformer2_contract(tiny, int8):
    model = onnx.load(str(tiny.adapted["encoder.int8" if int8 else "encoder"]))
    assert model.opset_import[0].version == 13
    names = [f"{n}_{layer}" for layer in range(NUM_LAYERS) for n in LAYER_STATE_NAMES] + ["embed_states", "processed_lens"]
    assert [i.name for i in model.graph.input] == ["x", *names]
    assert [o.name for o in model.graph.output] == ["encoder_out", *(f"new_{n}" for n in names)]
    shapes = {
        v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]
        for v in [*model.graph.input, *model.graph.output]
    }
    assert shapes["x"] == ["N", 2 * CHUNK + 13, 80]
    # Its time axis (C / 2 frames) is computed in the graph, so only N and J are declared.
    assert shapes["encoder_out"][0] == "N" and shapes["encoder_out"][2] == 32
    assert shapes["embed_states"] == ["N", 128, 3, 19]
    assert shapes["processed_lens"] == ["N"]
    assert shapes["cached_key_0"] == [LEFT, "N", 2 * 8] and shapes["cached_conv1_0"] == ["N", 32, 7 // 2]
    processed = next(i for i in model.graph.input if i.name == "processed_lens")
    assert processed.type.tensor_type.elem_type == onnx.TensorProto.INT64


def test_metadata_describes_the_states_as_sherpa_onnx_builds_them(tiny):
    """sherpa-onnx makes its zero states from the metadata alone: they must be the inputs' shapes."""
    model = session(tiny.adapted)
    meta = model.model.encoder.get_modelmeta().custom_metadata_map
    assert meta["model_type"] == "zipformer2" and meta["comment"] == "streaming zipformer2"
    assert (meta["decode_chunk_len"], meta["T"]) == (str(2 * CHUNK), str(2 * CHUNK + 13))
    assert meta["left_context_len"] == "32,16,8,4,8,16"
    per_stack = {k: [int(v) for v in meta[k].split(",")] for k in (
        "num_encoder_layers", "encoder_dims", "cnn_module_kernels", "left_context_len",
        "query_head_dims", "value_head_dims", "num_heads")}
    expected = []
    for i, layers in enumerate(per_stack["num_encoder_layers"]):
        left, heads, dim = per_stack["left_context_len"][i], per_stack["num_heads"][i], per_stack["encoder_dims"][i]
        conv = [1, dim, per_stack["cnn_module_kernels"][i] // 2]
        value = [left, 1, per_stack["value_head_dims"][i] * heads]
        expected += layers * [[left, 1, per_stack["query_head_dims"][i] * heads], [1, 1, left, 3 * dim // 4], value, value, conv, conv]
    expected += [[1, 128, 3, 19], [1]]
    assert [list(s.shape) for s in model.init_states(1)] == expected
    assert meta["use_adapters"] == "1" and meta["adapter_dim"] == str(ADAPTER_DIM)
    decoder_meta = model.model.decoder.get_modelmeta().custom_metadata_map
    assert (decoder_meta["context_size"], decoder_meta["vocab_size"]) == ("2", str(len(SYMBOLS)))


def test_icefall_normal_model_gets_icefall_streaming_metadata_and_99_inputs():
    """icefall's default causal model at C = 16, L = 128: the values its export writes."""
    parser = argparse.ArgumentParser()
    add_model_arguments(parser)
    params = AttributeDict(vars(parser.parse_args(["--causal", "1", "--chunk-size", "16", "--left-context-frames", "128"])))
    params.update(feature_dim=80, vocab_size=500, blank_id=0, context_size=2)
    model = get_model(params).eval()
    assert streaming_metadata(model, 16, 128) == {
        "model_type": "zipformer2", "version": "1", "model_author": "k2-fsa", "comment": "streaming zipformer2",
        "decode_chunk_len": "32", "T": "45", "num_encoder_layers": "2,2,3,4,3,2",
        "encoder_dims": "192,256,384,512,384,256", "cnn_module_kernels": "31,31,15,15,15,31",
        "left_context_len": "128,64,32,16,32,64", "query_head_dims": "32,32,32,32,32,32",
        "value_head_dims": "12,12,12,12,12,12", "num_heads": "4,4,4,8,4,4",
    }
    states = onnx_init_states(model, 1)
    assert len(state_names(16)) == len(states) == 98  # + x: 99 inputs
    assert [tuple(s.shape) for s in states[42:48]] == [
        (16, 1, 256), (1, 1, 16, 384), (16, 1, 96), (16, 1, 96), (1, 512, 7), (1, 512, 7)
    ]  # layer 7, the first of stack 3
    assert tuple(states[-2].shape) == (1, 128, 3, 19) and states[-1].dtype == torch.int64


# ---------------------------------------------------------------------------------------------
# onnxruntime against PyTorch
# ---------------------------------------------------------------------------------------------


def test_onnxruntime_encoder_equals_pytorch_chunk_for_chunk(tiny):
    differences = streaming_differences(tiny.model, tiny.adapted, CHUNK, LEFT)
    assert max(differences.values()) < 1e-4, differences


@torch.no_grad()
def test_onnxruntime_single_stream_equals_pytorch_over_a_long_utterance(tiny):
    """9 chunks (the cache holds 2) of one stream, batch 1, compared chunk by chunk."""
    model = session(tiny.adapted)
    features = random_features(3, [9 * 2 * CHUNK + 13])[0]
    states = onnx_init_states(tiny.model, 1)
    wrapper, torch_outputs = OnnxStreamingEncoder(tiny.model).eval(), []
    for start in range(0, features.shape[0] - model.window + 1, model.decode_chunk_len):
        out, *states = wrapper(torch.from_numpy(features[None, start : start + model.window]), *states)
        torch_outputs.append(out[0].numpy())
    np.testing.assert_allclose(stream_encoder_out(model, features), np.concatenate(torch_outputs), atol=1e-4, rtol=0)


def test_streaming_greedy_search_equals_pytorch_streaming_decoding(tiny):
    """Utterances of unequal lengths streamed as one batch (onnxruntime) and by the PyTorch
    StreamingDecoder give the same tokens."""
    features = random_features(1, [163, 117, 58, 301])
    got = session(tiny.adapted).decode_utterances(features)
    params = AttributeDict(decoding_method="greedy_search")
    decoder = StreamingDecoder(tiny.model, params, CHUNK)
    utterances = [(str(i), [], torch.from_numpy(f)) for i, f in enumerate(features)]
    expected = {stream.cut_id: tokens for stream, tokens in decoder.decode(utterances, max_streams=2)}
    assert got == [expected[str(i)] for i in range(len(features))]
    assert sum(len(tokens) > 0 for tokens in got) >= 2, got


def test_int8_encoder_streams_close_to_fp32(tiny):
    features = random_features(2, [5 * 2 * CHUNK + 13])[0]
    fp32 = stream_encoder_out(session(tiny.adapted), features)
    int8 = stream_encoder_out(session(tiny.adapted, int8=True), features)
    assert np.abs(int8 - fp32).max() < 0.1 * np.abs(fp32).max()


# ---------------------------------------------------------------------------------------------
# Tuners
# ---------------------------------------------------------------------------------------------


def test_adapters_are_kept_and_adapters_off_is_the_base_export(tiny):
    features = random_features(4, [6 * 2 * CHUNK + 13])[0]
    adapted, off, base = (stream_encoder_out(session(files), features) for files in (tiny.adapted, tiny.off, tiny.base))
    assert np.abs(adapted - base).max() > 1e-2
    assert np.array_equal(off, base)
    off_meta = session(tiny.off).model.encoder.get_modelmeta().custom_metadata_map
    assert off_meta["use_adapters"] == "0" and off_meta["base_fingerprint"]


def test_lora_streaming_export_merged_equals_unmerged(tmp_path):
    tuner = LoraTuner()
    params = tiny_params(use_lora=True, lora_r=LORA_RANK, lora_alpha=4.0)
    model = random_tuned_model(params, tuner, seed=1)
    save_checkpoint(model, params, TunerDecodingRecipe(tuner), tmp_path)
    tokens = write_tokens(tmp_path / "tokens.txt", SYMBOLS)
    lora_flags = ["--use-lora", "1", "--lora-r", str(LORA_RANK)]
    run_main(LORA_EXPORT, export_argv(tmp_path, tokens, *lora_flags))
    run_main(LORA_EXPORT, export_argv(tmp_path, tokens, *lora_flags, "--merge-lora", "1"))
    merged = onnx_files(tmp_path, f"epoch-1-avg-1-lora-merged-chunk-{CHUNK}-left-{LEFT}")
    features = random_features(5, [4 * 2 * CHUNK + 13])[0]
    unmerged_out = stream_encoder_out(session(onnx_files(tmp_path)), features)
    np.testing.assert_allclose(stream_encoder_out(session(merged), features), unmerged_out, atol=1e-4, rtol=0)
    meta = session(merged).model.encoder.get_modelmeta().custom_metadata_map
    assert meta["lora_merged"] == "1" and meta["decode_chunk_len"] == str(2 * CHUNK)


# ---------------------------------------------------------------------------------------------
# onnx_pretrained-streaming.py and bad input
# ---------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_onnx_pretrained_streaming_prints_the_streaming_transcripts(tiny, tmp_path):
    import soundfile as sf

    rng = np.random.default_rng(6)
    audio = []
    for i, seconds in enumerate((1.3, 2.1)):
        path = tmp_path / f"{i}.wav"
        sf.write(path, (0.1 * rng.standard_normal(int(seconds * 16000))).astype(np.float32), 16000)
        audio.append(path)
    from zipformer.deploy.inference import compute_fbank, read_wave

    model = session(tiny.adapted)
    table = read_tokens(tiny.tokens)
    expected = [tokens_to_text(t, table) for t in model.decode_utterances([compute_fbank(read_wave(a)) for a in audio])]
    files = tiny.adapted
    proc = run_script(
        str(PRETRAINED.relative_to(REPO)), "--encoder-model-filename", files["encoder"],
        "--decoder-model-filename", files["decoder"], "--joiner-model-filename", files["joiner"],
        "--tokens", tiny.tokens, "--batch-size", "1", *audio,
    )
    assert proc.stdout.splitlines() == [f"{a}: {text}" for a, text in zip(audio, expected)]


def _export_error(script: Path, argv: List[str]) -> str:
    with pytest.raises(SystemExit) as info:
        run_main(script, argv)
    return str(info.value.code)


def test_non_causal_checkpoint_is_refused_with_the_fix(tiny, tmp_path):
    params = tiny_params()
    params.update(causal=False, chunk_size="-1", left_context_frames="-1")
    torch.manual_seed(0)
    save_checkpoint(get_model(params), params, DecodingRecipe(), tmp_path)
    argv = ["--tokens", str(tiny.tokens), "--exp-dir", str(tmp_path), *CHECKPOINT_FLAGS, *TINY_MODEL_FLAGS,
            "--chunk-size", str(CHUNK), "--left-context-frames", str(LEFT)]
    message = _export_error(BASE_EXPORT, argv)
    assert message.startswith("error: ") and "non-causal" in message and "--causal 1" in message
    assert "\n" not in message and not list(tmp_path.glob("*.onnx"))


@pytest.mark.parametrize(
    "chunk_flags, words",
    [
        (["--chunk-size", "16,32", "--left-context-frames", "32"], "the streaming export (one latency per file) takes one --chunk-size"),
        (["--chunk-size", "16", "--left-context-frames", "64,128"], "takes one --chunk-size and one --left-context-frames"),
        (["--chunk-size", "16", "--left-context-frames", "40"], "not a multiple of --chunk-size 16"),
    ],
)
def test_chunk_flags_need_one_usable_value(tiny, chunk_flags, words):
    argv = ["--tokens", str(tiny.tokens), "--exp-dir", str(tiny.root / "base"), *CHECKPOINT_FLAGS,
            *TINY_MODEL_FLAGS, "--causal", "1", *chunk_flags]
    message = _export_error(BASE_EXPORT, argv)
    assert message.startswith("error: ") and words in message and "\n" not in message


def test_truncated_or_non_streaming_files_are_user_errors(tiny, tmp_path):
    truncated = tmp_path / "encoder.onnx"
    truncated.write_bytes(tiny.adapted["encoder"].read_bytes()[:5000])
    with pytest.raises(UserError, match="cannot be loaded, it is truncated or not an ONNX file .*: export it again"):
        OnnxStreamingTransducer.from_files(truncated, tiny.adapted["decoder"], tiny.adapted["joiner"])
    full_context = tmp_path / "full-context-encoder.onnx"
    export_encoder(tiny.model, full_context, 80, {"model_type": "zipformer2"})
    with pytest.raises(UserError, match="not a streaming encoder .*export-onnx-streaming.py"):
        OnnxStreamingTransducer.from_files(full_context, tiny.adapted["decoder"], tiny.adapted["joiner"])


@pytest.mark.slow
def test_non_streaming_script_points_to_the_streaming_one(tiny, tmp_path):
    files = tiny.adapted
    proc = run_script(
        "zipformer/onnx_pretrained.py", "--encoder-model-filename", files["encoder"],
        "--decoder-model-filename", files["decoder"], "--joiner-model-filename", files["joiner"],
        "--tokens", tiny.tokens, tmp_path / "unused.wav", check=False,
    )
    assert proc.returncode != 0
    assert proc.stderr.strip().splitlines()[-1].endswith("is a streaming encoder: transcribe with ./zipformer/onnx_pretrained-streaming.py")
