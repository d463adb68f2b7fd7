"""ONNX export (zipformer/deploy/export.py and both export-onnx.py scripts), decoding the exported files
with onnxruntime (onnx_inference, onnx_pretrained.py, onnx_decode.py) and with sherpa-onnx.

One tiny model with random weights (adapters of dim 8 made non-trivial, the joiner biased away from
<unk>, which sherpa-onnx never emits) is exported once with the tutorial's command line; most tests
read those files. Utterances are synthesized with espeak-ng.
"""
import argparse
import json
import logging
import runpy
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Dict, Iterator, List, Sequence

import numpy as np
import onnx
import pytest
import torch

from zipformer.checkpoints.averaging import load_averaged_state_dict
from zipformer.checkpoints.checkpoint import tensors_fingerprint
from zipformer.checkpoints.config import model_config
from zipformer.checkpoints.loader import DecodingRecipe
from zipformer.checkpoints.vocabulary import tokens_vocabulary
from zipformer.core.errors import UserError
from zipformer.core.params import AttributeDict
from zipformer.decoding.beam_search import greedy_search_batch
from zipformer.deploy.export import OnnxDecoder, OnnxEncoder, OnnxJoiner, read_metadata
from zipformer.deploy.inference import (
    LOG_EPS,
    OnnxTransducer,
    compute_fbank,
    pad_features,
    read_tokens,
    read_wave,
    tokens_to_text,
)
from zipformer.model.builder import get_model as get_base_model
from zipformer.model.flags import add_model_arguments
from zipformer.tuners.files import base_fingerprint, save_tuner_file
from zipformer.tuners.recipes import TunerDecodingRecipe, get_tuned_model
from zipformer.tuners.tensors import tuner_disabled, tuner_tensors
from zipformer_adapter.adapter import AdapterTuner

from conftest import run_script

TUNER = AdapterTuner()


def get_adapter_model(params: AttributeDict) -> torch.nn.Module:
    return get_tuned_model(params, TUNER)

REPO = Path(__file__).resolve().parents[1]
ADAPTER_EXPORT = REPO / "zipformer_adapter" / "export-onnx.py"
BASE_EXPORT = REPO / "zipformer" / "export-onnx.py"

TINY_FLAGS = [
    "--num-encoder-layers", "1",
    "--downsampling-factor", "1,2,4",
    "--feedforward-dim", "96,128,96",
    "--num-heads", "2",
    "--encoder-dim", "64,96,64",
    "--query-head-dim", "16",
    "--value-head-dim", "8",
    "--pos-head-dim", "4",
    "--pos-dim", "16",
    "--encoder-unmasked-dim", "48",
    "--cnn-module-kernel", "15,31,15",
    "--decoder-dim", "64",
    "--joiner-dim", "64",
]
# The rest of the tutorial's command line (values of the normal model's non-shape flags).
TUTORIAL_FLAGS = ["--causal", "False", "--chunk-size", "16,32,64,-1", "--left-context-frames", "64,128,256,-1"]
ADAPTER_DIM = 8
NUM_LAYERS = 3  # one per stack
UNK_ID = 2
LETTERS = [chr(c) for c in range(ord("A"), ord("Z") + 1)]
SYMBOLS = ["<blk>", "<sos/eos>", "<unk>", "\u2581"] + LETTERS + ["\u2581" + c for c in LETTERS[:15]]
TEXTS = ["Hello world", "The quick brown fox jumps over the lazy dog", "Export the model and decode it", "Adapters"]




def model_params(use_adapters: bool) -> AttributeDict:
    parser = argparse.ArgumentParser()
    add_model_arguments(parser)
    params = AttributeDict(vars(parser.parse_args(TINY_FLAGS)))
    params.update(feature_dim=80, vocab_size=len(SYMBOLS), blank_id=0, context_size=2)
    params.update(use_adapters=use_adapters, adapter_dim=ADAPTER_DIM)
    return params


