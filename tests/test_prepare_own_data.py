"""local/import_own_data.py: audio dir + transcripts, Kaldi dirs, lhotse cuts, and bad input."""
import dataclasses
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from lhotse import RecordingSet, SupervisionSet, load_manifest

from local.import_own_data import from_audio_dir, from_cuts, from_kaldi_dir, import_data
from local.synth.synthesize_corpus import synthesize_utterances
from local.validate import validate_manifests
from zipformer.core.errors import UserError

REPO = Path(__file__).resolve().parents[1]
TEXTS = [
    "hello there, general kenobi!",
    "The weather is lovely today.",
    "Please call me back tomorrow.",
    "Is it raining in the city?",
    "We'll meet at the station.",
]


@pytest.fixture(scope="module")
def synthesized(tmp_path_factory):
    root = tmp_path_factory.mktemp("own")
    cuts = synthesize_utterances(TEXTS, root / "synth", domain="target", seed=3)
    return root, cuts


@pytest.fixture
def audio_dir(tmp_path: Path, synthesized) -> Path:
    """my_audio/{a,b}/uttN.{flac,wav}; utt4 is an 8 kHz stereo WAV that needs converting."""
    _, cuts = synthesized
    directory = tmp_path / "my_audio"
    lines = []
    for i, cut in enumerate(cuts):
        sub = directory / ("a" if i % 2 else "b")
        sub.mkdir(parents=True, exist_ok=True)
        if i == 4:
            audio = cut.load_audio()[0][::2]
            sf.write(sub / f"utt{i}.wav", np.stack([audio, audio], axis=1), 8000)
        else:
            shutil.copy(cut.recording.sources[0].source, sub / f"utt{i}.flac")
        lines.append(f"utt{i} {TEXTS[i]}\n")
    sf.write(directory / "no_transcript.wav", np.zeros(1600, dtype=np.float32), 16000)
    (directory / "text.txt").write_text("".join(lines))
    return directory


def test_audio_dir_import_splits_normalises_converts_and_computes_features(tmp_path: Path, audio_dir: Path):
    recordings, supervisions = from_audio_dir(audio_dir, audio_dir / "text.txt")
    assert len(recordings) == 5
    outputs = import_data(
        recordings, supervisions, "mine", manifest_dir=tmp_path / "manifests", fbank_dir=tmp_path / "fbank",
        audio_out_dir=tmp_path / "converted", seed=1,
    )
    assert sorted(outputs) == ["dev", "test", "train"]
    all_ids = []
    for split, path in outputs.items():
        assert path.name == f"mine_cuts_{split}.jsonl.gz"
        cuts = load_manifest(path)
        assert len(cuts) == {"train": 3, "dev": 1, "test": 1}[split]
        for cut in cuts:
            text = cut.supervisions[0].text
            assert text == text.upper() and "," not in text and "!" not in text
            assert cut.recording.sampling_rate == 16000 and cut.recording.num_channels == 1
            assert cut.load_features().shape == (cut.num_frames, 80)
            all_ids.append(cut.supervisions[0].id)
    assert sorted(all_ids) == [f"utt{i}" for i in range(5)]
    assert (tmp_path / "converted" / "utt4.flac").is_file()
    texts = {s.id: s.text for s in load_manifest(tmp_path / "manifests" / "mine_supervisions_train.jsonl.gz")}
    texts.update({s.id: s.text for split in ("dev", "test") for s in load_manifest(tmp_path / "manifests" / f"mine_supervisions_{split}.jsonl.gz")})
    assert texts["utt0"] == "HELLO THERE GENERAL KENOBI" and texts["utt4"] == "WE'LL MEET AT THE STATION"

    with pytest.raises(UserError, match="already exist: pass --overwrite"):
        import_data(recordings, supervisions, "mine", manifest_dir=tmp_path / "manifests", fbank_dir=tmp_path / "fbank", audio_out_dir=tmp_path / "converted")


def test_kaldi_dir_with_segments(tmp_path: Path, synthesized):
    _, cuts = synthesized
    audio = np.concatenate([c.load_audio()[0] for c in list(cuts)[:2]])
    sf.write(tmp_path / "call.wav", audio, 16000)
    first = list(cuts)[0].duration
    kaldi = tmp_path / "kaldi"
    kaldi.mkdir()
    (kaldi / "wav.scp").write_text(f"call {tmp_path / 'call.wav'}\n")
    (kaldi / "segments").write_text(f"seg1 call 0.0 {first:.3f}\nseg2 call {first:.3f} {len(audio) / 16000:.3f}\n")
    (kaldi / "text").write_text(f"seg1 {TEXTS[0]}\nseg2 {TEXTS[1]}\n")
    (kaldi / "utt2spk").write_text("seg1 alice\nseg2 bob\n")
    recordings, supervisions = from_kaldi_dir(kaldi)
    outputs = import_data(recordings, supervisions, "calls", split="train", manifest_dir=tmp_path / "m", fbank_dir=tmp_path / "f")
    cuts_out = load_manifest(outputs["train"])
    assert sorted(c.supervisions[0].speaker for c in cuts_out) == ["alice", "bob"]
    assert sorted(round(c.duration, 2) for c in cuts_out) == sorted(round(d, 2) for d in (first, len(audio) / 16000 - first))
    for cut in cuts_out:
        assert cut.load_features().shape == (cut.num_frames, 80)


