"""The causal recipe run as a user runs it on the tiny corpus: train.py --causal 1, simulated
streaming (decode.py), real streaming (streaming_decode.py, streaming_pretrained.py), adapters on
a causal base, and the flag mismatches."""
from pathlib import Path
from typing import Dict, List

import pytest
import torch

from zipformer.decoding.scoring import read_hypotheses

from conftest import TINY_MODEL_FLAGS, data_flags, run_script

pytestmark = pytest.mark.slow

CHUNK_FLAGS = ["--causal", "1", "--chunk-size", "16", "--left-context-frames", "32"]
CHECKPOINT_FLAGS = ["--epoch", "2", "--avg", "1", "--use-averaged-model", "0"]
SUFFIX = "epoch-2-avg-1-chunk-16-left-context-32"


def decode(script: str, corpus: dict, exp_dir: Path, *extra: str, check: bool = True):
    return run_script(
        script, "--exp-dir", exp_dir, *CHECKPOINT_FLAGS, *TINY_MODEL_FLAGS, *data_flags(corpus),
        *extra, check=check,
    )


def hyps(res_dir: Path, pattern: str) -> Dict[str, List[str]]:
    files = sorted(res_dir.glob(pattern))
    assert len(files) == 1, (pattern, files)
    return read_hypotheses(files[0])


def last_line(proc) -> str:
    assert proc.returncode != 0
    return proc.stderr.strip().splitlines()[-1]


def test_causal_training_writes_icefall_causal_checkpoints(causal_exp: Path):
    state = torch.load(causal_exp / "epoch-2.pt", map_location="cpu", weights_only=True)["model"]
    assert any(k.endswith("conv_module1.depthwise_conv.chunkwise_conv_scale") for k in state)
    assert not any(k.endswith("conv_module1.depthwise_conv.weight") for k in state)


@pytest.mark.parametrize("method", ["greedy_search", "modified_beam_search"])
def test_real_and_simulated_streaming_write_the_same_result_files(tiny_corpus, causal_exp: Path, method: str):
    extra = [*CHUNK_FLAGS, "--decoding-method", method, "--beam-size", "4"]
    decode("zipformer/decode.py", tiny_corpus, causal_exp, *extra)
    decode("zipformer/streaming_decode.py", tiny_corpus, causal_exp, *extra, "--num-decode-streams", "2")
    simulated_dir, real_dir = causal_exp / method, causal_exp / "streaming" / method
    names = sorted(p.name for p in simulated_dir.glob("*.txt"))
    assert names and names == sorted(p.name for p in real_dir.glob("*.txt"))
    assert all(SUFFIX in name for name in names)
    for test_set in ("source", "target"):
        simulated = hyps(simulated_dir, f"recogs-{test_set}-*.txt")
        real = hyps(real_dir, f"recogs-{test_set}-*.txt")
        assert set(simulated) == set(real)
    log = next(real_dir.glob("log-decode-*")).read_text()
    assert "real-time factor" in log and "ms per stream-chunk" in log and "slowest" in log


def test_a_causal_model_given_no_latency_decodes_in_full_context(tiny_corpus, causal_exp: Path, tmp_path: Path):
    explicit, default = tmp_path / "explicit", tmp_path / "default"
    for exp_dir in (explicit, default):
        exp_dir.mkdir()
        (exp_dir / "epoch-2.pt").symlink_to(causal_exp / "epoch-2.pt")
    decode("zipformer/decode.py", tiny_corpus, explicit, "--chunk-size", "-1", "--left-context-frames", "-1")
    proc = decode("zipformer/decode.py", tiny_corpus, default)
    assert "decoding in full context" in proc.stderr
    pattern = "recogs-source-*-chunk--1-left-context--1-*.txt"
    assert hyps(default / "greedy_search", pattern) == hyps(explicit / "greedy_search", pattern)
    audio = sorted((Path(tiny_corpus["source_test"]).parent / "audio").glob("*.flac"))[:1]
    proc = run_script(
        "zipformer/pretrained.py", "--checkpoint", causal_exp / "epoch-2.pt",
        "--bpe-model", tiny_corpus["bpe_model"], *TINY_MODEL_FLAGS, *audio,
    )
    assert "decoding in full context" in proc.stderr


def test_streaming_pretrained_prints_partial_and_final_results(tiny_corpus, causal_exp: Path):
    decode("zipformer/streaming_decode.py", tiny_corpus, causal_exp, *CHUNK_FLAGS,
           "--decoding-method", "modified_beam_search", "--beam-size", "4")
    expected = {cut_id.rsplit("-", 1)[0]: " ".join(words) for cut_id, words in
                hyps(causal_exp / "streaming" / "modified_beam_search", "recogs-source-*.txt").items()}
    audio = sorted((Path(tiny_corpus["source_test"]).parent / "audio").glob("*.flac"))
    proc = run_script(
        "zipformer/streaming_pretrained.py", "--checkpoint", causal_exp / "epoch-2.pt",
        "--bpe-model", tiny_corpus["bpe_model"], "--method", "modified_beam_search", "--beam-size", "4",
        *CHUNK_FLAGS, *TINY_MODEL_FLAGS, *audio,
    )
    final = proc.stdout.split("\n\n", 1)[1].strip().split("\n")
    got = {}
    for i, line in enumerate(final):
        if line.endswith(":"):
            following = final[i + 1] if i + 1 < len(final) and not final[i + 1].endswith(":") else ""
            got[Path(line[:-1]).stem] = following
    assert got == expected
    # Each file's last partial result is its final text.
    last_partial = {}
    for line in proc.stdout.split("\n\n", 1)[0].splitlines():
        name, text = line.split(" [", 1)[0], line.split("]: ", 1)[1]
        last_partial[Path(name).stem] = text
    assert last_partial == {name: text for name, text in got.items() if text}


