"""Checks of recordings + supervisions before features are computed, with errors that name the file.

lhotse's own validation (lhotse.qa) checks the manifests' internal consistency; the checks here add
what it does not: that every audio file exists, is readable and not empty, that every transcript has
words, and that recordings and supervisions match one to one by id.
"""
from collections import Counter
from pathlib import Path
from typing import Iterable, List

import soundfile as sf
from lhotse import RecordingSet, SupervisionSet
from lhotse.qa import validate_recordings_and_supervisions

from zipformer.core.errors import UserError


def _first(items: Iterable[str], n: int = 3) -> str:
    items = sorted(items)
    return ", ".join(items[:n]) + (f" (and {len(items) - n} more)" if len(items) > n else "")


def check_audio_file(path: Path, what: str) -> None:
    """UserError unless `path` is an existing, readable, non-empty audio file."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{what}: audio file {path} does not exist; fix the path or remove the entry")
    if path.stat().st_size == 0:
        raise UserError(f"{what}: audio file {path} is empty (0 bytes); replace it or remove the entry")
    try:
        info = sf.info(str(path))
    except Exception as e:  # soundfile raises several types for unreadable files
        raise UserError(
            f"{what}: audio file {path} is not readable ({e}); convert it to WAV or FLAC "
            "(e.g. sox in.ext -r 16000 -c 1 out.flac) or remove the entry"
        ) from None
    if info.frames == 0:
        raise UserError(f"{what}: audio file {path} has no samples; replace it or remove the entry")


def check_audio_files(recordings: RecordingSet) -> None:
    for recording in recordings:
        for source in recording.sources:
            if source.type == "file":
                check_audio_file(Path(source.source), f"recording '{recording.id}'")


def check_transcripts(supervisions: SupervisionSet) -> None:
    empty: List[str] = [s.id for s in supervisions if not (s.text or "").split()]
    if empty:
        raise UserError(
            f"{len(empty)} supervision(s) have a transcript with no words: {_first(empty)}; "
            "fix their text or remove them"
        )


def check_unique_ids(recordings: RecordingSet, supervisions: SupervisionSet) -> None:
    for what, ids in (("recording", recordings.ids), ("utterance", (s.id for s in supervisions))):
        counts = Counter(ids)
        repeated = [i for i, n in counts.items() if n > 1]
        if repeated:
            raise UserError(f"{what} id(s) used more than once: {_first(repeated)}; give each {what} its own id")


def check_ids_match(recordings: RecordingSet, supervisions: SupervisionSet) -> None:
    recording_ids = set(recordings.ids)
    supervised_ids = {s.recording_id for s in supervisions}
    orphans = supervised_ids - recording_ids
    if orphans:
        raise UserError(
            f"transcripts refer to recordings that do not exist: {_first(orphans)}; "
            "check that transcript ids match the audio file names"
        )
    silent = recording_ids - supervised_ids
    if silent:
        raise UserError(
            f"recordings without a transcript: {_first(silent)}; add their transcripts or remove the audio"
        )


def validate_manifests(recordings: RecordingSet, supervisions: SupervisionSet) -> None:
    """Raise a UserError describing the first problem found; return None when all is well."""
    if len(recordings) == 0:
        raise UserError("no recordings found: check the audio directory / manifest path")
    if len(supervisions) == 0:
        raise UserError("no transcripts found: check the transcript file / manifest path")
    check_unique_ids(recordings, supervisions)
    check_ids_match(recordings, supervisions)
    check_transcripts(supervisions)
    check_audio_files(recordings)
    try:
        validate_recordings_and_supervisions(recordings, supervisions)
    except (AssertionError, ValueError) as e:
        raise UserError(f"lhotse manifest validation failed: {e}") from None
