"""Text side of the embedded corpus: normalisation, sentence filter, topic split, corpus config."""
import json
from pathlib import Path

import pytest

from local.corpus_config import DEFAULT_SIZES, QUICK_SIZES, load_config
from local.text_corpus import (
    FORTUNES_DIR,
    build_text_pools,
    fortune_entries,
    is_speakable,
    normalize_text,
    sentences_from_file,
)
from zipformer.utils import UserError

needs_fortunes = pytest.mark.skipif(
    not (FORTUNES_DIR / "wisdom").is_file(), reason="Debian fortunes not installed (run ./local/setup.sh)"
)


def test_normalize_text_is_librispeech_style():
    assert normalize_text("Don't panic -- it's only a well-known test!") == "DON'T PANIC IT'S ONLY A WELL KNOWN TEST"
    assert normalize_text("'Quoted,' she said.") == "QUOTED SHE SAID"
    assert normalize_text("... !!") == ""


@pytest.mark.parametrize(
    "sentence, expected",
    [
        ("The sun is shining today.", True),
        ("I can't believe it's not butter.", True),
        ("Mr. Smith went to Washington today.", False),  # abbreviation
        ("The IBM machine is very big.", False),  # acronym
        ("There were 42 reasons for it.", False),  # digit
        ("Send mail to root@localhost now please.", False),  # symbol
        ("Too short.", False),
        ("Plan x is the best plan ever.", False),  # stray single letter
    ],
)
def test_is_speakable(sentence, expected):
    assert is_speakable(sentence) is expected


def test_fortune_entries_drop_attribution_and_overstrike(tmp_path: Path):
    path = tmp_path / "topic"
    path.write_text("A banker lends you his umbrella\nwhen the sun shines.\n\t\t-- Mark Twain\n%\nB_\bo_\bl_\bd words are here now.\n")
    assert list(fortune_entries(path)) == [
        "A banker lends you his umbrella when the sun shines.",
        "Bold words are here now.",
    ]
    sentences = sentences_from_file(path)
    assert [s.text for s in sentences] == ["A BANKER LENDS YOU HIS UMBRELLA WHEN THE SUN SHINES", "BOLD WORDS ARE HERE NOW"]


@needs_fortunes
def test_text_pools_are_disjoint_and_deterministic():
    topics = {"source": ["wisdom", "love"], "target": ["computers", "science"]}
    reserve = {"source": {"dev": 50, "test": 60}, "target": {"dev": 40, "test": 30}}
    pools = build_text_pools(topics, reserve, seed=3)
    again = build_text_pools(topics, reserve, seed=3)
    assert pools == again
    seen = {}
    for domain, splits in pools.items():
        assert len(splits["dev"]) == reserve[domain]["dev"] and len(splits["test"]) == reserve[domain]["test"]
        assert len(splits["train"]) > 300
        for split, sentences in splits.items():
            for s in sentences:
                assert s.text not in seen, f"{s.text} in {seen.get(s.text)} and {domain}/{split}"
                seen[s.text] = (domain, split)
                assert s.text == s.text.upper() and 4 <= len(s.text.split()) <= 20
    other_seed = build_text_pools(topics, reserve, seed=4)
    assert other_seed["source"]["dev"] != pools["source"]["dev"]


def test_missing_topic_is_a_clear_error(tmp_path: Path):
    with pytest.raises(UserError, match="fortunes file .*no-such-topic not found.*setup.sh"):
        build_text_pools({"source": ["no-such-topic"]}, {"source": {"dev": 1, "test": 1}}, seed=0, fortunes_dir=tmp_path)


def test_config_presets_and_overrides(tmp_path: Path):
    assert load_config().source.sizes == DEFAULT_SIZES["source"]
    assert load_config(quick=True).target.sizes == QUICK_SIZES["target"]
    override = tmp_path / "shift.json"
    override.write_text(json.dumps({"target": {"channel": {"snr_db": [25, 35], "mu_law": True}, "sizes": {"train": 7}}}))
    config = load_config(config_file=override, sizes={"source": {"dev": 5, "test": None}})
    assert config.target.channel.snr_db == (25, 35) and config.target.channel.mu_law
    assert config.target.sizes == {**DEFAULT_SIZES["target"], "train": 7}
    assert config.source.sizes["dev"] == 5 and config.source.sizes["test"] == DEFAULT_SIZES["source"]["test"]
    assert load_config().target.channel.mu_law is False  # defaults are not mutated


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"target": {"chanel": {}}}, "unknown key 'config.target.chanel'"),
        ({"source": {"sizes": {"dev": 100000}}}, "only 400 sentences are reserved"),
        ({"target": {"engines": [{"engine": "flite", "voices": ["slt"], "share": 0.5}]}}, "shares must add up to 1"),
        ({"target": {"engines": [{"engine": "say", "voices": ["x"], "share": 1.0}]}}, "unknown engine 'say'"),
        ({"target": {"engines": [{"engine": "flite", "voice": ["slt"], "share": 1.0}]}}, "bad entry in 'config.target.engines'"),
    ],
)
def test_bad_config_is_a_clear_error(tmp_path: Path, overrides, message):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(overrides))
    with pytest.raises(UserError, match=message):
        load_config(config_file=path)
