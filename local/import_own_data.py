#!/usr/bin/env python3
"""Turn your own data into the cut files the training scripts read, in one command.

Usage (pick one input):
  # a directory of audio files + a transcript file with lines "<id> <words...>", where <id> is an
  # audio file's name without extension (or its path relative to --audio-dir):
  ./local/import_own_data.py --audio-dir my_audio --transcripts my_audio/text.txt
  # a Kaldi data directory (wav.scp, text; optional segments, utt2spk):
  ./local/import_own_data.py --kaldi-dir data/kaldi/train
  # any lhotse CutSet (with recordings and supervisions):
  ./local/import_own_data.py --cuts my_cuts.jsonl.gz

Output (default --name target, --split auto = 80/10/10 train/dev/test by --seed):
  data/manifests/{name}_{recordings,supervisions}_{split}.jsonl.gz
  data/fbank/{name}_cuts_{split}.jsonl.gz (+ 80-dim Fbank in data/fbank/{name}_feats_{split}/)
With the default name these are the files adapter fine-tuning reads for the target domain, so
fine-tuning on your data is: import, then run the fine-tuning stage as usual (it keeps the base
model's bpe.model). Use --split train|dev|test to import a whole input as one split.

Transcripts are normalised like LibriSpeech (upper case, punctuation removed, in-word apostrophes
kept) unless --keep-text: accents fold to their base letters, numbers, currency, times and ordinals
become words, and an utterance whose text has no spoken form (e.g. "mp3", another script) is
dropped; the log counts every change and every drop, with an example. Audio that is not 16 kHz mono is converted with sox into
data/{name}_audio/. Existing cut files are not replaced without --overwrite.
"""
import argparse
import dataclasses
import logging
import random
import subprocess
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from lhotse import CutSet, Recording, RecordingSet, SupervisionSegment, SupervisionSet

from local.features import compute_fbank_for_manifests
from local.manifest_io import atomic_save
from local.spoken_text import NormalizationReport
from local.validate import check_audio_file, validate_manifests
from zipformer.core.errors import UserError, exit_on_user_error
from zipformer.model.frontend import SAMPLE_RATE

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".opus", ".mp3", ".sph")
SPLITS = ("train", "dev", "test")


def _read_table(path: Path, min_fields: int) -> List[Tuple[int, List[str]]]:
    """Non-empty lines of a Kaldi-style table as (line number, whitespace-separated fields)."""
    if not path.is_file():
        raise UserError(f"{path} not found")
    rows = []
    first_line: Dict[str, int] = {}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) < min_fields:
            raise UserError(f"{path}:{number}: expected at least {min_fields} fields, got '{line.strip()}'")
        if fields[0] in first_line:
            raise UserError(
                f"{path}:{number}: id '{fields[0]}' appears twice (first on line {first_line[fields[0]]}); "
                "remove or rename one"
            )
        first_line[fields[0]] = number
        rows.append((number, fields))
    return rows


def _recording(path: Path, recording_id: str) -> Recording:
    check_audio_file(path, f"utterance '{recording_id}'")
    return Recording.from_file(path, recording_id=recording_id)


def from_audio_dir(audio_dir: Path, transcripts: Path) -> Tuple[RecordingSet, SupervisionSet]:
    if not audio_dir.is_dir():
        raise UserError(f"audio directory {audio_dir} not found")
    by_stem: Dict[str, Path] = {}
    for path in sorted(audio_dir.rglob("*")):
        if path.suffix.lower() in AUDIO_EXTENSIONS and path.is_file():
            if path.stem in by_stem:
                raise UserError(
                    f"two audio files are named '{path.stem}' ({by_stem[path.stem]}, {path}): "
                    "rename one, or refer to them by relative path in the transcript file"
                )
            by_stem[path.stem] = path
    recordings, supervisions = [], []
    for number, fields in _read_table(transcripts, 1):
        key, words = fields[0], " ".join(fields[1:])
        path = audio_dir / key if (audio_dir / key).is_file() else by_stem.get(key)
        if path is None:
            raise UserError(
                f"{transcripts}:{number}: no audio file for '{key}' in {audio_dir} "
                f"(looked for {key} and {key}.{{{','.join(e[1:] for e in AUDIO_EXTENSIONS)}}}); "
                "fix the id or add the file"
            )
        utt_id = Path(key).with_suffix("").as_posix().replace("/", "_")
        recording = _recording(path, utt_id)
        recordings.append(recording)
        supervisions.append(
            SupervisionSegment(id=utt_id, recording_id=utt_id, start=0.0, duration=recording.duration, channel=0, text=words, language="English")
        )
    unused = len(by_stem) - len(recordings)
    if unused > 0:
        logging.warning(f"{unused} audio file(s) in {audio_dir} have no transcript line and are ignored")
    return RecordingSet.from_recordings(recordings), SupervisionSet.from_segments(supervisions)


