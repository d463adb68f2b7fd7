"""Text side of the embedded corpus: normalisation (English, German), sentence filter, topic split, corpus config."""
import dataclasses
import hashlib
import json
import logging
from pathlib import Path

import pytest

from local.languages import ENGLISH, GERMAN, spell_numbers
from local.synth.corpus_config import (
    ALL_DOMAINS,
    DEFAULT_SIZES,
    DOMAINS,
    QUICK_SIZES,
    RoomConfig,
    domain_language,
    load_config,
)
from local.synth.synthesize_corpus import prepare_text, read_text_pools, split_stamp, text_stamp
from local.text_corpus import (
    FORTUNES_DIR,
    build_text_pools,
    fortune_entries,
    is_speakable,
    normalize_text,
    read_sentences,
    rejection,
    sentences_from_file,
    spoken_form,
)
from zipformer.core.errors import UserError

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


@needs_fortunes
def test_a_domain_with_extra_train_text_shares_only_train_sentences():
    topics = {"source": ["wisdom"], "target": ["computers"], "target_b": ["perl"]}
    reserve = {d: {"dev": 20, "test": 20} for d in topics}
    pools = build_text_pools(topics, reserve, seed=3, extra_train_from={"target_b": "target"})
    alone = build_text_pools({d: topics[d] for d in ("source", "target")}, reserve, seed=3)
    assert {d: pools[d] for d in alone} == alone  # a domain added at the end changes no earlier partition
    texts = {(d, s): {x.text for x in pools[d][s]} for d in pools for s in ("train", "dev", "test")}
    assert texts[("target", "train")] <= texts[("target_b", "train")]
    own_train = texts[("target_b", "train")] - texts[("target", "train")]
    assert own_train and all(len(texts[k]) == len(pools[k[0]][k[1]]) for k in texts)
    for a in texts:
        for b in texts:
            if a < b and {a, b} != {("target", "train"), ("target_b", "train")}:
                assert not texts[a] & texts[b], f"{a} and {b} share a sentence"


def test_missing_topic_is_a_clear_error(tmp_path: Path):
    with pytest.raises(UserError, match="fortunes file .*no-such-topic not found.*setup.sh"):
        build_text_pools({"source": ["no-such-topic"]}, {"source": {"dev": 1, "test": 1}}, seed=0, fortunes_dir=tmp_path)


def test_config_presets_and_overrides(tmp_path: Path):
    assert load_config().source.sizes == DEFAULT_SIZES["source"]
    assert load_config(quick=True).target.sizes == QUICK_SIZES["target"]
    assert load_config(quick=True).target_b.sizes == QUICK_SIZES["target_b"]
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
        ({"target_b": {"channel": {"room": {"reverb": 50}}}}, "unknown key 'config.target_b.channel.room.reverb'"),
        ({"target": {"extra_train_text_from": "target_b"}}, "'target_b' is not a domain before target"),
    ],
)
def test_bad_config_is_a_clear_error(tmp_path: Path, overrides, message):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(overrides))
    with pytest.raises(UserError, match=message):
        load_config(config_file=path)


def test_target_b_is_a_third_domain_with_its_own_topics_and_a_fixed_room(tmp_path: Path):
    config = load_config()
    assert DOMAINS == ("source", "target", "target_b")
    topics = {name: set(config.domain(name).topics) for name in DOMAINS}
    assert not topics["target_b"] & (topics["source"] | topics["target"])
    assert config.target_b.sizes == DEFAULT_SIZES["target_b"] and config.target_b.extra_train_text_from == "target"
    channel = config.target_b.channel
    assert channel.room is not None and not channel.telephone and channel.reverb_prob == channel.noise_prob == 0.0
    assert config.source.channel.room is None and config.target.channel.room is None
    override = tmp_path / "room.json"
    default_room = channel.room
    override.write_text(json.dumps({"target_b": {"channel": {"room": {"reverberance": 35, "equalizer": [[300, 1, 6]]}}},
                                    "target": {"channel": {"room": {"room_scale": 30}}}}))
    config = load_config(config_file=override)
    assert config.target_b.channel.room == dataclasses.replace(default_room, reverberance=35, equalizer=[[300, 1, 6]])
    assert config.target.channel.room == RoomConfig(room_scale=30)
    assert load_config().target_b.channel.room == default_room  # defaults are not mutated
    override.write_text(json.dumps({"target_b": {"channel": {"room": None}}}))
    assert load_config(config_file=override).target_b.channel.room is None


