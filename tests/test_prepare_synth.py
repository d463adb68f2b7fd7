"""Synthesis of the embedded corpus: audio, channel, manifests, features, splits, stage skipping, the german domain."""
import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from lhotse import load_manifest

from local.synth.channel import render_waveform
from local.synth.corpus_config import ALL_DOMAINS, DOMAINS, SPLITS, EngineVoices, RoomConfig, load_config
from local.synth.corpus_plan import RenderSpec, build_speakers
from local.synth.synthesize_corpus import (
    manifest_paths,
    prepare_audio,
    prepare_text,
    synthesize_utterances,
)
from local.synth.tts import synthesize
from local.text_corpus import FORTUNES_DIR
from zipformer.core.errors import UserError

TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "She sells sea shells by the sea shore, they say.",
    "I don't think the computer will answer today.",
    "Every good boy deserves a piece of fudge.",
]


def high_band_fraction(audio: np.ndarray, sample_rate: int = 16000, cutoff_hz: float = 4000.0) -> float:
    """Share of the signal's energy above `cutoff_hz`."""
    power = np.abs(np.fft.rfft(audio)) ** 2
    freqs = np.fft.rfftfreq(len(audio), 1.0 / sample_rate)
    return float(power[freqs > cutoff_hz].sum() / power.sum())


