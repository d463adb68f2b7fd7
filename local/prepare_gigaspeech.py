#!/usr/bin/env python3
"""GigaSpeech through lhotse's own recipe: download, manifests, text clean-up, features, cuts_{S,DEV,TEST}.

Usage:
  ./local/prepare_gigaspeech.py download --dl-dir download --password PASSWORD [--subsets S DEV TEST]
  ./local/prepare_gigaspeech.py manifests --corpus-dir download/GigaSpeech [--subsets S DEV TEST]
  ./local/prepare_gigaspeech.py preprocess [--subsets S DEV TEST]
  ./local/prepare_gigaspeech.py fbank [--subsets S DEV TEST] [--num-jobs 2] [--speed-perturb-s]

lhotse's GigaSpeech recipe needs the optional package `speechcolab` (pip install speechcolab) and
a download password from the GigaSpeech authors. `preprocess` drops the segments whose text has
<SIL>/<MUSIC>/<NOISE>/<OTHER> and strips <COMMA>/<PERIOD>/<QUESTIONMARK>/<EXCLAMATIONPOINT>, then
writes data/manifests/gigaspeech_cuts_{subset}_raw.jsonl.gz. `fbank` cuts one segment per cut and
writes data/fbank/cuts_{S,DEV,TEST}.jsonl.gz: the names the adapter recipe reads.
"""
import argparse
import dataclasses
import logging
import os
import re
import tempfile
from pathlib import Path
from typing import List, Optional, Sequence

from lhotse import CutSet, RecordingSet, SupervisionSet

from local.features import compute_features_for_cuts, speed_perturb
from local.manifest_io import atomic_save, up_to_date
from local.validate import validate_manifests
from zipformer.core.errors import UserError, exit_on_user_error

SUBSETS = ("S", "DEV", "TEST")
GARBAGE_TAGS = ("<SIL>", "<MUSIC>", "<NOISE>", "<OTHER>")
PUNCTUATION_TAGS = re.compile(r"<(COMMA|PERIOD|QUESTIONMARK|EXCLAMATIONPOINT)>")
NO_SPEECHCOLAB = (
    "lhotse's GigaSpeech recipe needs the optional package speechcolab: "
    "run .venv/bin/pip install speechcolab and try again"
)


def manifest_path(manifest_dir: Path, kind: str, subset: str) -> Path:
    return manifest_dir / f"gigaspeech_{kind}_{subset}.jsonl.gz"


def raw_cuts_path(manifest_dir: Path, subset: str) -> Path:
    return manifest_dir / f"gigaspeech_cuts_{subset}_raw.jsonl.gz"


def cuts_path(fbank_dir: Path, subset: str) -> Path:
    """The name the adapter recipe reads (cuts_S.jsonl.gz, ...)."""
    return fbank_dir / f"cuts_{subset}.jsonl.gz"


def clean_text(text: str) -> Optional[str]:
    """GigaSpeech text as icefall trains on it; None when the segment must be dropped."""
    if any(tag in text for tag in GARBAGE_TAGS):
        return None
    cleaned = " ".join(PUNCTUATION_TAGS.sub(" ", text).split())
    return cleaned or None


def download(dl_dir: Path, password: str, subsets: Sequence[str]) -> None:
    if not password:
        raise UserError("GigaSpeech needs a download password (ask the GigaSpeech authors): pass --password")
    from lhotse.recipes import download_gigaspeech

    try:
        download_gigaspeech(password=password, target_dir=dl_dir, dataset_parts=list(subsets))
    except ImportError:
        raise UserError(NO_SPEECHCOLAB) from None


def prepare_manifests(corpus_dir: Path, manifest_dir: Path, subsets: Sequence[str], num_jobs: int) -> None:
    """lhotse's prepare_gigaspeech into a temp dir, then move the files into `manifest_dir`."""
    from lhotse.recipes import prepare_gigaspeech

    if not corpus_dir.is_dir():
        raise UserError(f"GigaSpeech directory {corpus_dir} not found: run the download stage or pass --corpus-dir")
    manifest_dir.mkdir(parents=True, exist_ok=True)
    for subset in subsets:
        names = [manifest_path(manifest_dir, kind, subset) for kind in ("recordings", "supervisions")]
        if all(p.is_file() for p in names):
            logging.info(f"GigaSpeech {subset}: manifests exist, skipping")
            continue
        with tempfile.TemporaryDirectory(dir=manifest_dir, prefix=".tmp-gigaspeech-") as tmp:
            try:
                prepare_gigaspeech(corpus_dir, output_dir=tmp, dataset_parts=[subset], num_jobs=num_jobs)
            except ImportError:
                raise UserError(NO_SPEECHCOLAB) from None
            for path in names:
                os.replace(Path(tmp) / path.name, path)