def test_lhotse_cuts_import(tmp_path: Path, synthesized):
    root, _ = synthesized
    recordings, supervisions = from_cuts(root / "synth" / "cuts.jsonl.gz")
    outputs = import_data(recordings, supervisions, "target", split="dev", manifest_dir=tmp_path / "m", fbank_dir=tmp_path / "f")
    assert list(outputs) == ["dev"] and outputs["dev"].name == "target_cuts_dev.jsonl.gz"
    assert len(load_manifest(outputs["dev"])) == len(TEXTS)


def test_bad_audio_dir_input(tmp_path: Path, audio_dir: Path):
    transcripts = audio_dir / "text.txt"
    transcripts.write_text(transcripts.read_text() + "utt9 a line for missing audio\n")
    with pytest.raises(UserError, match=r"text\.txt:6: no audio file for 'utt9'"):
        from_audio_dir(audio_dir, transcripts)

    transcripts.write_text("utt0 hello there\n")
    (audio_dir / "b" / "utt0.flac").write_bytes(b"")
    with pytest.raises(UserError, match=r"utt0\.flac is empty"):
        from_audio_dir(audio_dir, transcripts)
    (audio_dir / "b" / "utt0.flac").write_bytes(b"garbage bytes, not audio")
    with pytest.raises(UserError, match=r"utt0\.flac is not readable .*convert it"):
        from_audio_dir(audio_dir, transcripts)

    transcripts.write_text("utt1 ?!\n")
    recordings, supervisions = from_audio_dir(audio_dir, transcripts)
    with pytest.raises(UserError, match="transcript with no words: utt1"):
        import_data(recordings, supervisions, "x", manifest_dir=tmp_path / "m", fbank_dir=tmp_path / "f")
    assert not (tmp_path / "m").exists() and not (tmp_path / "f").exists()


def test_bad_kaldi_input(tmp_path: Path, synthesized):
    _, cuts = synthesized
    wav = cuts[0].recording.sources[0].source
    kaldi = tmp_path / "kaldi"
    kaldi.mkdir()
    (kaldi / "wav.scp").write_text(f"u1 {wav}\n")
    (kaldi / "text").write_text("u1 hello\nu2 orphan transcript\n")
    with pytest.raises(UserError, match="utterance 'u2' has no audio"):
        from_kaldi_dir(kaldi)
    (kaldi / "wav.scp").write_text(f"u1 sox {wav} -t wav - |\n")
    with pytest.raises(UserError, match="command pipes are not supported"):
        from_kaldi_dir(kaldi)
    with pytest.raises(UserError, match="not found"):
        from_kaldi_dir(tmp_path / "nope")


def test_cli_prints_one_line_error_and_fails(tmp_path: Path):
    result = subprocess.run(
        [sys.executable, str(REPO / "local" / "import_own_data.py"), "--audio-dir", str(tmp_path / "missing"), "--transcripts", str(tmp_path / "t.txt")],
        capture_output=True, text=True,
    )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith("error: audio directory")
    assert "Traceback" not in result.stderr