@pytest.fixture(scope="module")
def tiny_sets(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    source = synthesize_utterances(TEXTS, root / "source", domain="source", seed=7)
    target = synthesize_utterances(TEXTS, root / "target", domain="target", seed=7)
    target_b = synthesize_utterances(TEXTS, root / "target_b", domain="target_b", seed=7)
    return root, source, target, target_b


def test_cuts_have_features_text_and_16k_audio(tiny_sets):
    root, source, target, target_b = tiny_sets
    for cuts, domain in ((source, "source"), (target, "target"), (target_b, "target_b")):
        assert len(cuts) == len(TEXTS)
        for cut, text in zip(cuts, TEXTS):
            assert cut.supervisions[0].text == " ".join(
                w.strip(".,").upper() for w in text.split()
            )
            assert cut.supervisions[0].custom["domain"] == domain
            assert cut.recording.sampling_rate == 16000 and cut.recording.num_channels == 1
            features = cut.load_features()
            assert features.shape == (cut.num_frames, 80)
            assert cut.num_frames == round(cut.duration / 0.01)
            assert np.isfinite(features).all()
    assert (root / "source" / "cuts.jsonl.gz").is_file()
    reloaded = load_manifest(root / "target" / "cuts.jsonl.gz")
    assert [c.id for c in reloaded] == [c.id for c in target]


def test_target_is_faster_and_on_the_telephone_line(tiny_sets):
    _, source, target, _ = tiny_sets
    # Same sentences, shorter audio.
    assert sum(c.duration for c in target) < sum(c.duration for c in source)
    for cut in target:
        custom = cut.supervisions[0].custom
        assert custom["telephone"] is True and custom["snr_db"] is None and custom["reverb"] is False
        assert high_band_fraction(cut.load_audio()[0]) < 1e-4  # nothing survives the 8 kHz line
    assert np.mean([high_band_fraction(c.load_audio()[0]) for c in source]) > 0.005  # fricatives reach above 4 kHz


def test_target_b_is_in_the_fixed_room_with_its_full_band(tiny_sets):
    _, _, _, target_b = tiny_sets
    for cut in target_b:
        custom = cut.supervisions[0].custom
        assert custom["room"] is True and custom["telephone"] is False and custom["reverb"] is False
        assert custom["snr_db"] is None and cut.supervisions[0].speaker.startswith("TB")
    assert np.mean([high_band_fraction(c.load_audio()[0]) for c in target_b]) > 0.001  # no telephone band


def test_noisy_reverberant_channel_from_a_config_file(tmp_path: Path):
    config_file = tmp_path / "noisy.json"
    config_file.write_text('{"target": {"channel": {"telephone": false, "noise_prob": 1.0, "reverb_prob": 1.0}}}')
    config = load_config(seed=7, config_file=config_file)
    target = synthesize_utterances(
        TEXTS[:2], tmp_path / "target", domain="target", config=config, compute_features=False
    )
    for cut in target:
        custom = cut.supervisions[0].custom
        assert custom["telephone"] is False and custom["reverb"] is True
        assert 15.0 <= custom["snr_db"] <= 30.0
        assert high_band_fraction(cut.load_audio()[0]) > 1e-3  # white/pink noise fills the high band


def _render_room(tmp_path: Path, audio: np.ndarray, room) -> np.ndarray:
    wav = tmp_path / "in.wav"
    sf.write(wav, audio, 16000, subtype="FLOAT")
    spec = RenderSpec(timbre=1.0, reverb=None, room=room, noise=None, telephone=False, band_hz=(300, 3400),
                      mu_law=False, level_dbfs=-20.0, seed=0)
    return render_waveform(wav, spec)


def test_fixed_room_adds_its_reverberant_tail(tmp_path: Path):
    click = np.zeros(16000, dtype=np.float32)
    click[800:960] = np.random.default_rng(0).standard_normal(160).astype(np.float32)  # 10 ms at 50 ms
    dry, wet = _render_room(tmp_path, click, None), _render_room(tmp_path, click, RoomConfig())

    def tail_share(audio):  # energy from 100 ms after the click to 500 ms, against all of it
        return float(np.sum(audio[2560:8000] ** 2) / np.sum(audio**2))

    assert tail_share(dry) < 1e-6 and tail_share(wet) > 0.02
    bigger = _render_room(tmp_path, click, RoomConfig(reverberance=90.0))
    assert tail_share(bigger) > tail_share(wet)


def test_fixed_room_applies_its_equalizer(tmp_path: Path):
    noise = np.random.default_rng(1).standard_normal(32000).astype(np.float32) * 0.1
    freqs = np.fft.rfftfreq(len(noise), 1.0 / 16000)

    def band_db(audio, low, high):
        power = np.abs(np.fft.rfft(audio)) ** 2
        return 10 * np.log10(power[(freqs >= low) & (freqs < high)].mean())

    def notch_depth(audio):  # the 2 kHz band against 400-800 Hz, dB
        return band_db(audio, 1900, 2100) - band_db(audio, 400, 800)

    flat = _render_room(tmp_path, noise, RoomConfig())
    cut = _render_room(tmp_path, noise, RoomConfig(equalizer=[(2000.0, 0.5, -20.0)]))
    assert notch_depth(flat) - notch_depth(cut) > 15.0


def test_synthesis_is_deterministic(tiny_sets, tmp_path: Path):
    source = tiny_sets[1]
    again = synthesize_utterances(TEXTS[:2], tmp_path / "again", domain="source", seed=7, compute_features=False)
    for first, second in zip(source, again):
        assert first.supervisions[0].speaker == second.supervisions[0].speaker
        np.testing.assert_array_equal(first.load_audio(), second.load_audio())
    other = synthesize_utterances(TEXTS[:2], tmp_path / "other", domain="source", seed=8, compute_features=False)
    assert any(
        a.load_audio().shape != b.load_audio().shape or not np.array_equal(a.load_audio(), b.load_audio())
        for a, b in zip(source, other)
    )


def test_heldout_speakers_are_disjoint_from_train():
    config = load_config(seed=1)
    ids_by_domain = {}
    for domain in DOMAINS:
        speakers = build_speakers(domain, config.domain(domain), seed=1)
        ids_by_domain[domain] = {s.id for split in SPLITS for s in speakers[split]}
        ids = {split: {s.id for s in speakers[split]} for split in SPLITS}
        voices = {split: {(s.engine, s.voice, s.pitch, s.rate, s.timbre) for s in speakers[split]} for split in SPLITS}
        assert ids["dev"] and ids["test"] and ids["train"]
        assert not ids["train"] & ids["dev"] and not ids["train"] & ids["test"] and not ids["dev"] & ids["test"]
        assert not voices["train"] & (voices["dev"] | voices["test"])
        # espeak-ng has one pseudo-speaker per voice: held-out speakers are unseen voices.
        espeak = {split: {s.voice for s in speakers[split] if s.engine == "espeak-ng"} for split in SPLITS}
        assert not espeak["train"] & (espeak["dev"] | espeak["test"])
    assert not ids_by_domain["target"] & ids_by_domain["target_b"]  # "T..." and "TB..."
    assert not ids_by_domain["source"] & (ids_by_domain["target"] | ids_by_domain["target_b"])


def test_festival_voices_and_mu_law_channel(tmp_path: Path):
    config = load_config(seed=2)
    config.target.engines = [EngineVoices("festival", ["kal_diphone", "cmu_us_slt_arctic_hts"], share=1.0, heldout_dev=0, heldout_test=0)]
    config.target.channel.telephone = True  # mu-law companding happens on the 8 kHz telephone line
    config.target.channel.mu_law = True
    cuts = synthesize_utterances(TEXTS[:2], tmp_path, domain="target", config=config, compute_features=False)
    for cut in cuts:
        assert cut.supervisions[0].custom["engine"] == "festival"
        audio = cut.load_audio()[0]
        assert cut.duration > 1.0 and np.abs(audio).max() > 0.01
        assert high_band_fraction(audio) < 1e-3


def test_text_without_words_is_rejected(tmp_path: Path):
    with pytest.raises(UserError, match="has no words"):
        synthesize_utterances(["?! ..."], tmp_path, compute_features=False)


def test_missing_tts_engine_names_the_tool_and_the_fix(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(UserError, match=r"'(espeak-ng|flite|sox)' not found: run ./local/setup.sh"):
        synthesize_utterances(TEXTS[:1], tmp_path / "out", compute_features=False)


def test_unknown_voice_fails_loudly(tmp_path: Path):
    with pytest.raises(UserError, match="espeak-ng voice 'xx-nonexistent' produced no audio"):
        synthesize("espeak-ng", "xx-nonexistent", 50, 1.0, "hello there", tmp_path / "x.wav")
    from local.synth.tts import check_tools

    with pytest.raises(UserError, match="flite has no voice 'nosuch'"):
        check_tools({"flite": {"slt", "nosuch"}})


@pytest.mark.skipif(not (FORTUNES_DIR / "wisdom").is_file(), reason="Debian fortunes not installed")
def test_corpus_stages_write_disjoint_splits_and_skip_when_done(tmp_path: Path):
    config = load_config(seed=5, sizes={d: {s: 3 for s in SPLITS} for d in DOMAINS})
    config.source.topics, config.target.topics, config.target_b.topics = ["wisdom"], ["computers"], ["perl"]
    for domain in (config.source, config.target, config.target_b):
        domain.text_reserve = {"dev": 10, "test": 10}
    text_dir, audio_dir, manifest_dir = tmp_path / "text", tmp_path / "audio", tmp_path / "manifests"
    prepare_text(config, text_dir)
    prepare_audio(config, text_dir, audio_dir, manifest_dir, num_jobs=1)

    texts, speakers = {}, {}
    for domain in DOMAINS:
        for split in SPLITS:
            rec_path, sup_path = manifest_paths(manifest_dir, domain, split)
            recordings, supervisions = load_manifest(rec_path), load_manifest(sup_path)
            assert len(recordings) == len(supervisions) == 3
            for rec in recordings:
                assert Path(rec.sources[0].source).is_file() and rec.sampling_rate == 16000
            texts[(domain, split)] = {s.text for s in supervisions}
            speakers[(domain, split)] = {s.speaker for s in supervisions}
    keys = list(texts)
    for i, a in enumerate(keys):
        for b in keys[i + 1 :]:
            if {a, b} != {("target", "train"), ("target_b", "train")}:  # target_b also trains on target's text
                assert not texts[a] & texts[b], f"{a} and {b} share a sentence"
        if a[1] != "train":
            assert not speakers[a] & speakers[(a[0], "train")]

    stamp_time = os.stat(manifest_paths(manifest_dir, "source", "train")[0]).st_mtime_ns
    prepare_audio(config, text_dir, audio_dir, manifest_dir, num_jobs=1)  # same settings: skipped
    assert os.stat(manifest_paths(manifest_dir, "source", "train")[0]).st_mtime_ns == stamp_time

    config.target.sizes["train"] = 4
    with pytest.raises(UserError, match="target train: .* made with other settings"):
        prepare_audio(config, text_dir, audio_dir, manifest_dir, num_jobs=1)
    assert not list(manifest_dir.glob(".tmp-*"))

    # Skipping a split (size 0) leaves the others valid: nothing to do.
    config.target.sizes["train"], config.source.sizes["train"] = 3, 0
    prepare_audio(config, text_dir, audio_dir, manifest_dir, num_jobs=1)
    assert os.stat(manifest_paths(manifest_dir, "source", "train")[0]).st_mtime_ns == stamp_time


GERMAN_TEXTS = ["Große Äpfel fallen heute über den Zaun.", "Sie wurde gestern 90 Jahre alt."]


def test_german_voices_read_german_transcripts(tmp_path: Path):
    cuts = synthesize_utterances(GERMAN_TEXTS, tmp_path, domain="german", seed=3, compute_features=False)
    assert [c.supervisions[0].text for c in cuts] == [
        "GROßE ÄPFEL FALLEN HEUTE ÜBER DEN ZAUN", "SIE WURDE GESTERN NEUNZIG JAHRE ALT"
    ]
    for cut in cuts:
        sup = cut.supervisions[0]
        assert sup.language == "German" and sup.custom["domain"] == "german" and sup.speaker.startswith("G")
        assert sup.custom["voice"].startswith("de+") and not sup.custom["telephone"] and not sup.custom["room"]
        assert cut.duration > 1.0 and cut.recording.sampling_rate == 16000
    english = synthesize_utterances(TEXTS[:1], tmp_path / "en", seed=3, compute_features=False)
    assert english[0].supervisions[0].language == "English"


def test_german_speakers_are_held_out_and_their_own():
    config = load_config(seed=1, domains=ALL_DOMAINS)
    speakers = build_speakers("german", config.german, seed=1)
    voices = {split: {s.voice for s in speakers[split]} for split in SPLITS}
    assert len(voices["dev"]) == len(voices["test"]) == 3 and len(voices["train"]) == 14
    assert not voices["train"] & (voices["dev"] | voices["test"]) and not voices["dev"] & voices["test"]
    english = {s.id for d in DOMAINS for split in SPLITS for s in build_speakers(d, config.domain(d), seed=1)[split]}
    assert not english & {s.id for split in SPLITS for s in speakers[split]}


@pytest.mark.skipif(not (FORTUNES_DIR / "de" / "unfug").is_file(), reason="Debian fortunes-de not installed")
def test_german_corpus_stages_write_disjoint_splits_only_when_asked_for(tmp_path: Path):
    english_off = {d: {s: 0 for s in SPLITS} for d in DOMAINS}
    config = load_config(seed=5, sizes={**english_off, "german": {"train": 3, "dev": 2, "test": 2}}, domains=ALL_DOMAINS)
    config.source.topics, config.target.topics, config.target_b.topics = ["wisdom"], ["computers"], ["perl"]
    config.german.topics = ["de/unfug", "de/sprueche"]
    for name in ALL_DOMAINS:
        config.domain(name).text_reserve = {"dev": 10, "test": 10}
    text_dir, audio_dir, manifest_dir = tmp_path / "text", tmp_path / "audio", tmp_path / "manifests"
    prepare_text(config, text_dir)
    prepare_audio(config, text_dir, audio_dir, manifest_dir, num_jobs=1)
    texts, speakers = {}, {}
    for split in SPLITS:
        _, sup_path = manifest_paths(manifest_dir, "german", split)
        supervisions = load_manifest(sup_path)
        assert len(supervisions) == (3 if split == "train" else 2)
        assert all(s.language == "German" for s in supervisions)
        texts[split], speakers[split] = {s.text for s in supervisions}, {s.speaker for s in supervisions}
    assert not texts["train"] & texts["dev"] and not texts["train"] & texts["test"] and not texts["dev"] & texts["test"]
    assert not speakers["train"] & (speakers["dev"] | speakers["test"])
    assert not list(manifest_dir.glob("source_*"))  # English sizes 0: nothing synthesized
    # Without the german domain the text stage writes the English partitions only.
    english_only = load_config(seed=5)
    english_only.source.topics, english_only.target.topics, english_only.target_b.topics = ["wisdom"], ["computers"], ["perl"]
    for name in DOMAINS:
        english_only.domain(name).text_reserve = {"dev": 10, "test": 10}
    prepare_text(english_only, tmp_path / "english")
    assert sorted(p.name for p in (tmp_path / "english").glob("*.tsv")) == sorted(
        f"{d}_{s}.tsv" for d in DOMAINS for s in SPLITS
    )
