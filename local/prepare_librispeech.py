#!/usr/bin/env python3
"""LibriSpeech through lhotse's own recipe (lhotse.recipes): download, manifests, shuffled train cuts.

Usage:
  ./local/prepare_librispeech.py download --dl-dir download [--parts librispeech|mini_librispeech|dev-clean ...]
  ./local/prepare_librispeech.py manifests --corpus-dir download/LibriSpeech [--manifest-dir data/manifests] [--parts ...]
  ./local/prepare_librispeech.py shuffle --fbank-dir data/fbank [--seed 42]

`manifests` checks the corpus layout first (each utterance of every *.trans.txt has a non-empty
.flac), writes librispeech_{recordings,supervisions}_{part}.jsonl.gz atomically, and skips parts
already prepared. Features come from ./local/compute_fbank.py --dataset librispeech (speed
perturbation on the train parts). `shuffle` writes librispeech_cuts_train-all-shuf.jsonl.gz, the
shuffled concatenation of every librispeech_cuts_train-*.jsonl.gz.
"""
import argparse
import gzip
import logging
import os
import random
import tempfile
from pathlib import Path
from typing import List, Sequence

from local.manifest_io import up_to_date
from local.validate import check_audio_file
from zipformer.core.atomic import write_atomically
from zipformer.core.errors import UserError, exit_on_user_error

FULL_PARTS = ("dev-clean", "dev-other", "test-clean", "test-other", "train-clean-100", "train-clean-360", "train-other-500")
MINI_PARTS = ("dev-clean-2", "train-clean-5")
SHUFFLED_TRAIN = "librispeech_cuts_train-all-shuf.jsonl.gz"


def manifest_names(part: str) -> List[str]:
    return [f"librispeech_recordings_{part}.jsonl.gz", f"librispeech_supervisions_{part}.jsonl.gz"]


def resolve_parts(corpus_dir: Path, parts: Sequence[str]) -> List[str]:
    """Expand "auto" (every known part present in corpus_dir) and check the named parts exist."""
    if not corpus_dir.is_dir():
        raise UserError(
            f"LibriSpeech directory {corpus_dir} not found: run the download stage "
            "(./prepare.sh --dataset librispeech --stage 0) or pass --corpus-dir"
        )
    if list(parts) == ["auto"]:
        found = [p for p in FULL_PARTS + MINI_PARTS if (corpus_dir / p).is_dir()]
        if not found:
            raise UserError(
                f"no LibriSpeech part (e.g. {corpus_dir}/dev-clean) found in {corpus_dir}: "
                "download the corpus or fix --corpus-dir"
            )
        return found
    for part in parts:
        if not (corpus_dir / part).is_dir():
            raise UserError(f"LibriSpeech part {corpus_dir / part} not found: download it or drop it from --parts")
    return list(parts)


def check_corpus_part(part_dir: Path) -> int:
    """Check LibriSpeech's layout (SPK/CHAPTER/SPK-CHAPTER.trans.txt + SPK-CHAPTER-NNNN.flac) and
    that every listed flac is readable and not empty.

    Returns the number of utterances; raises UserError naming the first bad file.
    """
    transcripts = sorted(part_dir.rglob("*.trans.txt"))
    if not transcripts:
        raise UserError(f"no *.trans.txt transcript under {part_dir}: is this a LibriSpeech part directory?")
    count = 0
    for trans in transcripts:
        for number, line in enumerate(trans.read_text().splitlines(), 1):
            if not line.strip():
                continue
            utt_id, _, text = line.strip().partition(" ")
            if not text.split():
                raise UserError(f"{trans}:{number}: utterance '{utt_id}' has no words; fix or remove the line")
            audio = trans.parent / f"{utt_id}.flac"
            if not audio.is_file():
                raise UserError(f"{trans}:{number}: audio {audio} is missing; restore it or remove the line")
            check_audio_file(audio, f"{trans}:{number}")
            count += 1
    return count


