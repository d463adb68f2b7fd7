"""The main job end to end: ./run.sh --quick, in a scratch copy of the repository."""
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import REPO_DIR

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory) -> Path:
    """Run ./run.sh --quick in a copy (its own data/ and exp/), sharing this checkout's .venv."""
    root = tmp_path_factory.mktemp("run_sh") / "repo"
    shutil.copytree(
        REPO_DIR,
        root,
        ignore=shutil.ignore_patterns(".venv", "data", "exp", ".git", "__pycache__", "*.onnx"),
        symlinks=True,
    )
    (root / ".venv").symlink_to(REPO_DIR / ".venv")
    # The shared .venv imports the project from this checkout: the copy's own code comes first.
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(root))
    proc = subprocess.run(
        ["./run.sh", "--quick", "--num-threads", "1"], cwd=root, env=env, capture_output=True, text=True, timeout=1800
    )
    (root / "run.log").write_text(proc.stdout + proc.stderr)
    assert proc.returncode == 0, f"run.sh --quick failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    return root


@pytest.fixture(scope="module")
def quick_streaming_run(quick_run: Path) -> Path:
    """./run.sh --quick --streaming in the same copy, from stage 2 (the data is there); it writes exp-streaming/."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(quick_run))
    proc = subprocess.run(
        ["./run.sh", "--quick", "--streaming", "--stage", "2", "--num-threads", "1"],
        cwd=quick_run, env=env, capture_output=True, text=True, timeout=1800,
    )
    (quick_run / "run-streaming.log").write_text(proc.stdout + proc.stderr)
    assert proc.returncode == 0, f"run.sh --quick --streaming failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    return quick_run / "exp-streaming"


def test_streaming_run_decodes_chunk_by_chunk_and_in_sherpa_onnxs_online_recognizer(quick_streaming_run: Path):
    adapter = quick_streaming_run / "adapter_dim8"
    for name in ("encoder", "decoder", "joiner"):
        for kind in ("", ".int8"):
            assert (adapter / f"{name}-epoch-1-avg-1-chunk-16-left-128{kind}.onnx").is_file()
    streamed = adapter / "streaming" / "greedy_search"
    assert list(streamed.glob("wer-summary-target-greedy_search-epoch-1-avg-1-chunk-16-left-context-128-*-adapters-dim-8.txt"))
    assert list(streamed.glob("wer-summary-target-greedy_search-sherpa-onnx-epoch-1-avg-1-chunk-16-left-128.int8.txt"))
    assert list((quick_streaming_run / "base" / "streaming" / "greedy_search").glob("wer-summary-source-*"))


def test_streaming_summary_has_both_contexts_and_adapters_off_give_the_base(quick_streaming_run: Path):
    summary = (quick_streaming_run / "summary.md").read_text()
    assert "target test, streaming (320 ms chunks)" in summary
    assert "Adapters off reproduce the base model's source-test hypotheses exactly: **yes**" in summary
    assert "Streaming too: **yes**" in summary
    rows = {line.split("|")[1].strip(): line.split("|")[2:6] for line in summary.splitlines() if line.startswith("| ")}
    base, off = rows["base model (before)"], rows["same checkpoint, `--use-adapters 0`"]
    assert base == off and "—" not in base[1] + base[3]
    assert "sherpa-onnx's online recognizer on the target test set" in summary


@pytest.fixture(scope="module")
def quick_domains_run(quick_run: Path) -> Path:
    """./run.sh --quick --domains in the same copy, from stage 1 (which adds target_b), into exp-domains/."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(quick_run))
    proc = subprocess.run(
        ["./run.sh", "--quick", "--domains", "--stage", "1", "--exp-root", "exp-domains", "--num-threads", "1"],
        cwd=quick_run, env=env, capture_output=True, text=True, timeout=1800,
    )
    (quick_run / "run-domains.log").write_text(proc.stdout + proc.stderr)
    assert proc.returncode == 0, f"run.sh --quick --domains failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    return quick_run / "exp-domains"


def test_domains_run_trains_both_tuners_and_one_mixed_decode_equals_each_domain_alone(quick_domains_run: Path):
    for tuner_dir in ("adapter_dim8", "adapter_dim8_target_b"):
        assert (quick_domains_run / tuner_dir / "adapter-epoch-1.pt").is_file()
    table = (quick_domains_run / "domains" / "summary.md").read_text()
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]] for line in table.splitlines()
            if line.startswith("| ") and not line.startswith("| test set")}
    assert sorted(rows) == ["source", "target", "target_b"]
    for test_set, (domain, base, target, target_b, mixed, same, onnx, onnx_int8) in rows.items():
        alone = {"base": base, "target": target, "target_b": target_b}[domain]
        assert mixed == alone != "—" and same == "yes", (test_set, rows[test_set])
        assert onnx == mixed, (test_set, rows[test_set])  # the one ONNX encoder gives the same WER
        assert onnx_int8 != "—"


def test_every_stage_wrote_its_files(quick_run: Path):
    exp = quick_run / "exp"
    expected = [
        "data/fbank/target_cuts_train.jsonl.gz",
        "data/lang_bpe_500/bpe.model",
        "exp/base/pretrained.pt",
        "exp/adapter_dim8/epoch-1.pt",
        "exp/adapter_dim8/adapter-epoch-1.pt",
        "exp/adapter_dim8/encoder-epoch-1-avg-1.onnx",
        "exp/adapter_dim8/encoder-epoch-1-avg-1.int8.onnx",
        "exp/summary.md",
        "exp/commands.sh",
    ]
    for name in expected:
        assert (quick_run / name).is_file(), name
    assert list((exp / "base" / "greedy_search").glob("wer-summary-target-*"))
    assert list((exp / "adapter_dim8" / "greedy_search").glob("forgetting-report-*.txt"))
    assert list((exp / "adapter_dim8" / "greedy_search").glob("wer-summary-target-greedy_search-sherpa-onnx-*.int8.txt"))


def test_adapters_off_give_the_base_model_exactly(quick_run: Path):
    summary = (quick_run / "exp" / "summary.md").read_text()
    assert "Adapters off reproduce the base model's source-test hypotheses exactly: **yes**" in summary
    rows = {line.split("|")[1].strip(): line.split("|")[2:4] for line in summary.splitlines() if line.startswith("| ")}
    base_source = rows["base model (before)"][1].strip()
    off_source = rows["same checkpoint, `--use-adapters 0`"][1].strip()
    assert base_source == off_source and base_source != "—"


def test_summary_has_the_commands_that_produced_it(quick_run: Path):
    summary = (quick_run / "exp" / "summary.md").read_text()
    assert "./zipformer_adapter/train.py" in summary and "--use-adapters 1" in summary
    assert "./zipformer_adapter/export-onnx.py" in summary


@pytest.mark.parametrize(
    "args, message",
    [(["--stage"], "--stage needs a value"), (["--stage", "two"], "take integers"),
     (["--stop-stage", "--quick"], "--stop-stage needs a value"), (["--stage", "99", "--adapter-dim", "0"], "positive integers")],
)
def test_an_option_without_a_good_value_is_a_usage_error(args, message):
    """Each case stops before stage 0 (the set-up) even without the fix."""
    proc = subprocess.run(["./run.sh", *args], cwd=REPO_DIR, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1 and "unbound variable" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("run.sh: error: ") and message in last
