"""Shared test setup: a tiny synthesized corpus, a tiny model and a script runner."""
import os
import subprocess
import sys
from pathlib import Path
from typing import List

import pytest
import torch

REPO_DIR = Path(__file__).resolve().parents[1]
# Reference facts the tests compare with: k2's loss values, icefall's state_dict key lists.
TEST_DATA_DIR = Path(__file__).resolve().parent / "data"

# A Zipformer small enough to train for a few steps in seconds on one CPU core.
TINY_MODEL_FLAGS = [
    "--num-encoder-layers", "1,1,1,1,1,1",
    "--feedforward-dim", "64,64,64,64,64,64",
    "--encoder-dim", "32,32,48,48,48,32",
    "--encoder-unmasked-dim", "32,32,32,32,32,32",
    "--num-heads", "2,2,2,2,2,2",
    "--query-head-dim", "8",
    "--value-head-dim", "4",
    "--pos-head-dim", "2",
    "--pos-dim", "8",
    "--cnn-module-kernel", "7,7,5,5,5,7",
    "--decoder-dim", "32",
    "--joiner-dim", "32",
]

SOURCE_TEXTS = [
    "the cat sat on the mat",
    "a good book is a friend",
    "time and tide wait for no man",
    "all that glitters is not gold",
    "the early bird catches the worm",
    "a stitch in time saves nine",
    "better late than never they say",
    "actions speak louder than words",
    "the pen is mightier than the sword",
    "when in rome do as the romans do",
]
TARGET_TEXTS = [
    "the server crashed during the night",
    "please restart the computer now",
    "the network cable is broken again",
    "install the new kernel today",
]


@pytest.fixture(autouse=True, scope="session")
def one_thread():
    """One PyTorch thread per test process: the tests' tensors are tiny, and on a 2-core machine
    more threads only contend (several times slower)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def reference_data() -> Path:
    return TEST_DATA_DIR


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory) -> dict:
    """A few synthesized utterances per domain with features, and a small BPE model.

    Returns paths: source_train, source_dev, source_test, target_train, target_test (cut files),
    bpe_model, tokens.
    """
    from local.prepare_lang import train_bpe
    from local.synth.synthesize_corpus import synthesize_utterances

    root = tmp_path_factory.mktemp("tiny_corpus")
    sets = {
        "source_train": (SOURCE_TEXTS, "source", "train"),
        "source_dev": (SOURCE_TEXTS[:3], "source", "dev"),
        "source_test": (SOURCE_TEXTS[3:6], "source", "test"),
        "target_train": (TARGET_TEXTS, "target", "train"),
        "target_test": (TARGET_TEXTS[:3], "target", "test"),
    }
    paths = {}
    for name, (texts, domain, split) in sets.items():
        synthesize_utterances(texts, root / name, domain=domain, split=split, seed=1)
        paths[name] = root / name / "cuts.jsonl.gz"
    lang_dir = root / "lang"
    paths["bpe_model"] = train_bpe([t.upper() for t in SOURCE_TEXTS + TARGET_TEXTS], lang_dir, vocab_size=40)
    paths["tokens"] = lang_dir / "tokens.txt"
    return paths


def data_flags(corpus: dict, train: str = "source_train") -> List[str]:
    """Flags that point a train/decode script at the tiny corpus, with no augmentation."""
    return [
        "--bpe-model", str(corpus["bpe_model"]),
        "--train-cuts", str(corpus[train]),
        "--valid-cuts", f"dev={corpus['source_dev']}",
        "--test-cuts", f"source={corpus['source_test']},target={corpus['target_test']}",
        "--max-duration", "8",
        "--num-workers", "0",
        "--enable-musan", "0",
        "--enable-spec-aug", "0",
        "--num-buckets", "2",
    ]


def run_script(script: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    """Run a recipe script as a user does (./zipformer/train.py ...) with this interpreter."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    proc = subprocess.run(
        [sys.executable, str(REPO_DIR / script), *map(str, args)],
        cwd=REPO_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"{script} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    return proc


@pytest.fixture(scope="session")
def tiny_base_exp(tiny_corpus, tmp_path_factory) -> Path:
    """An exp dir with a tiny base model trained for 2 epochs on the tiny source set."""
    exp_dir = tmp_path_factory.mktemp("base_exp")
    run_script(
        "zipformer/train.py",
        "--num-epochs", "2",
        "--exp-dir", exp_dir,
        "--tensorboard", "0",
        "--average-period", "2",
        "--log-interval", "1",
        "--base-lr", "0.04",
        *TINY_MODEL_FLAGS,
        *data_flags(tiny_corpus),
    )
    return exp_dir


@pytest.fixture(scope="module")
def causal_exp(tiny_corpus, tmp_path_factory) -> Path:
    """A tiny causal model trained for 2 epochs with icefall's default chunk/left-context lists
    (one per test module: the modules write their own result files into it)."""
    exp_dir = tmp_path_factory.mktemp("causal_exp")
    run_script(
        "zipformer/train.py", "--num-epochs", "2", "--exp-dir", exp_dir, "--tensorboard", "0",
        "--average-period", "2", "--log-interval", "1", "--base-lr", "0.04", "--causal", "1",
        *TINY_MODEL_FLAGS, *data_flags(tiny_corpus),
    )
    return exp_dir