def from_kaldi_dir(kaldi_dir: Path) -> Tuple[RecordingSet, SupervisionSet]:
    if not kaldi_dir.is_dir():
        raise UserError(f"Kaldi data directory {kaldi_dir} not found")
    recordings = {}
    for number, fields in _read_table(kaldi_dir / "wav.scp", 2):
        if fields[-1] == "|" or len(fields) > 2:
            raise UserError(
                f"{kaldi_dir}/wav.scp:{number}: command pipes are not supported; write the audio to "
                "files first (e.g. run the command into a .wav) and list the files"
            )
        recordings[fields[0]] = _recording(Path(fields[1]), fields[0])
    speakers = {f[0]: f[1] for _, f in _read_table(kaldi_dir / "utt2spk", 2)} if (kaldi_dir / "utt2spk").is_file() else {}
    texts = {f[0]: " ".join(f[1:]) for _, f in _read_table(kaldi_dir / "text", 1)}
    segments_path = kaldi_dir / "segments"
    if segments_path.is_file():
        spans = {}
        for number, f in _read_table(segments_path, 4):
            if f[1] not in recordings:
                raise UserError(f"{segments_path}:{number}: recording '{f[1]}' is not in wav.scp; fix the id")
            start, end = float(f[2]), float(f[3])
            if end <= start or end > recordings[f[1]].duration + 0.05:
                raise UserError(f"{segments_path}:{number}: segment {start}-{end} s lies outside recording '{f[1]}'")
            spans[f[0]] = (f[1], start, end - start)
    else:
        spans = {utt: (utt, 0.0, rec.duration) for utt, rec in recordings.items()}
    missing = sorted(set(texts) - set(spans))
    if missing:
        raise UserError(f"{kaldi_dir}/text: utterance '{missing[0]}' has no audio in wav.scp/segments; fix the ids")
    supervisions = [
        SupervisionSegment(
            id=utt, recording_id=rec_id, start=start, duration=min(duration, recordings[rec_id].duration - start),
            channel=0, text=texts[utt], speaker=speakers.get(utt), language="English",
        )
        for utt, (rec_id, start, duration) in spans.items()
        if utt in texts
    ]
    return RecordingSet.from_recordings(recordings.values()), SupervisionSet.from_segments(supervisions)


def from_cuts(cuts_path: Path) -> Tuple[RecordingSet, SupervisionSet]:
    if not cuts_path.is_file():
        raise UserError(f"cut manifest {cuts_path} not found")
    try:
        cuts = CutSet.from_file(cuts_path).to_eager()
    except Exception as e:  # lhotse raises various types for files that are not cut manifests
        raise UserError(f"{cuts_path} is not a readable lhotse CutSet ({e})") from None
    recordings, supervisions = {}, []
    for cut in cuts:
        if not cut.has_recording:
            raise UserError(f"cut '{cut.id}' in {cuts_path} has no recording: features are computed from audio")
        recordings[cut.recording.id] = cut.recording
        supervisions.extend(cut.supervisions)
    return RecordingSet.from_recordings(recordings.values()), SupervisionSet.from_segments(supervisions)


def normalize_supervisions(
    recordings: RecordingSet, supervisions: SupervisionSet
) -> Tuple[RecordingSet, SupervisionSet, NormalizationReport]:
    """Spoken-word transcripts; dropped utterances go, and so do recordings left without one."""
    report = NormalizationReport()
    kept = []
    for segment in supervisions:
        text = report.normalize(segment.id, segment.text or "")
        if text is not None:
            kept.append(dataclasses.replace(segment, text=text))
    if supervisions and not kept:
        reasons = ", ".join(report.dropped)
        raise UserError(f"text normalisation dropped every transcript ({reasons}): fix the texts or pass --keep-text")
    supervised = {s.recording_id for s in kept}
    recordings = RecordingSet.from_recordings(r for r in recordings if r.id in supervised)
    return recordings, SupervisionSet.from_segments(kept), report


def to_16k_mono(recordings: RecordingSet, out_dir: Path) -> RecordingSet:
    """Recordings at 16 kHz mono as they are; others converted with sox into `out_dir`."""
    converted = []
    for rec in recordings:
        if rec.sampling_rate == SAMPLE_RATE and rec.num_channels == 1:
            converted.append(rec)
            continue
        if len(rec.sources) != 1 or rec.sources[0].type != "file":
            raise UserError(f"recording '{rec.id}' is at {rec.sampling_rate} Hz with a non-file source: resample it to 16 kHz mono first")
        out_dir.mkdir(parents=True, exist_ok=True)
        target = out_dir / f"{rec.id}.flac"
        command = ["sox", "-V1", rec.sources[0].source, "-r", str(SAMPLE_RATE), "-c", "1", "-b", "16", str(target)]
        result = subprocess.run(command, capture_output=True)
        if result.returncode != 0:
            raise UserError(
                f"could not convert {rec.sources[0].source} to 16 kHz mono with sox "
                f"({result.stderr.decode(errors='replace').strip()}); convert it yourself to a 16 kHz WAV"
            )
        converted.append(Recording.from_file(target, recording_id=rec.id))
    return RecordingSet.from_recordings(converted)


