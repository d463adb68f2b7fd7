"""GigaSpeech path from lhotse-style manifests (the download/prepare steps need speechcolab + a password)."""
import importlib.util
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from lhotse import Recording, RecordingSet, SupervisionSegment, SupervisionSet, load_manifest

from local.prepare_gigaspeech import (
    SUBSETS,
    clean_text,
    compute_fbank,
    manifest_path,
    prepare_manifests,
    preprocess,
    raw_cuts_path,
)
from local.synth.synthesize_corpus import synthesize_utterances
from zipformer.core.errors import UserError

SEGMENTS = [  # (GigaSpeech text, cleaned text or None when the segment is dropped)
    ("THE RAIN IN SPAIN <COMMA> FALLS MAINLY ON THE PLAIN <PERIOD>", "THE RAIN IN SPAIN FALLS MAINLY ON THE PLAIN"),
    ("<MUSIC>", None),
    ("WHERE ARE YOU GOING <QUESTIONMARK>", "WHERE ARE YOU GOING"),
    ("<SIL>", None),
]


def test_clean_text():
    for text, cleaned in SEGMENTS:
        assert clean_text(text) == cleaned
    assert clean_text("I SAID <NOISE> HELLO") is None
    assert clean_text("<COMMA> <PERIOD>") is None
    assert clean_text("WOW <EXCLAMATIONPOINT> IT WORKS") == "WOW IT WORKS"


@pytest.fixture(scope="module")
def podcast(tmp_path_factory) -> Path:
    """One long recording made of four synthesized utterances back to back."""
    root = tmp_path_factory.mktemp("gigaspeech")
    cuts = synthesize_utterances(
        ["The rain in Spain falls mainly on the plain.", "La la la la la.", "Where are you going?", "Hmm hmm."],
        root / "pieces",
        compute_features=False,
    )
    audio = np.concatenate([c.load_audio()[0] for c in cuts])
    path = root / "POD0000000001.opus.flac"
    sf.write(path, audio, 16000)
    return path, [c.duration for c in cuts]


def write_fake_manifests(manifest_dir: Path, podcast) -> None:
    path, durations = podcast
    manifest_dir.mkdir(parents=True, exist_ok=True)
    starts = np.concatenate([[0.0], np.cumsum(durations)[:-1]])
    for subset in SUBSETS:
        recording = Recording.from_file(path, recording_id=f"{subset}_POD0000000001")
        sups = [
            SupervisionSegment(
                id=f"{subset}_POD0000000001_S{i:07d}", recording_id=recording.id, start=float(start),
                duration=float(duration), channel=0, text=text, speaker="N/A", language="English",
            )
            for i, ((text, _), start, duration) in enumerate(zip(SEGMENTS, starts, durations))
        ]
        RecordingSet.from_recordings([recording]).to_file(manifest_path(manifest_dir, "recordings", subset))
        SupervisionSet.from_segments(sups).to_file(manifest_path(manifest_dir, "supervisions", subset))


def test_preprocess_and_fbank_write_the_adapter_recipe_names(tmp_path: Path, podcast):
    manifest_dir, fbank_dir = tmp_path / "manifests", tmp_path / "fbank"
    write_fake_manifests(manifest_dir, podcast)
    preprocess(manifest_dir, SUBSETS)
    raw = load_manifest(raw_cuts_path(manifest_dir, "S"))
    assert [s.text for c in raw for s in c.supervisions] == [c for _, c in SEGMENTS if c]

    written = compute_fbank(manifest_dir, fbank_dir, SUBSETS, num_jobs=1, speed_perturb_s=True)
    assert [p.name for p in written] == ["cuts_S.jsonl.gz", "cuts_DEV.jsonl.gz", "cuts_TEST.jsonl.gz"]
    kept_durations = [d for (_, c), d in zip(SEGMENTS, podcast[1]) if c]
    for subset in SUBSETS:
        cuts = load_manifest(fbank_dir / f"cuts_{subset}.jsonl.gz")
        factor = 3 if subset == "S" else 1
        assert len(cuts) == factor * len(kept_durations)
        for cut in cuts:
            assert len(cut.supervisions) == 1
            assert "<" not in cut.supervisions[0].text
            assert cut.load_features().shape == (cut.num_frames, 80)
        plain = sorted(c.duration for c in cuts if "_sp" not in c.id)
        assert plain == pytest.approx(sorted(kept_durations), abs=0.011)


def test_missing_manifests_and_unreadable_audio(tmp_path: Path, podcast):
    with pytest.raises(UserError, match="gigaspeech_recordings_S.jsonl.gz not found: run the manifest stage"):
        preprocess(tmp_path, ["S"])
    with pytest.raises(UserError, match="run the preprocess stage first"):
        compute_fbank(tmp_path, tmp_path / "fbank", ["DEV"], num_jobs=1, speed_perturb_s=False)
    moved = tmp_path / "moved"
    moved.mkdir()
    manifest_dir = tmp_path / "manifests"
    write_fake_manifests(manifest_dir, (shutil.copy(podcast[0], moved), podcast[1]))
    (moved / podcast[0].name).unlink()
    with pytest.raises(UserError, match=r"POD0000000001\.opus\.flac does not exist"):
        preprocess(manifest_dir, ["DEV"])
    assert not raw_cuts_path(manifest_dir, "DEV").exists()


@pytest.mark.skipif(importlib.util.find_spec("speechcolab") is not None, reason="speechcolab is installed")
def test_lhotse_recipe_without_speechcolab_names_the_fix(tmp_path: Path):
    with pytest.raises(UserError, match="pip install speechcolab"):
        prepare_manifests(tmp_path, tmp_path / "manifests", ["DEV"], num_jobs=1)
    with pytest.raises(UserError, match="needs a download password"):
        from local.prepare_gigaspeech import download

        download(tmp_path, "", ["DEV"])