def preprocess(manifest_dir: Path, subsets: Sequence[str]) -> None:
    for subset in subsets:
        recordings_path = manifest_path(manifest_dir, "recordings", subset)
        supervisions_path = manifest_path(manifest_dir, "supervisions", subset)
        output = raw_cuts_path(manifest_dir, subset)
        for path in (recordings_path, supervisions_path):
            if not path.is_file():
                raise UserError(f"{path} not found: run the manifest stage first")
        if up_to_date([output], [recordings_path, supervisions_path]):
            logging.info(f"{output} is up to date, skipping")
            continue
        recordings = RecordingSet.from_file(recordings_path).to_eager()
        kept, dropped = [], 0
        for sup in SupervisionSet.from_file(supervisions_path):
            text = clean_text(sup.text or "")
            if text is None:
                dropped += 1
            else:
                kept.append(dataclasses.replace(sup, text=text))
        supervisions = SupervisionSet.from_segments(kept)
        supervised = {s.recording_id for s in kept}
        used = recordings.filter(lambda r: r.id in supervised).to_eager()
        validate_manifests(used, supervisions)
        cuts = CutSet.from_manifests(recordings=used, supervisions=supervisions)
        atomic_save(cuts, output)
        logging.info(f"GigaSpeech {subset}: kept {len(kept)} segments, dropped {dropped} (garbage tags)")


def compute_fbank(manifest_dir: Path, fbank_dir: Path, subsets: Sequence[str], num_jobs: int, speed_perturb_s: bool) -> List[Path]:
    written = []
    for subset in subsets:
        raw = raw_cuts_path(manifest_dir, subset)
        output = cuts_path(fbank_dir, subset)
        if not raw.is_file():
            raise UserError(f"{raw} not found: run the preprocess stage first")
        if up_to_date([output], [raw]):
            logging.info(f"{output} is up to date, skipping")
            written.append(output)
            continue
        cuts = CutSet.from_file(raw).trim_to_supervisions(keep_overlapping=False).to_eager()
        if speed_perturb_s and subset == "S":
            cuts = speed_perturb(cuts)
        cuts = compute_features_for_cuts(cuts, fbank_dir / f"gigaspeech_feats_{subset}", num_jobs, f"fbank GigaSpeech {subset}")
        atomic_save(cuts, output)
        logging.info(f"wrote {output} ({len(cuts)} cuts, {sum(c.duration for c in cuts) / 3600:.3f} h)")
        written.append(output)
    return written


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("step", choices=["download", "manifests", "preprocess", "fbank"])
    parser.add_argument("--dl-dir", type=Path, default=Path("download"))
    parser.add_argument("--corpus-dir", type=Path, help="default: {dl-dir}/GigaSpeech")
    parser.add_argument("--password", default=os.environ.get("GIGASPEECH_PASSWORD", ""))
    parser.add_argument("--manifest-dir", type=Path, default=Path("data/manifests"))
    parser.add_argument("--fbank-dir", type=Path, default=Path("data/fbank"))
    parser.add_argument("--subsets", nargs="+", default=list(SUBSETS))
    parser.add_argument("--num-jobs", type=int, default=2)
    parser.add_argument("--speed-perturb-s", action="store_true", help="add x0.9/x1.1 copies of subset S")
    return parser


def main() -> None:
    args = get_parser().parse_args()
    logging.basicConfig(format="%(asctime)s %(levelname)s [%(filename)s:%(lineno)d] %(message)s", level=logging.INFO)
    with exit_on_user_error():
        if args.step == "download":
            download(args.dl_dir, args.password, args.subsets)
        elif args.step == "manifests":
            prepare_manifests(args.corpus_dir or args.dl_dir / "GigaSpeech", args.manifest_dir, args.subsets, args.num_jobs)
        elif args.step == "preprocess":
            preprocess(args.manifest_dir, args.subsets)
        else:
            compute_fbank(args.manifest_dir, args.fbank_dir, args.subsets, args.num_jobs, args.speed_perturb_s)


if __name__ == "__main__":
    main()