# sha256 of the text partitions and synthesis stamps of the first two domains, taken before
# target_b existed: the shipped bpe.model was trained on source_train.tsv, and corpora synthesized
# before must stay valid (no "made with other settings" error).
TEXT_SHA256 = {
    "source_train": "0fc5e68100938c6a6ef9cfaf457116a09dc891897a70f7be0faacd9556066dec",
    "source_dev": "895a4237777905787b4d607e3ff920393ab5e949f27161cf8806dbb16bc2eaa7",
    "source_test": "ab19ba88ebb29f09b0883d5331d301b9785fb2d3d6322077f833d01d549531e4",
    "target_train": "a8370a37ecf78985f5d35d98b39ab3d2b4275b418168fe59699865660e83d2f0",
    "target_dev": "07df2b26d63d8fad4e383ce00548c8497e8cb9e69c3d93e2426f4cd9694925c7",
    "target_test": "a7fffc6523cc843397d3aa5922f6ef7e444df708231ed0ad76406a36afcc6d95",
}
STAMP_SHA256 = {
    "source_train": "2f9b37c117605d15b258705b6672b71cedfb85bb60c817531e46b836a247c058",
    "source_dev": "5b04e7bcc9ffc638f6cf99ac486dfd4cf831a39afa7a8f1df7216f9f011f5f30",
    "source_test": "a9d0fd375699ae860155620828225e8e50699f6bdb3ff218a93f942fee0ae337",
    "target_train": "579b106c7c59afc60ad3c895b168ab1bb7638d6927793b1220be54cd5c638c1e",
    "target_dev": "a2fa1d3a355747069d541878c6f3a5c8ca0d04e7eb20467a07d678872feaab95",
    "target_test": "7988e6cc9eab39e6bc99db4a65cdd77d0f33ab8c4fc6bbaf7b4f2c2669ff7067",
}
QUICK_STAMP_SHA256 = {
    "source_train": "91304c263e492abb81f6bfe34303ee328b3a15f0b177efe625a74a23f6273264",
    "source_dev": "f8badaefd8c4ff541b0a25160f7351764c522ff7a56d3d102a40ff6820ff9d24",
    "source_test": "8b510f76a6fd839dd878ceab9c7eb85d6488cbacd9b47e4d5c28e5973d59d6b9",
    "target_train": "085a8b422af2afb4141f0bf08f7db6c7f18e2bf074e23dc6f83429d95730ddcd",
    "target_dev": "73fe6c972749fd90f91a9ca5f097ee822deb8af0efa38f5fffca1adc15ba24a7",
    "target_test": "ff363a72feac645172f995e83475eac9f074423b6e9957f66a98f8ec56d8082c",
}


@needs_fortunes
def test_source_and_target_text_and_stamps_are_unchanged_by_target_b(tmp_path: Path):
    config = load_config(seed=42)
    prepare_text(config, tmp_path)
    pools = read_text_pools(tmp_path)
    assert (tmp_path / "target_b_dev.tsv").is_file()
    for name, expected in TEXT_SHA256.items():
        assert hashlib.sha256((tmp_path / f"{name}.tsv").read_bytes()).hexdigest() == expected, name
    for quick, stamps in ((False, STAMP_SHA256), (True, QUICK_STAMP_SHA256)):
        config = load_config(seed=42, quick=quick)
        for name, expected in stamps.items():
            domain, split = name.split("_")
            stamp = split_stamp(config, domain, split, pools[domain][split][: config.domain(domain).sizes[split]])
            assert hashlib.sha256(stamp.encode()).hexdigest() == expected, (quick, name)


needs_german_fortunes = pytest.mark.skipif(
    not (FORTUNES_DIR / "de" / "zitate").is_file(), reason="Debian fortunes-de not installed (run ./local/setup.sh)"
)


def test_german_transcripts_keep_their_letters():
    assert normalize_text("Große Äpfel fallen über Öl, geht's?", GERMAN) == "GROßE ÄPFEL FALLEN ÜBER ÖL GEHT'S"
    assert GERMAN.upper("straße") == "STRAßE"  # ß has no capital in use: not "STRASSE"
    assert normalize_text("Große Äpfel") == "GRO E PFEL"  # English keeps a-z only


@pytest.mark.parametrize(
    "text, spoken",
    [
        ("Er wurde 90.", "Er wurde neunzig."),
        ("Wir hatten 70.000 Abgänge.", "Wir hatten siebzigtausend Abgänge."),  # "." groups thousands
        ("Bei 0,5 Quadratkilometern.", "Bei null Komma fünf Quadratkilometern."),
        ("Sie standen bis 1822 auf dem Index.", "Sie standen bis achtzehnhundertzweiundzwanzig auf dem Index."),
        ("Zähl 3, 4 und 5!", "Zähl drei, vier und fünf!"),
        ("Er kam am 3. Mai.", "Er kam am 3. Mai."),  # an ordinal: left as digits, the sentence is dropped
        ("Das kostet 5% mehr.", "Das kostet 5% mehr."),
        ("Um 20:15 Uhr.", "Um 20:15 Uhr."),
        ("Agent 007 kommt.", "Agent 007 kommt."),
    ],
)
def test_german_numbers_are_read_in_german(text, spoken):
    assert spoken_form(text, GERMAN) == spoken
    assert spell_numbers(text, ENGLISH) == text  # English keeps its digits (and drops the sentence)


