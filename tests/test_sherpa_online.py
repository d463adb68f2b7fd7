"""sherpa-onnx's online recognizer on the streaming export of a briefly trained tiny causal model (and
of adapters fine-tuned on it), fed as a live application feeds it (0.1 s pieces, then
input_finished), against PyTorch's streaming greedy search; onnx_decode.py on the streaming export
with both runtimes; README's streaming snippet.

sherpa-onnx runs in a subprocess: it aborts the process on a bad model.
"""
import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Dict, List

import numpy as np
import pytest
import soundfile as sf
import torch
from test_streaming_decode import CHECKPOINT_FLAGS, CHUNK_FLAGS, decode, hyps

from zipformer.core.params import AttributeDict
from zipformer.decoding.beam_search import greedy_search_continue, initial_hyp
from zipformer.deploy.inference import compute_fbank, read_tokens, tokens_to_text
from zipformer.deploy.sherpa_online import TAIL_SECONDS, stream_on_sherpa_frames
from zipformer.deploy.streaming_inference import OnnxStreamingTransducer
from zipformer.model.builder import get_model
from zipformer.model.flags import add_model_arguments
from zipformer.model.streaming import EMBED_LOOK_AHEAD, get_init_states, streaming_forward
from zipformer.tuners.recipes import get_tuned_model
from zipformer_adapter.adapter import AdapterTuner

from conftest import TINY_MODEL_FLAGS, data_flags, run_script

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
SUFFIX = "epoch-2-avg-1-chunk-16-left-32"
CHUNK = 16
ADAPTER_DIM = 4
PIECE_SECONDS = 0.1
README_HEADING = "### Streaming: sherpa-onnx's OnlineRecognizer"
README_SUFFIX = "epoch-6-avg-1-chunk-16-left-128"

SHERPA_ONLINE = """
import json, sys
import soundfile
from zipformer.deploy.sherpa_online import decode_online, online_recognizer
encoder, decoder, joiner, tokens, *audio, piece_seconds = sys.argv[1:]
recognizer = online_recognizer(encoder, decoder, joiner, tokens, num_threads=1)
waves = []
for path in audio:
    samples, sample_rate = soundfile.read(path, dtype="float32")
    waves.append((sample_rate, samples))
print(json.dumps(decode_online(recognizer, waves, piece_seconds=float(piece_seconds))))
"""


@pytest.fixture(scope="module")
def streaming_files(causal_exp: Path, tiny_corpus) -> Dict[str, Path]:
    run_script(
        "zipformer/export-onnx-streaming.py", "--tokens", tiny_corpus["tokens"], "--exp-dir", causal_exp,
        *CHECKPOINT_FLAGS, *TINY_MODEL_FLAGS, *CHUNK_FLAGS,
    )
    files = {}
    for name in ("encoder", "decoder", "joiner"):
        files[name] = causal_exp / f"{name}-{SUFFIX}.onnx"
        files[f"{name}.int8"] = causal_exp / f"{name}-{SUFFIX}.int8.onnx"
    return files


@pytest.fixture(scope="module")
def torch_streaming(causal_exp: Path, tiny_corpus) -> Dict[str, str]:
    """PyTorch's streaming greedy transcripts (streaming_decode.py) by audio file stem."""
    decode("zipformer/streaming_decode.py", tiny_corpus, causal_exp, *CHUNK_FLAGS, "--decoding-method", "greedy_search")
    res_dir = causal_exp / "streaming" / "greedy_search"
    texts = {}
    for test_set in ("source", "target"):
        for cut_id, words in hyps(res_dir, f"recogs-{test_set}-greedy_search-epoch-*.txt").items():
            texts[cut_id.rsplit("-", 1)[0]] = " ".join(words)
    return texts


def audio_files(tiny_corpus) -> List[Path]:
    return [p for name in ("source_test", "target_test")
            for p in sorted((Path(tiny_corpus[name]).parent / "audio").glob("*.flac"))]