def download(dl_dir: Path, parts: Sequence[str]) -> Path:
    from lhotse.recipes import download_librispeech

    dataset_parts = parts[0] if len(parts) == 1 and parts[0] in ("librispeech", "mini_librispeech") else list(parts)
    return download_librispeech(target_dir=dl_dir, dataset_parts=dataset_parts)


def prepare_manifests(corpus_dir: Path, manifest_dir: Path, parts: Sequence[str], num_jobs: int = 1) -> List[str]:
    """lhotse's prepare_librispeech into a temp dir, then move the files into `manifest_dir`."""
    from lhotse.recipes import prepare_librispeech

    parts = resolve_parts(corpus_dir, parts)
    todo = [p for p in parts if not all((manifest_dir / n).is_file() for n in manifest_names(p))]
    for part in parts:
        if part not in todo:
            logging.info(f"LibriSpeech {part}: manifests exist, skipping")
    manifest_dir.mkdir(parents=True, exist_ok=True)
    for part in todo:
        n = check_corpus_part(corpus_dir / part)
        logging.info(f"LibriSpeech {part}: {n} utterances, preparing manifests")
        with tempfile.TemporaryDirectory(dir=manifest_dir, prefix=".tmp-librispeech-") as tmp:
            prepare_librispeech(corpus_dir, dataset_parts=[part], output_dir=tmp, num_jobs=num_jobs)
            for name in manifest_names(part):
                os.replace(Path(tmp) / name, manifest_dir / name)
    return parts


def shuffle_train_cuts(fbank_dir: Path, seed: int = 42) -> Path:
    """Shuffle the lines of every train part's cuts file into librispeech_cuts_train-all-shuf.jsonl.gz."""
    inputs = sorted(p for p in fbank_dir.glob("librispeech_cuts_train-*.jsonl.gz") if p.name != SHUFFLED_TRAIN)
    if not inputs:
        raise UserError(f"no librispeech_cuts_train-*.jsonl.gz in {fbank_dir}: run the fbank stage first")
    output = fbank_dir / SHUFFLED_TRAIN
    if up_to_date([output], inputs):
        logging.info(f"{output} is up to date, skipping")
        return output
    lines = []
    for path in inputs:
        with gzip.open(path, "rt") as f:
            lines.extend(line for line in f if line.strip())
    random.Random(seed).shuffle(lines)

    def write(tmp: Path) -> None:
        with gzip.open(tmp, "wt") as f:
            f.writelines(lines)

    write_atomically(output, write)
    logging.info(f"wrote {output}: {len(lines)} cuts from {', '.join(p.name for p in inputs)}")
    return output


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("step", choices=["download", "manifests", "shuffle"])
    parser.add_argument("--dl-dir", type=Path, default=Path("download"))
    parser.add_argument("--corpus-dir", type=Path, help="default: {dl-dir}/LibriSpeech")
    parser.add_argument("--manifest-dir", type=Path, default=Path("data/manifests"))
    parser.add_argument("--fbank-dir", type=Path, default=Path("data/fbank"))
    parser.add_argument("--parts", nargs="+", default=["auto"], help="download: librispeech (default), mini_librispeech or part names; manifests: auto or part names")
    parser.add_argument("--num-jobs", type=int, default=2)
    parser.add_argument("--seed", type=int, default=42)
    return parser


def main() -> None:
    args = get_parser().parse_args()
    logging.basicConfig(format="%(asctime)s %(levelname)s [%(filename)s:%(lineno)d] %(message)s", level=logging.INFO)
    corpus_dir = args.corpus_dir or args.dl_dir / "LibriSpeech"
    with exit_on_user_error():
        if args.step == "download":
            parts = ["librispeech"] if args.parts == ["auto"] else args.parts
            logging.info(f"downloaded to {download(args.dl_dir, parts)}")
        elif args.step == "manifests":
            prepare_manifests(corpus_dir, args.manifest_dir, args.parts, args.num_jobs)
        else:
            shuffle_train_cuts(args.fbank_dir, args.seed)


if __name__ == "__main__":
    main()
