"""LibriSpeech path on a tiny fake corpus laid out like LibriSpeech (flac + .trans.txt)."""
import gzip
import shutil
from pathlib import Path

import pytest
from lhotse import load_manifest

from local.features import compute_fbank_for_manifests
from local.prepare_lang import read_manifest_texts, train_bpe
from local.prepare_librispeech import SHUFFLED_TRAIN, prepare_manifests, shuffle_train_cuts
from local.synth.synthesize_corpus import synthesize_utterances
from zipformer.core.errors import UserError

SENTENCES = {
    "train-clean-100": ["The rain in Spain falls mainly on the plain.", "A stitch in time saves nine stitches.", "All that glitters is not gold, my friend."],
    "dev-clean": ["Better late than never, they always say."],
    "test-clean": ["Actions speak louder than words, or so I hear."],
}


@pytest.fixture(scope="module")
def audio_pool(tmp_path_factory):
    """Synthesized flac files reused by every fake corpus of this module."""
    texts = [t for part in SENTENCES.values() for t in part]
    cuts = synthesize_utterances(texts, tmp_path_factory.mktemp("pool"), compute_features=False)
    return [Path(c.recording.sources[0].source) for c in cuts], [c.supervisions[0].text for c in cuts]


def make_fake_librispeech(root: Path, audio_pool) -> Path:
    """LibriSpeech/{part}/{spk}/{chapter}/{spk}-{chapter}-{NNNN}.flac + {spk}-{chapter}.trans.txt."""
    paths, texts = audio_pool
    corpus = root / "LibriSpeech"
    index = 0
    for part_no, (part, sentences) in enumerate(SENTENCES.items()):
        speaker, chapter = 100 + part_no, 2000 + part_no
        chapter_dir = corpus / part / str(speaker) / str(chapter)
        chapter_dir.mkdir(parents=True)
        lines = []
        for utt_no in range(len(sentences)):
            utt_id = f"{speaker}-{chapter}-{utt_no:04d}"
            shutil.copy(paths[index], chapter_dir / f"{utt_id}.flac")
            lines.append(f"{utt_id} {texts[index]}\n")
            index += 1
        (chapter_dir / f"{speaker}-{chapter}.trans.txt").write_text("".join(lines))
    return corpus


def test_manifests_features_shuffle_and_bpe(tmp_path: Path, audio_pool):
    corpus = make_fake_librispeech(tmp_path, audio_pool)
    manifest_dir, fbank_dir = tmp_path / "manifests", tmp_path / "fbank"
    parts = prepare_manifests(corpus, manifest_dir, ["auto"])
    assert sorted(parts) == sorted(SENTENCES)
    for part, sentences in SENTENCES.items():
        sups = load_manifest(manifest_dir / f"librispeech_supervisions_{part}.jsonl.gz")
        recs = load_manifest(manifest_dir / f"librispeech_recordings_{part}.jsonl.gz")
        assert len(sups) == len(recs) == len(sentences)
        assert all(s.text == s.text.upper() and s.speaker for s in sups)
        cuts = compute_fbank_for_manifests(
            manifest_dir / f"librispeech_recordings_{part}.jsonl.gz",
            manifest_dir / f"librispeech_supervisions_{part}.jsonl.gz",
            fbank_dir / f"librispeech_cuts_{part}.jsonl.gz",
            fbank_dir / f"librispeech_feats_{part}",
            perturb_speed=part.startswith("train"),
        )
        factor = 3 if part.startswith("train") else 1
        assert len(cuts) == factor * len(sentences)
        for cut in cuts:
            assert cut.load_features().shape == (cut.num_frames, 80)
    train = load_manifest(fbank_dir / "librispeech_cuts_train-clean-100.jsonl.gz")
    by_id = {c.id: c for c in train}
    originals = [c for c in train if "_sp" not in c.id]
    for cut in originals:
        slow, fast = by_id[f"{cut.id}_sp0.9"], by_id[f"{cut.id}_sp1.1"]
        assert slow.duration == pytest.approx(cut.duration / 0.9, abs=0.01)
        assert fast.duration == pytest.approx(cut.duration / 1.1, abs=0.01)

    shuffled = shuffle_train_cuts(fbank_dir, seed=1)
    assert shuffled.name == SHUFFLED_TRAIN
    with gzip.open(shuffled, "rt") as f:
        shuffled_ids = [line for line in f]
    assert len(shuffled_ids) == len(train)
    assert sorted(c.id for c in load_manifest(shuffled)) == sorted(by_id)

    texts = read_manifest_texts([manifest_dir / "librispeech_supervisions_train-clean-100.jsonl.gz"])
    assert len(texts) == 3
    train_bpe(texts * 10, tmp_path / "lang", vocab_size=30)
    assert (tmp_path / "lang" / "tokens.txt").read_text().splitlines()[:3] == ["<blk> 0", "<sos/eos> 1", "<unk> 2"]

    # A second run finds the manifests and skips the parts.
    before = (manifest_dir / "librispeech_recordings_dev-clean.jsonl.gz").stat().st_mtime_ns
    prepare_manifests(corpus, manifest_dir, ["auto"])
    assert (manifest_dir / "librispeech_recordings_dev-clean.jsonl.gz").stat().st_mtime_ns == before


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda flac, trans: flac.unlink(), r"audio .*100-2000-0001\.flac is missing"),
        (lambda flac, trans: flac.write_bytes(b""), r"100-2000-0001\.flac is empty"),
        (lambda flac, trans: trans.write_text(trans.read_text() + "100-2000-0009\n"), "'100-2000-0009' has no words"),
    ],
)
def test_bad_corpus_is_reported_before_any_manifest(tmp_path: Path, audio_pool, damage, message):
    corpus = make_fake_librispeech(tmp_path, audio_pool)
    chapter = corpus / "train-clean-100" / "100" / "2000"
    damage(chapter / "100-2000-0001.flac", chapter / "100-2000.trans.txt")
    manifest_dir = tmp_path / "manifests"
    with pytest.raises(UserError, match=message):
        prepare_manifests(corpus, manifest_dir, ["train-clean-100"])
    assert not list(manifest_dir.glob("*train-clean-100*"))


def test_unreadable_audio_is_caught_by_validation(tmp_path: Path, audio_pool):
    corpus = make_fake_librispeech(tmp_path, audio_pool)
    (corpus / "dev-clean" / "101" / "2001" / "101-2001-0000.flac").write_bytes(b"not really a flac file")
    manifest_dir = tmp_path / "manifests"
    with pytest.raises(UserError, match=r"101-2001-0000\.flac is not readable"):
        prepare_manifests(corpus, manifest_dir, ["dev-clean"])
    assert not (manifest_dir / "librispeech_recordings_dev-clean.jsonl.gz").exists()


def test_missing_corpus_and_part_are_clear_errors(tmp_path: Path):
    with pytest.raises(UserError, match="LibriSpeech directory .* not found: run the download stage"):
        prepare_manifests(tmp_path / "nope", tmp_path / "m", ["auto"])
    (tmp_path / "LibriSpeech").mkdir()
    with pytest.raises(UserError, match="no LibriSpeech part"):
        prepare_manifests(tmp_path / "LibriSpeech", tmp_path / "m", ["auto"])
    with pytest.raises(UserError, match="part .*dev-other not found"):
        prepare_manifests(tmp_path / "LibriSpeech", tmp_path / "m", ["dev-other"])
    with pytest.raises(UserError, match="no librispeech_cuts_train"):
        shuffle_train_cuts(tmp_path)