def sherpa_online(files: Dict[str, Path], tokens: Path, audio: List[Path], int8: bool) -> List[str]:
    kind = ".int8" if int8 else ""
    models = [str(files[f"{name}{kind}"]) for name in ("encoder", "decoder", "joiner")]
    result = subprocess.run(
        [sys.executable, "-c", SHERPA_ONLINE, *models, str(tokens), *map(str, audio), str(PIECE_SECONDS)],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, f"sherpa-onnx failed ({result.returncode}): {result.stderr[-2000:]}"
    return json.loads(result.stdout.splitlines()[-1])


@pytest.fixture(scope="module")
def sherpa_fp32(streaming_files, tiny_corpus) -> List[str]:
    return sherpa_online(streaming_files, tiny_corpus["tokens"], audio_files(tiny_corpus), int8=False)


@torch.no_grad()
def torch_stream_as_sherpa_feeds_it(model: torch.nn.Module, samples: np.ndarray, table: Dict[int, str]) -> str:
    """PyTorch streaming greedy search over the frames sherpa-onnx decodes: the fbank of the audio
    and its tail silence, window k (frames 2Ck .. 2Ck + T) while 2Ck + T < frames."""
    silence = np.zeros(int(TAIL_SECONDS * 16000), dtype=np.float32)
    features = torch.from_numpy(compute_fbank(np.concatenate((samples, silence))))
    window = 2 * CHUNK + EMBED_LOOK_AHEAD
    states, hyps = get_init_states(model, 1, torch.device("cpu")), [initial_hyp(model)]
    for start in range(0, features.shape[0] - window, 2 * CHUNK):
        out, out_lens, states = streaming_forward(
            model, features[None, start : start + window], torch.tensor([window]), states
        )
        greedy_search_continue(model, out, out_lens, hyps)
    return tokens_to_text(hyps[0][model.decoder.context_size :], table)


def tiny_params(tiny_corpus, **extra) -> AttributeDict:
    parser = argparse.ArgumentParser()
    add_model_arguments(parser)
    params = AttributeDict(vars(parser.parse_args(TINY_MODEL_FLAGS + CHUNK_FLAGS)))
    vocab_size = len(read_tokens(tiny_corpus["tokens"]))
    params.update(feature_dim=80, vocab_size=vocab_size, blank_id=0, context_size=2, **extra)
    return params


@pytest.fixture(scope="module")
def torch_model(causal_exp: Path, tiny_corpus) -> torch.nn.Module:
    model = get_model(tiny_params(tiny_corpus))
    model.load_state_dict(torch.load(causal_exp / "epoch-2.pt", weights_only=True)["model"])
    return model.eval()


def test_sherpa_onnx_online_recognizer_equals_pytorch_streaming_on_its_frames(
    sherpa_fp32, streaming_files, torch_model, tiny_corpus
):
    audio = audio_files(tiny_corpus)
    table = read_tokens(tiny_corpus["tokens"])
    expected = [torch_stream_as_sherpa_feeds_it(torch_model, sf.read(a, dtype="float32")[0], table) for a in audio]
    assert sum(len(text.split()) for text in expected) >= 3, expected  # the model emits words
    assert sherpa_fp32 == expected
    int8 = sherpa_online(streaming_files, tiny_corpus["tokens"], audio, int8=True)
    assert len(int8) == len(expected) and any(int8)


def test_onnxruntime_on_sherpa_onnxs_frames_gives_its_transcripts(sherpa_fp32, streaming_files, tiny_corpus):
    model = OnnxStreamingTransducer.from_files(*(streaming_files[name] for name in ("encoder", "decoder", "joiner")))
    table = read_tokens(tiny_corpus["tokens"])
    got = [tokens_to_text(stream_on_sherpa_frames(model, sf.read(a, dtype="float32")[0]), table)
           for a in audio_files(tiny_corpus)]
    assert got == sherpa_fp32


@pytest.fixture(scope="module")
def adapter_exp(causal_exp: Path, tiny_corpus, tmp_path_factory) -> Path:
    """Adapters of dim 4 fine-tuned for 2 epochs on the target domain over the causal base, and
    their streaming export."""
    base = tmp_path_factory.mktemp("causal_base") / "pretrained.pt"
    torch.save({"model": torch.load(causal_exp / "epoch-2.pt", weights_only=True)["model"]}, base)
    exp_dir = tmp_path_factory.mktemp("causal_adapter_exp")
    run_script(
        "zipformer_adapter/train.py", "--num-epochs", "2", "--base-lr", "0.045", "--use-adapters", "1",
        "--adapter-dim", str(ADAPTER_DIM), "--do-finetune", "1", "--finetune-ckpt", base, "--exp-dir", exp_dir,
        "--tensorboard", "0", "--average-period", "2", "--log-interval", "1", "--causal", "1",
        *TINY_MODEL_FLAGS, *data_flags(tiny_corpus, train="target_train"),
    )
    run_script(
        "zipformer_adapter/export-onnx-streaming.py", "--tokens", tiny_corpus["tokens"], "--exp-dir", exp_dir,
        *CHECKPOINT_FLAGS, *TINY_MODEL_FLAGS, *CHUNK_FLAGS, "--use-adapters", "1", "--adapter-dim", str(ADAPTER_DIM),
    )
    return exp_dir


def test_sherpa_onnx_runs_the_fine_tuned_adapters_as_pytorch_does(adapter_exp: Path, tiny_corpus):
    files = {name: adapter_exp / f"{name}-{SUFFIX}.onnx" for name in ("encoder", "decoder", "joiner")}
    audio = audio_files(tiny_corpus)
    got = sherpa_online(files, tiny_corpus["tokens"], audio, int8=False)
    params = tiny_params(tiny_corpus, use_adapters=True, adapter_dim=ADAPTER_DIM)
    model = get_tuned_model(params, AdapterTuner())
    model.load_state_dict(torch.load(adapter_exp / "epoch-2.pt", weights_only=True)["model"])
    table = read_tokens(tiny_corpus["tokens"])
    expected = [torch_stream_as_sherpa_feeds_it(model.eval(), sf.read(a, dtype="float32")[0], table) for a in audio]
    assert got == expected


def test_sherpa_onnx_differs_from_streaming_decode_only_in_the_tail(sherpa_fp32, torch_streaming, tiny_corpus):
    """streaming_decode.py pads 30 frames of log(1e-10) and whole chunks; sherpa-onnx sees 0.66 s of
    silence (fbank log(FLT_EPSILON)) and stops before an incomplete window. Only tokens of the last
    chunk of either (C / 2 frames, one token each at most) may differ."""
    audio = audio_files(tiny_corpus)
    for path, got in zip(audio, sherpa_fp32):
        expected, words = torch_streaming[path.stem].split(), got.split()
        common = next((i for i, (a, b) in enumerate(zip(expected, words)) if a != b), min(len(expected), len(words)))
        assert max(len(expected), len(words)) - common <= CHUNK, (path.stem, expected, words)


def test_onnx_decode_streams_the_export_with_both_runtimes(
    streaming_files, torch_streaming, sherpa_fp32, causal_exp, tiny_corpus
):
    for runtime in ("onnxruntime", "sherpa-onnx"):
        run_script(
            "zipformer/onnx_decode.py", "--encoder-model-filename", streaming_files["encoder"],
            "--decoder-model-filename", streaming_files["decoder"], "--joiner-model-filename", streaming_files["joiner"],
            "--tokens", tiny_corpus["tokens"], "--num-threads", "1", "--runtime", runtime,
            *data_flags(tiny_corpus)[2:],  # the test cuts and loader flags, without the BPE model
        )
    res_dir = causal_exp / "streaming" / "greedy_search"
    sherpa_by_stem = {path.stem: text for path, text in zip(audio_files(tiny_corpus), sherpa_fp32)}
    for prefix, expected in (("onnx", torch_streaming), ("sherpa-onnx", sherpa_by_stem)):
        got = {}
        for test_set in ("source", "target"):
            for cut_id, words in hyps(res_dir, f"recogs-{test_set}-greedy_search-{prefix}-{SUFFIX}.txt").items():
                got[cut_id.rsplit("-", 1)[0]] = " ".join(words)
        assert got == expected, prefix
    assert (res_dir / f"wer-summary-source-greedy_search-onnx-{SUFFIX}.txt").is_file()


def readme_streaming_snippet() -> str:
    """The Python of README's streaming deployment example (the heredoc under its heading)."""
    text = (REPO / "README.md").read_text()
    section = text[text.index(README_HEADING):]
    return section.split("<<'EOF'\n", 1)[1].split("\nEOF\n", 1)[0]


def test_readme_streaming_snippet_runs_as_written(streaming_files, sherpa_fp32, tiny_corpus, tmp_path):
    exp_dir = tmp_path / "exp" / "causal_adapter_dim8"
    exp_dir.mkdir(parents=True)
    for name in ("encoder", "decoder", "joiner"):
        shutil.copy(streaming_files[name], exp_dir / f"{name}-{README_SUFFIX}.onnx")
    (tmp_path / "data" / "lang_bpe_500").mkdir(parents=True)
    shutil.copy(tiny_corpus["tokens"], tmp_path / "data" / "lang_bpe_500" / "tokens.txt")
    audio = audio_files(tiny_corpus)[0]
    samples, sample_rate = sf.read(audio, dtype="float32")
    sf.write(tmp_path / "foo.wav", samples, sample_rate)
    result = subprocess.run(
        [sys.executable, "-c", readme_streaming_snippet()], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == sherpa_fp32[0]
