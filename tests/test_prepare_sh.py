"""./prepare.sh end to end on tiny sizes, in a copy of the repo (it writes data/ beside itself)."""
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from lhotse import load_manifest

REPO = Path(__file__).resolve().parents[1]
TINY = ["--source-train", "3", "--source-dev", "2", "--source-test", "2", "--target-train", "3", "--target-dev", "2", "--target-test", "2",
        "--target-b-train", "3", "--target-b-dev", "2", "--target-b-test", "2"]


def run_prepare(repo: Path, *args: str) -> subprocess.CompletedProcess:
    # The shared .venv imports the project from this checkout: the copy's own code comes first.
    env = dict(os.environ, PYTHONPATH=str(repo))
    return subprocess.run(["./prepare.sh", *args], cwd=repo, env=env, capture_output=True, text=True, timeout=600)


def copy_repo(repo: Path) -> Path:
    """What prepare.sh needs, copied into the empty folder `repo`, with the shared .venv linked."""
    for name in ("prepare.sh", "requirements.txt", "pyproject.toml"):
        shutil.copy2(REPO / name, repo / name)
    for name in ("local", "zipformer"):
        shutil.copytree(REPO / name, repo / name, ignore=shutil.ignore_patterns("__pycache__"))
    os.symlink(REPO / ".venv", repo / ".venv")
    return repo


@pytest.fixture(scope="module")
def repo_copy(tmp_path_factory) -> Path:
    return copy_repo(tmp_path_factory.mktemp("repo"))


def test_bad_options_fail_fast(repo_copy: Path):
    result = run_prepare(repo_copy, "--dataset", "timit")
    assert result.returncode != 0 and "--dataset must be synth, librispeech or gigaspeech" in result.stderr
    result = run_prepare(repo_copy, "--frobnicate")
    assert result.returncode != 0 and "unknown option '--frobnicate'" in result.stderr
    assert "[--stage N] [--stop-stage M]" in run_prepare(repo_copy, "--help").stdout
    result = run_prepare(repo_copy, "--german-train", "3")
    assert result.returncode != 0 and "--german-train needs --german" in result.stderr


@pytest.mark.parametrize("args, message", [(["--stage"], "--stage needs a value"), (["--stage", "x"], "take integers"),
                                           (["--stage", "--quick"], "--stage needs a value")])
def test_an_option_without_its_value_is_a_usage_error(repo_copy: Path, args, message):
    result = run_prepare(repo_copy, *args)
    assert result.returncode == 1 and "unbound variable" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("prepare.sh: error: ") and message in result.stderr


@pytest.mark.slow
def test_synth_and_librispeech_paths(repo_copy: Path, monkeypatch):
    monkeypatch.chdir(repo_copy)  # manifests hold paths relative to the recipe dir, as icefall's do
    result = run_prepare(repo_copy, "--num-jobs", "1", *TINY)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    fbank = repo_copy / "data" / "fbank"
    for domain in ("source", "target", "target_b"):
        for split in ("train", "dev", "test"):
            cuts = load_manifest(fbank / f"{domain}_cuts_{split}.jsonl.gz")
            assert len(cuts) == (3 if split == "train" else 2)
            assert cuts[0].load_features().shape[1] == 80
    lang = repo_copy / "data" / "lang_bpe_500"
    assert (lang / "bpe.model").is_file() and len((lang / "tokens.txt").read_text().splitlines()) == 500
    assert "source_cuts_train.jsonl.gz" in result.stdout and "target_b_cuts_test.jsonl.gz" in result.stdout
    assert "done in" in result.stdout
    # The german domain only with --german: the default run neither synthesizes it nor trains its BPE.
    assert not list((repo_copy / "data").rglob("german*")) and not (repo_copy / "data" / "lang_bpe_250_de").exists()

    # Everything is up to date: a rerun of the synthesis and feature stages rewrites nothing.
    manifest = repo_copy / "data" / "manifests" / "target_recordings_train.jsonl.gz"
    cuts = fbank / "source_cuts_dev.jsonl.gz"
    before = manifest.stat().st_mtime_ns, cuts.stat().st_mtime_ns
    again = run_prepare(repo_copy, "--num-jobs", "1", "--stage", "1", "--stop-stage", "2", *TINY)
    assert again.returncode == 0 and again.stderr.count("skipping") == 18, again.stderr[-3000:]  # 9 splits x 2 stages
    assert (manifest.stat().st_mtime_ns, cuts.stat().st_mtime_ns) == before

    # Other sizes on top of an existing corpus: a clear error, nothing overwritten.
    other = run_prepare(repo_copy, "--stage", "1", "--stop-stage", "1", "--quick")
    assert other.returncode != 0 and "made with other settings" in other.stderr
    assert manifest.stat().st_mtime_ns == before[0]

    # LibriSpeech stages 1-2 on a fake corpus built from the synthesized audio.
    corpus = repo_copy / "fake" / "LibriSpeech"
    for part, source_split in (("train-clean-100", "train"), ("dev-clean", "dev"), ("test-other", "test")):
        chapter = corpus / part / "10" / "20"
        chapter.mkdir(parents=True)
        sups = list(load_manifest(repo_copy / "data" / "manifests" / f"source_supervisions_{source_split}.jsonl.gz"))
        lines = []
        for i, sup in enumerate(sups):
            shutil.copy(repo_copy / "data" / "audio" / "source" / source_split / f"{sup.recording_id}.flac", chapter / f"10-20-{i:04d}.flac")
            lines.append(f"10-20-{i:04d} {sup.text}\n")
        (chapter / "10-20.trans.txt").write_text("".join(lines))
    result = run_prepare(repo_copy, "--dataset", "librispeech", "--corpus-dir", "fake/LibriSpeech", "--stage", "1", "--stop-stage", "2")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert len(load_manifest(fbank / "librispeech_cuts_train-clean-100.jsonl.gz")) == 9  # 3 x speed perturbation
    assert len(load_manifest(fbank / "librispeech_cuts_train-all-shuf.jsonl.gz")) == 9
    for part in ("dev-clean", "test-other"):
        assert len(load_manifest(fbank / f"librispeech_cuts_{part}.jsonl.gz")) == 2


@pytest.mark.slow
def test_german_domain_end_to_end(tmp_path: Path, monkeypatch):
    repo = copy_repo(tmp_path)
    monkeypatch.chdir(repo)
    english_off = [arg for flag in TINY[::2] for arg in (flag, "0")]
    result = run_prepare(repo, "--num-jobs", "1", *english_off, "--german", "--german-train", "3", "--german-dev", "2", "--german-test", "2")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    for split in ("train", "dev", "test"):
        cuts = load_manifest(repo / "data" / "fbank" / f"german_cuts_{split}.jsonl.gz")
        assert len(cuts) == (3 if split == "train" else 2)
        assert cuts[0].load_features().shape[1] == 80 and cuts[0].supervisions[0].language == "German"
    assert not list((repo / "data" / "fbank").glob("source_cuts_*"))
    lang = repo / "data" / "lang_bpe_250_de"
    assert (lang / "bpe.model").is_file() and (lang / "tokens.txt").read_text().splitlines()[:3] == ["<blk> 0", "<sos/eos> 1", "<unk> 2"]
    assert len((lang / "tokens.txt").read_text().splitlines()) == 250
    assert "stage 4: BPE model (unigram, 250) on the german train text" in result.stdout
    assert "german_cuts_test.jsonl.gz" in result.stdout