def assign_splits(recording_ids: List[str], split: str, dev_fraction: float, test_fraction: float, seed: int) -> Dict[str, str]:
    """recording id -> split; with "auto", a seeded shuffle cut by the fractions (>= 1 each when possible)."""
    if split != "auto":
        return {rid: split for rid in recording_ids}
    ids = sorted(recording_ids)
    random.Random(seed).shuffle(ids)
    n_dev = round(len(ids) * dev_fraction)
    n_test = round(len(ids) * test_fraction)
    if len(ids) >= 3:
        n_dev, n_test = max(1, n_dev), max(1, n_test)
    if n_dev + n_test >= len(ids):
        raise UserError(f"only {len(ids)} recordings: too few to split into train/dev/test; pass --split train")
    if n_dev == 0 or n_test == 0:
        logging.warning(
            f"only {len(ids)} recordings: all go to train and there is no dev or test set; "
            "import more recordings, or import a dev/test set separately with --split dev|test"
        )
    return {rid: ("dev" if i < n_dev else "test" if i < n_dev + n_test else "train") for i, rid in enumerate(ids)}


def import_data(
    recordings: RecordingSet,
    supervisions: SupervisionSet,
    name: str,
    split: str = "auto",
    manifest_dir: Path = Path("data/manifests"),
    fbank_dir: Path = Path("data/fbank"),
    audio_out_dir: Optional[Path] = None,
    normalize: bool = True,
    dev_fraction: float = 0.1,
    test_fraction: float = 0.1,
    seed: int = 42,
    num_jobs: int = 1,
    overwrite: bool = False,
) -> Dict[str, Path]:
    """Validate, split, write manifests and compute features; returns {split: cuts path}."""
    if normalize:
        recordings, supervisions, report = normalize_supervisions(recordings, supervisions)
        for line in report.summary():
            logging.info(line)
    validate_manifests(recordings, supervisions)
    recordings = to_16k_mono(recordings, audio_out_dir or Path(f"data/{name}_audio"))
    splits = assign_splits(list(recordings.ids), split, dev_fraction, test_fraction, seed)
    outputs = {s: fbank_dir / f"{name}_cuts_{s}.jsonl.gz" for s in sorted(set(splits.values()))}
    existing = [str(p) for p in outputs.values() if p.exists()]
    if existing and not overwrite:
        raise UserError(f"{', '.join(existing)} already exist: pass --overwrite to replace them, or choose another --name")
    for split_name, cuts_path in outputs.items():
        rec_path = manifest_dir / f"{name}_recordings_{split_name}.jsonl.gz"
        sup_path = manifest_dir / f"{name}_supervisions_{split_name}.jsonl.gz"
        atomic_save(recordings.filter(lambda r: splits[r.id] == split_name).to_eager(), rec_path)
        atomic_save(supervisions.filter(lambda s: splits[s.recording_id] == split_name).to_eager(), sup_path)
        compute_fbank_for_manifests(
            rec_path, sup_path, cuts_path, fbank_dir / f"{name}_feats_{split_name}",
            num_jobs=num_jobs, trim_to_supervisions=True,
        )
    return outputs


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--audio-dir", type=Path, help="directory of audio files (with --transcripts)")
    source.add_argument("--kaldi-dir", type=Path, help="Kaldi data dir with wav.scp and text")
    source.add_argument("--cuts", type=Path, help="a lhotse CutSet manifest")
    parser.add_argument("--transcripts", type=Path, help="lines '<id> <words...>' for --audio-dir")
    parser.add_argument("--name", default="target", help="output prefix (target: the fine-tuning domain)")
    parser.add_argument("--split", default="auto", choices=["auto", *SPLITS])
    parser.add_argument("--dev-fraction", type=float, default=0.1)
    parser.add_argument("--test-fraction", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--keep-text", action="store_true", help="do not normalise transcripts")
    parser.add_argument("--manifest-dir", type=Path, default=Path("data/manifests"))
    parser.add_argument("--fbank-dir", type=Path, default=Path("data/fbank"))
    parser.add_argument("--num-jobs", type=int, default=2)
    parser.add_argument("--overwrite", action="store_true", help="replace existing cut files of this name")
    return parser


def main() -> None:
    args = get_parser().parse_args()
    logging.basicConfig(format="%(asctime)s %(levelname)s [%(filename)s:%(lineno)d] %(message)s", level=logging.INFO)
    with exit_on_user_error():
        if args.audio_dir is not None:
            if args.transcripts is None:
                raise UserError("--audio-dir needs --transcripts FILE (lines '<id> <words...>')")
            recordings, supervisions = from_audio_dir(args.audio_dir, args.transcripts)
        elif args.kaldi_dir is not None:
            recordings, supervisions = from_kaldi_dir(args.kaldi_dir)
        else:
            recordings, supervisions = from_cuts(args.cuts)
        outputs = import_data(
            recordings, supervisions, args.name, args.split, args.manifest_dir, args.fbank_dir,
            normalize=not args.keep_text, dev_fraction=args.dev_fraction, test_fraction=args.test_fraction,
            seed=args.seed, num_jobs=args.num_jobs, overwrite=args.overwrite,
        )
        for split, path in outputs.items():
            logging.info(f"{split}: {path}")


if __name__ == "__main__":
    main()