def write_tokens(path: Path, symbols: Sequence[str]) -> Path:
    path.write_text("".join(f"{s} {i}\n" for i, s in enumerate(symbols)), encoding="utf-8")
    return path


@contextmanager
def restored_root_logging() -> Iterator[None]:
    """The scripts' setup_logger replaces the root handlers (pytest's among them): put them back."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        yield
    finally:
        for handler in list(root.handlers):
            root.removeHandler(handler)
            if handler not in handlers:
                handler.close()
        for handler in handlers:
            root.addHandler(handler)
        root.setLevel(level)


def load_script(script: Path) -> dict:
    """A script's functions, to call in this process (saves a Python start-up per call)."""
    return runpy.run_path(str(script), run_name=f"{script.stem}_under_test")


def run_main(script: Path, argv: List[str]) -> Dict[str, Path]:
    with restored_root_logging():
        return load_script(script)["main"](argv)


def export_argv(exp_dir: Path, tokens: Path, *extra: str) -> List[str]:
    return ["--tokens", str(tokens), "--exp-dir", str(exp_dir), *TINY_FLAGS, *extra]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> SimpleNamespace:
    """An adapter exp dir (epoch-3.pt, adapter-epoch-3.pt, base.pt), a base exp dir with averaged
    checkpoints (epoch-1.pt, epoch-2.pt), tokens.txt, and the PyTorch models."""
    root = tmp_path_factory.mktemp("onnx")
    exp_dir, base_dir = root / "exp", root / "base"
    exp_dir.mkdir()
    base_dir.mkdir()
    tokens = write_tokens(root / "tokens.txt", SYMBOLS)

    torch.manual_seed(0)
    model = get_adapter_model(model_params(use_adapters=True))
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "adapter" in name and "out_proj" in name:
                param.normal_(0.0, 0.1)  # fresh adapters are the identity: make them matter
        model.joiner.output_linear.weight.mul_(4.0)  # more varied (random) transcripts
        model.joiner.output_linear.bias[UNK_ID] = -30.0
    model.eval()
    info = {
        "batch_idx_train": 300,
        "average_period": 10,
        "model_config": model_config(model_params(use_adapters=True), TunerDecodingRecipe(TUNER).config_keys),
        "vocabulary": tokens_vocabulary(dict(enumerate(SYMBOLS))),
    }
    torch.save({"model": model.state_dict(), **info}, exp_dir / "epoch-3.pt")
    base_state = {k: v for k, v in model.state_dict().items() if "adapter" not in k}
    torch.save({"model": base_state}, root / "base.pt")
    save_tuner_file(exp_dir / "adapter-epoch-3.pt", model, None, info, TUNER)

    start = {k: v + 0.01 * torch.randn_like(v) for k, v in base_state.items()}
    for epoch, (weights, batches) in enumerate(((start, 100), (base_state, 200)), start=1):
        torch.save(
            {"model": weights, "model_avg": weights, "batch_idx_train": batches, "average_period": 10},
            base_dir / f"epoch-{epoch}.pt",
        )
    averaged = load_averaged_state_dict(
        {"epoch": 2, "iter": 0, "avg": 1, "use_averaged_model": True, "exp_dir": base_dir}
    ).state_dict
    base_model = get_base_model(model_params(use_adapters=False))
    base_model.load_state_dict(averaged)
    return SimpleNamespace(
        root=root, exp_dir=exp_dir, base_dir=base_dir, tokens=tokens, model=model, base_model=base_model.eval()
    )