@pytest.fixture(scope="module")
def icefall_style(causal_exp, tiny_base_exp, tmp_path_factory) -> dict:
    """The causal and the base epoch-2.pt as icefall writes them: weights only, no configuration."""
    dirs = {}
    for name, exp_dir in (("causal", causal_exp), ("base", tiny_base_exp)):
        dirs[name] = tmp_path_factory.mktemp(f"icefall_{name}")
        checkpoint = torch.load(exp_dir / "epoch-2.pt", weights_only=True)
        torch.save({"model": checkpoint["model"]}, dirs[name] / "epoch-2.pt")
    return dirs


@pytest.mark.parametrize(
    "script, exp, extra, message",
    [
        # This project's checkpoints say whether they are causal: no --causal needed, but one latency.
        ("zipformer/decode.py", "causal", ["--chunk-size", "16,32"], "one --chunk-size"),
        ("zipformer/decode.py", "causal", ["--causal", "1", "--left-context-frames", "32,64"], "one --chunk-size"),
        ("zipformer/decode.py", "base", CHUNK_FLAGS, "--causal 1 contradicts"),
        ("zipformer/decode.py", "base", ["--chunk-size", "16"], "--chunk-size 16 needs --causal 1"),
        ("zipformer/streaming_decode.py", "causal", [], "one --chunk-size"),
        ("zipformer/streaming_decode.py", "causal", [*CHUNK_FLAGS, "--decoding-method", "beam_search"], "not available"),
        ("zipformer/streaming_decode.py", "base", [], "needs a causal model: pass --causal 1"),
        # icefall's files carry no configuration: their keys tell, and the error names the flag.
        ("zipformer/decode.py", "icefall-causal", [], "is a causal (streaming) model: pass --causal 1"),
        ("zipformer/decode.py", "icefall-base", CHUNK_FLAGS, "is a non-causal model: pass --causal 0"),
    ],
)
def test_causal_flag_mismatches_are_one_clear_line(
    tiny_corpus, causal_exp, tiny_base_exp, icefall_style, script, exp, extra, message
):
    exp_dir = {"causal": causal_exp, "base": tiny_base_exp}.get(exp) or icefall_style[exp.removeprefix("icefall-")]
    line = last_line(decode(script, tiny_corpus, exp_dir, *extra, check=False))
    assert line.startswith("error: ") and message in line, line


def test_adapters_fine_tune_a_causal_model_and_stream(tiny_corpus, causal_exp: Path, tmp_path: Path):
    base = tmp_path / "pretrained.pt"
    torch.save({"model": torch.load(causal_exp / "epoch-2.pt", weights_only=True)["model"]}, base)
    exp_dir = tmp_path / "adapter_exp"
    run_script(
        "zipformer_adapter/train.py", "--num-epochs", "2", "--base-lr", "0.045", "--use-adapters", "1",
        "--adapter-dim", "4", "--do-finetune", "1", "--finetune-ckpt", base, "--exp-dir", exp_dir,
        "--tensorboard", "0", "--average-period", "2", "--log-interval", "1", "--causal", "1",
        *TINY_MODEL_FLAGS, *data_flags(tiny_corpus, train="target_train"),
    )
    method = ["--decoding-method", "modified_beam_search", "--beam-size", "4"]
    for use in ("1", "0"):
        decode("zipformer_adapter/streaming_decode.py", tiny_corpus, exp_dir, *CHUNK_FLAGS, *method,
               "--use-adapters", use, "--adapter-dim", "4")
    decode("zipformer/streaming_decode.py", tiny_corpus, causal_exp, *CHUNK_FLAGS, *method)
    res_dir = exp_dir / "streaming" / "modified_beam_search"
    for test_set in ("source", "target"):
        off = hyps(res_dir, f"recogs-{test_set}-*-adapters-off.txt")
        assert off == hyps(causal_exp / "streaming" / "modified_beam_search", f"recogs-{test_set}-*.txt")
        assert set(hyps(res_dir, f"recogs-{test_set}-*-adapters-dim-4.txt")) == set(off)
    # The same fine-tune without --causal 1 is refused with the flag to pass.
    proc = run_script(
        "zipformer_adapter/train.py", "--num-epochs", "1", "--finetune-ckpt", base, "--exp-dir", tmp_path / "x",
        "--tensorboard", "0", *TINY_MODEL_FLAGS, *data_flags(tiny_corpus, train="target_train"), check=False,
    )
    assert "pass --causal 1" in last_line(proc)
