"""The default cut files of the scripts, relative to --manifest-dir: the one place their names are written.

The base recipe trains on the source domain and tests on both domains of the embedded corpus
(./run.sh stage 1). A fine-tune without data flags trains on the new domain, as icefall's adapter
recipe defaults to GigaSpeech: its cut files when prepared (./prepare.sh --dataset gigaspeech),
else the embedded target domain; it validates on both the old and the new domain.
"""
from pathlib import Path
from typing import Mapping, Tuple

# The embedded corpus: {domain}_cuts_{split}.jsonl.gz.
SOURCE_TRAIN = "source_cuts_train.jsonl.gz"
SOURCE_DEV = "source_cuts_dev.jsonl.gz"
SOURCE_TEST = "source_cuts_test.jsonl.gz"
TARGET_TRAIN = "target_cuts_train.jsonl.gz"
TARGET_DEV = "target_cuts_dev.jsonl.gz"
TARGET_TEST = "target_cuts_test.jsonl.gz"
MUSAN = "musan_cuts.jsonl.gz"
# GigaSpeech (cuts_{S,DEV,TEST}.jsonl.gz) and LibriSpeech's dev-clean, its old domain.
GIGASPEECH_TRAIN = "cuts_S.jsonl.gz"
GIGASPEECH_DEV = "cuts_DEV.jsonl.gz"
GIGASPEECH_TEST = "cuts_TEST.jsonl.gz"
LIBRISPEECH_DEV = "librispeech_cuts_dev-clean.jsonl.gz"

# The base recipe's cut-file flags (AsrDataModule).
DEFAULT_TRAIN_CUTS = SOURCE_TRAIN
DEFAULT_VALID_CUTS = {"source": SOURCE_DEV}
DEFAULT_TEST_CUTS = {"source": SOURCE_TEST, "target": TARGET_TEST}
DEFAULT_MUSAN_CUTS = MUSAN
# decode_gigaspeech.py's test sets.
GIGASPEECH_TEST_CUTS = {"dev": GIGASPEECH_DEV, "test": GIGASPEECH_TEST}
# A fine-tune's training and validation cuts (the validation sets' names are the domains').
GIGASPEECH_VALID = {"librispeech": LIBRISPEECH_DEV, "gigaspeech": GIGASPEECH_DEV}
EMBEDDED_TRAIN = TARGET_TRAIN
EMBEDDED_VALID = {"source": SOURCE_DEV, "target": TARGET_DEV}


def named_cuts(manifest_dir: Path, cuts: Mapping[str, str]) -> str:
    """The value of a name=path,... flag (--valid-cuts, --test-cuts) for files of manifest_dir."""
    return ",".join(f"{name}={manifest_dir / filename}" for name, filename in cuts.items())


def default_cuts(manifest_dir: Path) -> Tuple[str, str, str]:
    """(what, train cuts, valid cuts) of the fine-tuning data found in manifest_dir."""
    if (manifest_dir / GIGASPEECH_TRAIN).is_file():
        valid = {k: v for k, v in GIGASPEECH_VALID.items() if (manifest_dir / v).is_file()}
        train, what = manifest_dir / GIGASPEECH_TRAIN, "GigaSpeech"
    else:
        valid = EMBEDDED_VALID
        train, what = manifest_dir / EMBEDDED_TRAIN, "the embedded target domain"
    return what, str(train), named_cuts(manifest_dir, valid)


def default_dev_sets(manifest_dir: Path) -> Tuple[str, str]:
    """(source dev, target dev) cut files of the fine-tuning data found in manifest_dir."""
    if (manifest_dir / GIGASPEECH_TRAIN).is_file():
        source, target = GIGASPEECH_VALID["librispeech"], GIGASPEECH_VALID["gigaspeech"]
    else:
        source, target = EMBEDDED_VALID["source"], EMBEDDED_VALID["target"]
    return str(manifest_dir / source), str(manifest_dir / target)