def test_validation_reports_mismatched_ids(synthesized):
    _, cuts = synthesized
    recordings = RecordingSet.from_recordings(c.recording for c in cuts)
    supervisions = SupervisionSet.from_segments(c.supervisions[0] for c in cuts)
    validate_manifests(recordings, supervisions)
    orphan = SupervisionSet.from_segments(list(supervisions) + [dataclasses.replace(supervisions[0], id="x", recording_id="nope")])
    with pytest.raises(UserError, match="transcripts refer to recordings that do not exist: nope"):
        validate_manifests(recordings, orphan)
    with pytest.raises(UserError, match=f"recordings without a transcript: {cuts[0].recording.id}"):
        validate_manifests(recordings, SupervisionSet.from_segments(list(supervisions)[1:]))
    too_long = SupervisionSet.from_segments([dataclasses.replace(s, duration=s.duration + 5.0) for s in supervisions])
    with pytest.raises(UserError, match="lhotse manifest validation failed"):
        validate_manifests(recordings, too_long)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("naïve café résumé", "NAIVE CAFE RESUME"),
        ("123 456 and $5.00 at 3pm", "ONE HUNDRED AND TWENTY THREE FOUR HUNDRED AND FIFTY SIX AND FIVE DOLLARS AT THREE P M"),
        ("It costs £1.01, or €20", "IT COSTS ONE POUND ONE PENNY OR TWENTY EUROS"),
        ("the 21st of May at 10:05", "THE TWENTY FIRST OF MAY AT TEN OH FIVE"),
        ("50% of 3.5 million, 1,000 people", "FIFTY PERCENT OF THREE POINT FIVE MILLION ONE THOUSAND PEOPLE"),
        ("Straße it’s rock & roll", "STRASSE IT'S ROCK AND ROLL"),
    ],
)
def test_normalisation_folds_accents_and_speaks_numbers(text: str, expected: str):
    from local.spoken_text import to_spoken_words

    assert to_spoken_words(text)[0] == expected


def test_import_drops_unspeakable_utterances_and_reports_every_change(tmp_path: Path, audio_dir: Path, caplog):
    (audio_dir / "text.txt").write_text(
        "utt0 naïve café résumé\nutt1 mp3 players are small\nutt2 we meet at 3pm\nutt3 日本 is far away\n"
        "utt4 it costs $5.00\n"
    )
    recordings, supervisions = from_audio_dir(audio_dir, audio_dir / "text.txt")
    with caplog.at_level("INFO"):
        outputs = import_data(recordings, supervisions, "mine", split="train", manifest_dir=tmp_path / "m",
                              fbank_dir=tmp_path / "f", audio_out_dir=tmp_path / "converted")
    texts = {c.supervisions[0].id: c.supervisions[0].text for c in load_manifest(outputs["train"])}
    assert texts == {"utt0": "NAIVE CAFE RESUME", "utt2": "WE MEET AT THREE P M", "utt4": "IT COSTS FIVE DOLLARS"}
    log = caplog.text
    assert "text normalisation: 5 transcripts, 2 dropped" in log
    assert "accents folded: 1 transcripts, e.g. 'naïve café résumé' -> 'NAIVE CAFE RESUME'" in log
    assert "times: 1 transcripts" in log and "currency: 1 transcripts" in log
    assert "dropped, digits inside a word: 1 utterances, e.g. utt1: 'mp3 players are small'" in log
    assert "dropped, characters with no spoken form (日本): 1 utterances" in log


def test_import_with_every_transcript_unspeakable_is_one_clear_error(tmp_path: Path, audio_dir: Path):
    (audio_dir / "text.txt").write_text("utt0 日本\n")
    recordings, supervisions = from_audio_dir(audio_dir, audio_dir / "text.txt")
    with pytest.raises(UserError, match="dropped every transcript .*--keep-text"):
        import_data(recordings, supervisions, "x", manifest_dir=tmp_path / "m", fbank_dir=tmp_path / "f")


def test_duplicate_ids_are_named(tmp_path: Path, audio_dir: Path, synthesized):
    (audio_dir / "text.txt").write_text("utt0 hello there\nutt1 general kenobi\nutt0 hello again\n")
    with pytest.raises(UserError, match=r"text\.txt:3: id 'utt0' appears twice \(first on line 1\)"):
        from_audio_dir(audio_dir, audio_dir / "text.txt")
    _, cuts = synthesized
    recordings = RecordingSet.from_recordings(c.recording for c in cuts)
    segments = [c.supervisions[0] for c in cuts]
    twice = SupervisionSet.from_segments(segments + [dataclasses.replace(segments[1], text="again")])
    with pytest.raises(UserError, match=f"utterance id\\(s\\) used more than once: {segments[1].id};"):
        validate_manifests(recordings, twice)
    kaldi = tmp_path / "kaldi"
    kaldi.mkdir()
    (kaldi / "wav.scp").write_text(f"u1 {cuts[0].recording.sources[0].source}\n")
    (kaldi / "text").write_text("u1 hello\nu1 hello again\n")
    with pytest.raises(UserError, match=r"text:2: id 'u1' appears twice \(first on line 1\)"):
        from_kaldi_dir(kaldi)


def test_too_few_recordings_for_dev_and_test_warn(caplog):
    from local.import_own_data import assign_splits

    with caplog.at_level("WARNING"):
        splits = assign_splits(["a", "b"], "auto", 0.1, 0.1, seed=1)
    assert set(splits.values()) == {"train"}
    assert "only 2 recordings: all go to train and there is no dev or test set" in caplog.text