@pytest.fixture(scope="module")
def exported(tiny) -> Dict[str, Path]:
    """The tutorial's command line, run as a script."""
    argv = export_argv(
        tiny.exp_dir, tiny.tokens, "--use-averaged-model", "false", "--epoch", "3", "--avg", "1",
        "--use-adapters", "1", "--adapter-dim", str(ADAPTER_DIM), *TUTORIAL_FLAGS,
    )
    result = run_script(ADAPTER_EXPORT, *argv, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    files = {}
    for name in ("encoder", "decoder", "joiner"):
        files[name] = tiny.exp_dir / f"{name}-epoch-3-avg-1.onnx"
        files[f"{name}.int8"] = tiny.exp_dir / f"{name}-epoch-3-avg-1.int8.onnx"
    return files


@pytest.fixture(scope="module")
def utterances(tmp_path_factory) -> SimpleNamespace:
    """Synthesized 16 kHz utterances: audio files, their fbank, and a cut set with lhotse features."""
    from local.synth.synthesize_corpus import synthesize_utterances

    out_dir = tmp_path_factory.mktemp("utterances")
    cuts = synthesize_utterances(TEXTS, out_dir)
    audio = [Path(cut.recording.sources[0].source) for cut in cuts]
    features = [compute_fbank(read_wave(a)) for a in audio]
    return SimpleNamespace(cuts=cuts, cuts_file=out_dir / "cuts.jsonl.gz", audio=audio, features=features)


def random_features(seed: int, lengths: Sequence[int]) -> List[np.ndarray]:
    """fbank-like (T, 80) arrays."""
    rng = np.random.default_rng(seed)
    return [rng.normal(-6.0, 3.0, size=(n, 80)).astype(np.float32) for n in lengths]


def transducer(files: Dict[str, Path], int8: bool = False) -> OnnxTransducer:
    kind = ".int8" if int8 else ""
    return OnnxTransducer(files[f"encoder{kind}"], files[f"decoder{kind}"], files[f"joiner{kind}"])


@torch.no_grad()
def torch_greedy(model, features: Sequence[np.ndarray]) -> List[List[int]]:
    x, x_lens = pad_features(features)
    encoder_out, encoder_out_lens = model.forward_encoder(torch.from_numpy(x), torch.from_numpy(x_lens))
    return greedy_search_batch(model, encoder_out, encoder_out_lens)


# ---------------------------------------------------------------------------------------------
# Files, names, metadata
# ---------------------------------------------------------------------------------------------


def test_tutorial_command_writes_fp32_and_int8_files(exported, tiny):
    for path in exported.values():
        assert path.is_file(), path
    assert exported["encoder.int8"].stat().st_size < 0.7 * exported["encoder"].stat().st_size
    assert not list(tiny.exp_dir.glob(".tmp-*")), "temporary files left behind"


def _value_info(value) -> tuple:
    tensor_type = value.type.tensor_type
    dims = tuple(d.dim_param or d.dim_value for d in tensor_type.shape.dim)
    return value.name, onnx.TensorProto.DataType.Name(tensor_type.elem_type), dims


@pytest.mark.parametrize("int8", [False, True])
def test_io_names_dtypes_dynamic_axes_and_opset(exported, int8):
    kind = ".int8" if int8 else ""
    graphs = {name: onnx.load(str(exported[name + kind])) for name in ("encoder", "decoder", "joiner")}
    for model in graphs.values():
        assert {o.domain: o.version for o in model.opset_import}[""] == 13
    signatures = {
        name: ([_value_info(v) for v in m.graph.input], [_value_info(v) for v in m.graph.output])
        for name, m in graphs.items()
    }
    assert signatures["encoder"] == (
        [("x", "FLOAT", ("N", "T", 80)), ("x_lens", "INT64", ("N",))],
        [("encoder_out", "FLOAT", ("N", "T", 64)), ("encoder_out_lens", "INT64", ("N",))],
    )
    assert signatures["decoder"] == ([("y", "INT64", ("N", 2))], [("decoder_out", "FLOAT", ("N", 64))])
    assert signatures["joiner"] == (
        [("encoder_out", "FLOAT", ("N", 64)), ("decoder_out", "FLOAT", ("N", 64))],
        [("logit", "FLOAT", ("N", len(SYMBOLS)))],
    )


@pytest.mark.parametrize("int8", [False, True])
def test_metadata(exported, tiny, int8):
    kind = ".int8" if int8 else ""
    encoder = read_metadata(exported["encoder" + kind])
    state = tiny.model.state_dict()
    expected = {
        "model_type": "zipformer2",
        "version": "1",
        "model_author": "k2-fsa",
        "comment": "non-streaming zipformer2",
        "use_adapters": "1",
        "adapter_dim": str(ADAPTER_DIM),
        "adapter_positions": "mid_adapter,post_sa_adapter,post_conv_adapter,adapter",
        "num_adapters": str(4 * NUM_LAYERS),
        "adapter_fingerprint": tensors_fingerprint(tuner_tensors(state, TUNER)),
        "base_fingerprint": base_fingerprint(state, TUNER),
    }
    assert {k: encoder.get(k) for k in expected} == expected
    decoder = read_metadata(exported["decoder" + kind])
    assert (decoder["context_size"], decoder["vocab_size"]) == ("2", str(len(SYMBOLS)))
    assert read_metadata(exported["joiner" + kind])["joiner_dim"] == "64"


# ---------------------------------------------------------------------------------------------
# Numerical parity with PyTorch
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("lengths", [[9], [37], [100], [251], [211, 150], [64, 100, 9, 77]])
def test_encoder_matches_torch_at_any_length_and_padding(exported, tiny, lengths):
    x, x_lens = pad_features(random_features(sum(lengths), lengths))
    with torch.no_grad():
        expected, expected_lens = OnnxEncoder(tiny.model).eval()(torch.from_numpy(x), torch.from_numpy(x_lens))
    encoder_out, encoder_out_lens = transducer(exported).run_encoder(x, x_lens)
    assert encoder_out_lens.tolist() == expected_lens.tolist() == [((n - 7) // 2 + 1) // 2 for n in lengths]
    assert encoder_out.shape == tuple(expected.shape)
    assert np.abs(encoder_out - expected.numpy()).max() < 1e-4


def test_decoder_and_joiner_match_torch(exported, tiny):
    onnx_model = transducer(exported)
    contexts = np.array([[-1, 0], [-1, 7], [5, 9], [0, 0], [len(SYMBOLS) - 1, 3]], dtype=np.int64)
    with torch.no_grad():
        expected = OnnxDecoder(tiny.model.decoder, tiny.model.joiner.decoder_proj)(torch.from_numpy(contexts))
    decoder_out = onnx_model.run_decoder(contexts)
    assert np.abs(decoder_out - expected.numpy()).max() < 1e-4
    # -1 is "no token", a zero embedding (sherpa-onnx's initial context needs it): with no token
    # at all, conv and ReLU give 0 and the output is decoder_proj's bias.
    no_tokens = onnx_model.run_decoder(np.array([[-1, -1]], dtype=np.int64))
    assert np.abs(no_tokens[0] - tiny.model.joiner.decoder_proj.bias.detach().numpy()).max() < 1e-6

    encoder_out = np.random.default_rng(1).normal(size=(len(contexts), 64)).astype(np.float32)
    with torch.no_grad():
        logits = OnnxJoiner(tiny.model.joiner)(torch.from_numpy(encoder_out), expected)
    assert np.abs(onnx_model.run_joiner(encoder_out, decoder_out) - logits.numpy()).max() < 1e-4


def test_adapters_are_baked_into_the_encoder(exported, tiny):
    x, x_lens = pad_features(random_features(2, [120]))
    encoder_out, _ = transducer(exported).run_encoder(x, x_lens)
    with torch.no_grad(), tuner_disabled(tiny.model, TUNER):
        without_adapters, _ = OnnxEncoder(tiny.model)(torch.from_numpy(x), torch.from_numpy(x_lens))
    assert np.abs(encoder_out - without_adapters.numpy()).max() > 1e-2


def test_sessions_free_each_batch_memory(exported):
    """No CPU arena and no per-shape memory patterns: a decoding's memory is that of its current
    batch, not of the largest one so far (onnx_decode.py needed twice decode.py's memory)."""
    model = transducer(exported)
    for session in (model.encoder, model.decoder, model.joiner):
        options = session.get_session_options()
        assert not options.enable_cpu_mem_arena
        assert not options.enable_mem_pattern


def test_int8_is_close_to_fp32(exported):
    x, x_lens = pad_features(random_features(3, [180, 95]))
    fp32, _ = transducer(exported).run_encoder(x, x_lens)
    int8, _ = transducer(exported, int8=True).run_encoder(x, x_lens)
    relative_error = np.linalg.norm(int8 - fp32) / np.linalg.norm(fp32)
    # About 0.25 for this tiny random model (64-dim matrices quantise coarsely); a report, not a
    # quality bar: the bound only catches a broken int8 file.
    assert 0.0 < relative_error < 0.5, relative_error


# ---------------------------------------------------------------------------------------------
# Transcripts: PyTorch greedy search, onnxruntime (onnx_pretrained.py, onnx_decode.py), sherpa-onnx
# ---------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_onnx_pretrained_equals_torch_greedy_search(exported, tiny, utterances):
    table = read_tokens(tiny.tokens)
    expected = [tokens_to_text(ids, table) for ids in torch_greedy(tiny.model, utterances.features)]
    assert sum(bool(text) for text in expected) >= 2, expected
    result = run_script(
        REPO / "zipformer" / "onnx_pretrained.py",
        "--encoder-model-filename", str(exported["encoder"]),
        "--decoder-model-filename", str(exported["decoder"]),
        "--joiner-model-filename", str(exported["joiner"]),
        "--tokens", str(tiny.tokens),
        "--num-threads", "1",
        *map(str, utterances.audio),
    )
    lines = result.stdout.splitlines()
    assert lines == [f"{audio}: {text}" for audio, text in zip(utterances.audio, expected)]


SHERPA_DECODE = """
import json, sys
import sherpa_onnx, soundfile
encoder, decoder, joiner, tokens, model_type, *audio = sys.argv[1:]
recognizer = sherpa_onnx.OfflineRecognizer.from_transducer(
    encoder=encoder, decoder=decoder, joiner=joiner, tokens=tokens, num_threads=1,
    decoding_method="greedy_search", model_type=model_type)
texts = []
for path in audio:
    samples, sample_rate = soundfile.read(path, dtype="float32")
    stream = recognizer.create_stream()
    stream.accept_waveform(sample_rate, samples)
    recognizer.decode_stream(stream)
    texts.append(stream.result.text)
print(json.dumps(texts))
"""


def sherpa_transcripts(
    files: Dict[str, Path], tokens: Path, audio: Sequence[Path], int8: bool, model_type: str = ""
) -> List[str]:
    """sherpa-onnx in a subprocess (it exits the process on a bad model). model_type "" makes it
    detect the type from the encoder's metadata."""
    kind = ".int8" if int8 else ""
    args = [str(files[f"{name}{kind}"]) for name in ("encoder", "decoder", "joiner")]
    result = subprocess.run(
        [sys.executable, "-c", SHERPA_DECODE, *args, str(tokens), model_type, *map(str, audio)],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, f"sherpa-onnx failed ({result.returncode}): {result.stderr[-2000:]}"
    return json.loads(result.stdout.splitlines()[-1])


@pytest.mark.slow
def test_sherpa_onnx_fp32_equals_torch_and_int8_loads(exported, tiny, utterances):
    table = read_tokens(tiny.tokens)
    # sherpa-onnx decodes each stream on its own: compare with unpadded PyTorch runs.
    expected = [tokens_to_text(torch_greedy(tiny.model, [f])[0], table) for f in utterances.features]
    assert sum(bool(text) for text in expected) >= 2, expected
    assert sherpa_transcripts(exported, tiny.tokens, utterances.audio, int8=False) == expected
    int8_texts = sherpa_transcripts(exported, tiny.tokens, utterances.audio, int8=True, model_type="transducer")
    assert len(int8_texts) == len(expected) and any(int8_texts)


def test_onnx_decode_writes_decode_py_result_files(exported, tiny, utterances, tmp_path):
    onnx_decode = load_script(REPO / "zipformer" / "onnx_decode.py")
    argv = [
        "--encoder-model-filename", str(exported["encoder"]),
        "--decoder-model-filename", str(exported["decoder"]),
        "--joiner-model-filename", str(exported["joiner"]),
        "--tokens", str(tiny.tokens),
        "--exp-dir", str(tmp_path),
        "--test-cuts", f"synth={utterances.cuts_file}",
        "--num-workers", "0",
        "--num-buckets", "1",  # one batch of all cuts, padded as below
        "--num-threads", "1",
    ]
    with restored_root_logging():
        wers = onnx_decode["run"](onnx_decode["get_parser"]().parse_args(argv))
    res_dir = tmp_path / "greedy_search"
    suffix = "synth-greedy_search-onnx-epoch-3-avg-1"
    for kind in ("recogs", "errs", "wer-summary"):
        assert (res_dir / f"{kind}-{suffix}.txt").is_file(), kind
    summary = (res_dir / f"wer-summary-{suffix}.txt").read_text().splitlines()
    assert summary[0] == "settings\tWER" and summary[1] == f"greedy_search\t{wers['synth']}"

    # Same hypotheses as onnxruntime on the same padded batch of lhotse features.
    cuts = list(utterances.cuts)
    x, x_lens = pad_features([cut.load_features() for cut in cuts])
    table = read_tokens(tiny.tokens)
    hyps = transducer(exported).decode_features(x, x_lens)
    recogs = (res_dir / f"recogs-{suffix}.txt").read_text().splitlines()
    for cut, hyp in zip(cuts, hyps):
        assert f"{cut.id}:\tref={cut.supervisions[0].text.split()}" in recogs
        assert f"{cut.id}:\thyp={tokens_to_text(hyp, table).split()}" in recogs


def test_onnx_greedy_search_of_a_padded_batch_equals_torch(exported, tiny, utterances):
    assert transducer(exported).decode_features(*pad_features(utterances.features)) == torch_greedy(
        tiny.model, utterances.features
    )


# ---------------------------------------------------------------------------------------------
# Other export sources: adapter-only file on a base checkpoint; the base recipe with model_avg
# ---------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_export_from_adapter_only_file_on_base_checkpoint(exported, tiny, tmp_path):
    argv = export_argv(
        tmp_path, tiny.tokens, "--adapter-dim", str(ADAPTER_DIM),
        "--base-ckpt", str(tiny.root / "base.pt"), "--adapter-ckpt", str(tiny.exp_dir / "adapter-epoch-3.pt"),
    )
    written = run_main(ADAPTER_EXPORT, argv)
    assert written["encoder"] == tmp_path / "encoder-adapter-epoch-3.onnx"
    assert written["joiner.int8"] == tmp_path / "joiner-adapter-epoch-3.int8.onnx"
    fingerprints = ("adapter_fingerprint", "base_fingerprint", "adapter_dim")
    assert [read_metadata(written["encoder"])[k] for k in fingerprints] == [
        read_metadata(exported["encoder"])[k] for k in fingerprints
    ]
    x, x_lens = pad_features(random_features(4, [140]))
    from_full, _ = transducer(exported).run_encoder(x, x_lens)
    from_adapter_file, _ = transducer(written).run_encoder(x, x_lens)
    assert np.abs(from_full - from_adapter_file).max() < 1e-6


@pytest.mark.slow
def test_base_recipe_exports_the_averaged_model(tiny):
    argv = export_argv(tiny.base_dir, tiny.tokens, "--use-averaged-model", "1", "--epoch", "2", "--avg", "1")
    written = run_main(BASE_EXPORT, argv)
    assert sorted(p.name for p in written.values()) == sorted(
        f"{name}-epoch-2-avg-1{kind}.onnx" for name in ("encoder", "decoder", "joiner") for kind in ("", ".int8")
    )
    metadata = read_metadata(written["encoder"])
    assert metadata["model_type"] == "zipformer2" and not any("adapter" in k for k in metadata)
    x, x_lens = pad_features(random_features(5, [90, 133]))
    with torch.no_grad():
        expected, _ = OnnxEncoder(tiny.base_model)(torch.from_numpy(x), torch.from_numpy(x_lens))
    encoder_out, _ = transducer(written).run_encoder(x, x_lens)
    assert np.abs(encoder_out - expected.numpy()).max() < 1e-4


def test_a_causal_model_exports_its_full_context_forward_whatever_the_chunk_flags(tmp_path, tiny):
    """The traced graph is the full-context forward; the check after writing compares it with
    PyTorch's full-context output, not with a forward at --chunk-size (which would fail it)."""
    params = model_params(use_adapters=False)
    params.update(causal=True, chunk_size=(16, -1), left_context_frames=(64, -1))
    torch.manual_seed(0)
    model = get_base_model(params)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "chunkwise_conv_scale" in name:
                param.normal_(0.0, 0.5)  # chunk edges matter
    torch.save(
        {"model": model.state_dict(), "model_config": model_config(params, DecodingRecipe().config_keys)},
        tmp_path / "epoch-1.pt",
    )
    argv = ["--tokens", str(tiny.tokens), "--exp-dir", str(tmp_path), "--epoch", "1", "--avg", "1",
            "--use-averaged-model", "0", "--chunk-size", "16", "--left-context-frames", "64"]
    written = run_main(BASE_EXPORT, argv)
    x, x_lens = pad_features(random_features(7, [90, 133]))
    model.encoder.chunk_size, model.encoder.left_context_frames = (-1,), (-1,)
    with torch.no_grad():
        expected, _ = OnnxEncoder(model.eval())(torch.from_numpy(x), torch.from_numpy(x_lens))
    encoder_out, _ = transducer(written).run_encoder(x, x_lens)
    assert np.abs(encoder_out - expected.numpy()).max() < 1e-4


# ---------------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------------


def _export_error(script: Path, argv: List[str], exp_dir: Path) -> str:
    before = set(exp_dir.iterdir())
    with pytest.raises(SystemExit) as info:
        run_main(script, argv)
    assert not [p for p in set(exp_dir.iterdir()) - before if p.suffix == ".onnx" or p.name.startswith(".tmp-")]
    return str(info.value.code)


def test_missing_checkpoint_is_a_clear_error(tiny):
    argv = export_argv(tiny.exp_dir, tiny.tokens, "--use-averaged-model", "0", "--epoch", "9", "--avg", "1")
    message = _export_error(ADAPTER_EXPORT, argv + ["--adapter-dim", str(ADAPTER_DIM)], tiny.exp_dir)
    assert message.startswith("error: ") and "epoch-9.pt" in message


def test_tokens_that_do_not_match_the_vocabulary_are_a_clear_error(tiny):
    short_tokens = write_tokens(tiny.root / "short_tokens.txt", SYMBOLS[:20])
    argv = export_argv(tiny.exp_dir, short_tokens, "--use-averaged-model", "0", "--epoch", "3", "--avg", "1")
    message = _export_error(ADAPTER_EXPORT, argv + ["--adapter-dim", str(ADAPTER_DIM)], tiny.exp_dir)
    assert f"trained with {len(SYMBOLS)} tokens" in message and "has 20" in message and "--tokens" in message


def test_adapter_dim_that_does_not_match_is_a_clear_error(tiny):
    argv = export_argv(tiny.exp_dir, tiny.tokens, "--use-averaged-model", "0", "--epoch", "3", "--avg", "1")
    message = _export_error(ADAPTER_EXPORT, argv + ["--adapter-dim", "16"], tiny.exp_dir)
    assert "dim 8" in message and "--adapter-dim 8" in message


def test_base_export_of_an_adapter_checkpoint_points_to_the_recipe_that_trained_it(tiny):
    argv = export_argv(tiny.exp_dir, tiny.tokens, "--use-averaged-model", "0", "--epoch", "3", "--avg", "1")
    message = _export_error(BASE_EXPORT, argv, tiny.exp_dir)
    assert "unexpected keys:" in message and "(48 in total)" in message and "the recipe that trained it" in message
    # The base recipe knows no tuner by name: the checkpoint's own configuration says what it has.
    assert f"settings this recipe lacks: use_adapters=True, adapter_dim={ADAPTER_DIM}" in message


def test_read_tokens(tmp_path):
    table = read_tokens(write_tokens(tmp_path / "a.txt", SYMBOLS[:5] + ["#0", "#1"]))
    assert table == dict(enumerate(SYMBOLS[:5]))
    assert tokens_to_text([4, 3], {3: "\u2581HEL", 4: "\u2581OH"}) == "OH HEL"
    (tmp_path / "gap.txt").write_text("<blk> 0\nA 2\n")
    with pytest.raises(UserError, match="0..N-1"):
        read_tokens(tmp_path / "gap.txt")
    (tmp_path / "blank.txt").write_text("A 0\n<blk> 1\n")
    with pytest.raises(UserError, match="blank at id 0"):
        read_tokens(tmp_path / "blank.txt")
    with pytest.raises(UserError, match="not found"):
        read_tokens(tmp_path / "missing.txt")


def test_pad_features_pads_with_log_eps():
    x, x_lens = pad_features([np.zeros((3, 80), np.float32), np.ones((5, 80), np.float32)])
    assert x.shape == (2, 5, 80) and x_lens.tolist() == [3, 5]
    assert np.all(x[0, 3:] == np.float32(LOG_EPS)) and np.all(x[1] == 1.0)


def test_a_truncated_onnx_file_is_one_clear_line(exported, tiny, utterances, tmp_path):
    truncated = tmp_path / "encoder-truncated.onnx"
    data = exported["encoder"].read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    common = ["--decoder-model-filename", str(exported["decoder"]), "--joiner-model-filename", str(exported["joiner"]),
              "--tokens", str(tiny.tokens), "--num-threads", "1", "--encoder-model-filename", str(truncated)]
    for script, extra in (("onnx_pretrained.py", [str(utterances.audio[0])]),
                          ("onnx_decode.py", ["--test-cuts", f"x={tmp_path / 'unused.jsonl.gz'}", "--exp-dir", str(tmp_path)])):
        result = run_script(REPO / "zipformer" / script, *common, *extra, check=False)
        assert result.returncode == 1, (script, result.stderr[-2000:])
        last = result.stderr.strip().splitlines()[-1]
        assert last.startswith(f"error: ONNX model {truncated} (") and "export it again with export-onnx.py" in last, last
        assert "Traceback" not in result.stderr


def test_an_export_stopped_between_fp32_and_int8_leaves_no_onnx_file(tiny, tmp_path, monkeypatch):
    import zipformer.deploy.export as onnx_export

    exp_dir = tmp_path / "exp"
    exp_dir.mkdir()
    for name in ("epoch-1.pt", "epoch-2.pt"):
        (exp_dir / name).write_bytes((tiny.base_dir / name).read_bytes())
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = exp_dir / f".tmp-{dead.pid}-0123abcd-encoder-epoch-2-avg-1.onnx"
    stale.write_bytes(b"half an encoder, from an export that was killed")

    def killed(src, dst, op_types):
        raise KeyboardInterrupt

    monkeypatch.setattr(onnx_export, "quantize_int8", killed)
    argv = export_argv(exp_dir, tiny.tokens, "--use-averaged-model", "1", "--epoch", "2", "--avg", "1")
    with pytest.raises(KeyboardInterrupt):
        run_main(BASE_EXPORT, argv)
    assert sorted(p.name for p in exp_dir.iterdir() if p.is_file()) == ["epoch-1.pt", "epoch-2.pt"]