@pytest.mark.parametrize(
    "sentence, reason",
    [
        ("Die Vernunft über alles stellen ist töricht.", None),
        ("Sie wurde heute 90 Jahre alt.", None),
        ("Wir sitzen im Café und trinken Tee.", "characters outside the German alphabet"),
        ("Er kam am 3. Mai nach Hause.", "digits"),
        ("Die EU ist groß und weit.", "acronyms"),
        ("Das sagte mir gestern Dr.", "abbreviations"),
        ("Das ist die Sache z.", "single letters"),
        ("Viel zu kurz.", "fewer than 4 or more than 20 words"),
    ],
)
def test_german_sentence_filter_names_why_a_sentence_is_dropped(sentence, reason):
    assert rejection(spoken_form(sentence, GERMAN), GERMAN) == reason


def test_german_entries_are_cut_into_sentences_and_the_drops_counted(tmp_path: Path):
    path = tmp_path / "zitate"
    path.write_text(
        "Am 3. Mai fällt der Regen leise auf das Dach. Danach kam die Sonne über die Berge.\n\t\t-- Anonym\n%\n"
        "Der Kellner im Café bringt uns heute den Kuchen.\n%\nEr wurde 90. Dann starb er ganz ruhig im Bett.\n"
    )
    sentences, dropped = read_sentences(path, GERMAN)
    assert [s.text for s in sentences] == ["DANACH KAM DIE SONNE ÜBER DIE BERGE"]
    # "3. Mai" and "90. Dann" do not end a sentence (a period after digits): both pieces keep their digits.
    assert dropped == {"digits": 2, "characters outside the German alphabet": 1}


def test_german_domain_is_prepared_only_when_asked_for(tmp_path: Path):
    assert load_config().domains == DOMAINS and "german" not in DOMAINS
    config = load_config(domains=ALL_DOMAINS)
    assert config.domains == ("source", "target", "target_b", "german")
    assert config.german.sizes == DEFAULT_SIZES["german"] and config.german.language == "de"
    assert load_config(quick=True, domains=ALL_DOMAINS).german.sizes == QUICK_SIZES["german"]
    assert all(topic.startswith("de/") for topic in config.german.topics)
    assert all(voice.startswith("de+") for engine in config.german.engines for voice in engine.voices)
    assert domain_language(config.german) is GERMAN and domain_language(config.source) is ENGLISH
    with pytest.raises(UserError, match="german train, a domain not prepared: ask for it with --german"):
        load_config(sizes={"german": {"train": 5}})
    with pytest.raises(UserError, match="prepare source, target, target_b, then any of german"):
        load_config(domains=("german", "source", "target", "target_b"))
    override = tmp_path / "c.json"
    override.write_text(json.dumps({"domains": ["source"]}))
    with pytest.raises(UserError, match="'domains' is not a setting"):
        load_config(config_file=override)
    override.write_text(json.dumps({"german": {"language": "xx"}}))
    with pytest.raises(UserError, match="unknown language 'xx'"):
        load_config(config_file=override, domains=ALL_DOMAINS)


@needs_fortunes
@needs_german_fortunes
def test_german_text_partitions_are_disjoint_and_leave_the_english_ones_unchanged(tmp_path: Path, caplog):
    config = load_config(seed=42, domains=ALL_DOMAINS)
    with caplog.at_level(logging.INFO):
        prepare_text(config, tmp_path)
    for name, expected in TEXT_SHA256.items():
        assert hashlib.sha256((tmp_path / f"{name}.tsv").read_bytes()).hexdigest() == expected, name
    pools = read_text_pools(tmp_path, ALL_DOMAINS)
    german = {split: [s.text for s in pools["german"][split]] for split in ("train", "dev", "test")}
    assert len(german["dev"]) == len(german["test"]) == 400 and len(german["train"]) > 15000
    texts = {split: set(german[split]) for split in german}
    assert all(len(texts[split]) == len(german[split]) for split in german)
    assert not texts["train"] & texts["dev"] and not texts["train"] & texts["test"] and not texts["dev"] & texts["test"]
    letters = set("ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÜß' ")
    assert all(set(text) <= letters for split in german for text in german[split])
    assert any("ß" in text for text in german["train"]) and any("Ü" in text for text in german["train"])
    english = {s.text for d in DOMAINS for split in ("train", "dev", "test") for s in pools[d][split]}
    assert not english & (texts["train"] | texts["dev"] | texts["test"])
    logged = [r.getMessage() for r in caplog.records if r.getMessage().startswith("german: ")]
    assert logged and "German sentences" in logged[0] and "characters outside the German alphabet" in logged[0]
    # The default corpus's text stamp is the one it had before the german domain existed.
    assert text_stamp(config) != text_stamp(load_config(seed=42))
    assert "german" not in text_stamp(load_config(seed=42))
