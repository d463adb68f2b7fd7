"""Every knob of the embedded corpus (three English domains and a German one), in one place.

The corpus is a miniature of "LibriSpeech -> GigaSpeech": a *source* domain of clean read speech
(stands for LibriSpeech) and a *target* domain (stands for GigaSpeech) that differs by channel,
speaking rate, speakers and topics; a second target domain, *target_b*, differs from the source in
another way (a far-field room instead of a telephone line), for several domains on one base. All
are synthesized offline with Debian's TTS engines and sox. A fourth domain, *german*, is a new
language for a new vocabulary: German voices reading German text (prepared only when asked for).

How the domain shifts are built (defaults below; all of it is configurable):

| factor        | source                         | target                         | target_b                          |
|---------------|--------------------------------|--------------------------------|-----------------------------------|
| text topics   | fortunes: wisdom, literature,  | fortunes: computers, science,  | dev/test: fortunes disclaimer,    |
|               | love, ...                      | politics, ...                  | perl; train: its 20 others + the  |
|               |                                |                                | target's train text               |
| engines       | espeak-ng 70%, flite 30%       | espeak-ng 50%, flite 50%       | espeak-ng 50%, flite 50%          |
| speakers      | pseudo-speakers (voice, pitch, | other pseudo-speakers of the   | others again (own draw)           |
|               | rate, timbre)                  | same voices                    |                                   |
| speaking rate | 0.85-1.10 x engine default     | 1.10-1.35 x (faster)           | 0.85-1.10 x                       |
| channel       | clean, 16 kHz                  | telephone line: 8 kHz,         | one fixed small room (sox reverb  |
|               |                                | 300-3400 Hz band               | 20%, room scale 50%) and a boomy, |
|               |                                |                                | dull microphone (EQ +10 dB at     |
|               |                                |                                | 200 Hz, -20 dB at 2.5 kHz)        |
| train augment | 30% light noise (20-35 dB),    | none                           | none                              |
|               | 30% speed perturbation         |                                |                                   |
| sizes         | 3600 / 150 / 150               | 1100 (0.89 h) / 250 / 250      | 850 (0.88 h) / 180 / 180          |

Dev and test speakers of every domain are held out from its train speakers. The fortunes files
hold only 380 sentences that no other domain uses in target_b's topics, all of them for its dev and
test sets (180 + 180, the other 20 for train); its train text adds the target's train partition
(`extra_train_text_from`), so target_b train and target train may share sentences, no other two
partitions do.

Why this shift (a pilot experiment): a base trained on clean espeak-ng alone
was useless (97-98% WER) both on a new engine alone and on the telephone channel alone. So both
domains use the same engine families, the target adds a channel + rate + topic shift, and the source
training data is lightly augmented.

Calibration, on the dev sets only (RESULTS.md). The shift must be one that adapters can learn from
0.9 h of audio: a *systematic* one. Random per-utterance damage (room reverb on half of the
utterances, noise at 15-30 dB SNR) made the target hard (57% dev WER, source dev 39%) but not
adaptable: dim-8 adapters moved the target-dev loss by 2% in 6 epochs, full fine-tuning by 3%. The
telephone band is the same transformation on every utterance: alone (no reverb, no noise) it puts
the same base at 68% and the adapters cut the target-dev loss by 20% in 5 epochs. Combined with
reverb and noise the target was useless (84% and more). Reverb and noise remain available
(`target.channel.reverb_prob`, `noise_prob`).

target_b's calibration, on the dev sets only (RESULTS.md; the shipped base: source dev 32.1%,
target dev 65.6%). Its text alone (no channel) puts the base at 41.6%: its dev sentences are short
disclaimers and Perl quotes, unlike its (mostly target) train text. A fixed room alone (sox's
default reverb) gave 61.6% but adapters learnt little of it (-9.8% WER after 2 epochs, the loss
flat at -11% from epoch 2); a speaker timbre shift alone (0.82-0.88) only 46.1%. A fixed
microphone EQ is a constant offset of the log-mel features, as the telephone band is a fixed mask,
and adapters learn it: a small room plus a mild EQ (+8 dB at 200 Hz, -12 dB at 3 kHz) gave 58.1%
and -12 to -14% with adapters; the default's stronger EQ gives 63.2%, and
52.1% with adapters (-17.6%; the loss -19%).

german (`./prepare.sh --german`): espeak-ng's German voice in 20 variants (m1-m8, f1-f5, the
Klatt voices klatt, klatt2, klatt3, and anika, norbert, steph, linda; flite and festival have no
German), one pseudo-speaker each, 3 held out for dev and 3 for test; speaking rate 0.85-1.10 x;
clean 16 kHz, no augmentation: the shift from the source is the language (words, letters, the
voice's phonetics), not the channel. Text: the German prose of Debian's fortunes-de (GERMAN_TOPICS;
18403 usable sentences, 17603 for train), normalised by local/languages.py (ä, ö, ü, ß kept;
numbers read by num2words). At 4.1 s per utterance, 880 train utterances are an hour of audio;
200 + 200 for dev and test (0.25 h and 0.24 h). Its BPE model (data/lang_bpe_250_de, prepare.sh
stage 4) is trained on its train text partition.

Tuning (pass a JSON file to `prepare.sh --corpus-config FILE`, keys as in the dataclasses below,
e.g. {"target": {"channel": {"noise_prob": 1.0, "snr_db": [25, 35]}}}):
- target too hard: set target.channel.telephone false, narrow target.speakers.rate_range towards 1.0;
- target too easy: set target.channel.mu_law true, add noise (target.channel.noise_prob, snr_db) or
  reverb, add festival voices to target.engines (a new engine is a strong shift), use faster rates;
- target_b: its room's reverberance and room_scale make it harder but little more learnable; the
  equalizer's gains make it both harder and learnable ({"target_b": {"channel": {"room": null}}}
  removes the room).

The text split (and with it bpe.model, trained on the source *train* text partition) depends only on
`seed` and the topic lists, not on the sizes: `--quick` and the default give the same bpe.model.
"""
import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from local.languages import ENGLISH, Language, language_named
from zipformer.core.errors import UserError

SPLITS = ("train", "dev", "test")

ESPEAK_VARIANTS = ["m1", "m2", "m3", "m4", "m5", "m6", "m7", "f1", "f2", "f3", "f4", "f5"]
ESPEAK_ACCENTS = ["en-us", "en-gb", "en-gb-x-rp"]


@dataclass
class EngineVoices:
    """One TTS engine of a domain: its voices and the share of the domain's utterances it speaks."""

    engine: str  # "espeak-ng" | "flite" | "festival"
    voices: List[str]
    share: float
    speakers_per_voice: int = 1  # pseudo-speakers drawn per voice (different pitch/rate/timbre)
    heldout_dev: int = 1  # pseudo-speakers of this engine reserved for dev (never in train)
    heldout_test: int = 1  # ... and for test (disjoint from dev and train)


@dataclass
class SpeakerConfig:
    """Ranges from which each pseudo-speaker's fixed voice parameters are drawn."""

    rate_range: Tuple[float, float] = (0.85, 1.10)  # speaking rate, x engine default
    timbre_range: Tuple[float, float] = (0.94, 1.06)  # sox `speed` factor: shifts pitch and formants
    pitch_range: Tuple[int, int] = (30, 70)  # espeak-ng -p (0-99); other engines ignore it
    rate_jitter: float = 0.03  # per-utterance relative change of the speaker's rate


@dataclass
class RoomConfig:
    """A fixed far-field room and microphone: the same sox `reverb` and EQ on every utterance.

    Unlike `ChannelConfig.reverb_prob` (a room drawn per utterance), nothing here is random, so the
    shift is one systematic transformation that adapters can learn.
    """

    reverberance: float = 50.0  # sox reverb "reverberance" %
    hf_damping: float = 50.0  # sox reverb "HF-damping" %: how fast the tail loses its highs
    room_scale: float = 100.0  # sox reverb "room-scale" %
    pre_delay_ms: float = 20.0  # delay of the reverberant tail after the direct sound
    wet_gain_db: float = 0.0  # level of the tail relative to the direct sound
    # sox `equalizer` bands after the room: (centre Hz, width in octaves, gain dB).
    equalizer: List[Tuple[float, float, float]] = field(default_factory=list)


@dataclass
class ChannelConfig:
    """Acoustic channel applied to every utterance of a domain (all splits)."""

    telephone: bool = False  # resample to 8 kHz, band-pass, back to 16 kHz
    band_hz: Tuple[int, int] = (300, 3400)
    mu_law: bool = False  # 8-bit mu-law companding at 8 kHz (only with telephone)
    reverb_prob: float = 0.0  # share of utterances with sox room reverb
    reverberance_range: Tuple[float, float] = (10.0, 40.0)  # sox reverb "reverberance" %
    room_scale_range: Tuple[float, float] = (20.0, 60.0)  # sox reverb "room-scale" %
    noise_prob: float = 0.0  # share of utterances with background noise
    snr_db: Tuple[float, float] = (15.0, 30.0)
    noise_colors: List[str] = field(default_factory=lambda: ["white", "pink"])
    level_dbfs: Tuple[float, float] = (-26.0, -20.0)  # final RMS level of the utterance
    room: Optional[RoomConfig] = None  # one fixed far-field room for every utterance (None: no room)


@dataclass
class AugmentConfig:
    """Extra perturbation of the *train* split only (makes the base model less brittle)."""

    speed_prob: float = 0.0
    speed_range: Tuple[float, float] = (0.9, 1.1)  # sox `speed`: tempo and pitch, like speed perturbation
    noise_prob: float = 0.0
    snr_db: Tuple[float, float] = (20.0, 35.0)


@dataclass
class DomainConfig:
    topics: List[str]  # Debian fortunes files (/usr/share/games/fortunes/NAME)
    engines: List[EngineVoices]
    speakers: SpeakerConfig
    channel: ChannelConfig
    train_augment: AugmentConfig
    text_reserve: Dict[str, int]  # sentences set aside for dev and test; the rest is the train text
    sizes: Dict[str, int]  # utterances per split; 0 skips the split (e.g. source train when the base model is shipped)
    # An earlier domain whose train text partition is added to this domain's own (when its topics
    # have too few sentences for a train set); dev and test text stay this domain's own topics.
    extra_train_text_from: Optional[str] = None
    # The language of its text and voices (local/languages.py: "de"); None: English, the corpus's
    # first language (left out of the stamps, as every setting that is off).
    language: Optional[str] = None


def domain_language(domain: DomainConfig) -> Language:
    """The Language of a domain's sentences and voices (English unless its config names another)."""
    return ENGLISH if domain.language is None else language_named(domain.language)


# The English domains, in the order of their text partitions (a later domain never changes an
# earlier one's): the corpus ./prepare.sh prepares by default.
DOMAINS = ("source", "target", "target_b")
# Domains in another language, after the English ones: prepared only when asked for (./prepare.sh --german).
LANGUAGE_DOMAINS = ("german",)
ALL_DOMAINS = DOMAINS + LANGUAGE_DOMAINS


@dataclass
class CorpusConfig:
    """The seed, one DomainConfig per domain (a field here and a default below), and the domains prepared."""

    seed: int
    source: DomainConfig
    target: DomainConfig
    target_b: DomainConfig
    german: DomainConfig
    domains: Tuple[str, ...] = DOMAINS  # DOMAINS, then any of LANGUAGE_DOMAINS asked for

    def domain(self, name: str) -> DomainConfig:
        if name not in ALL_DOMAINS:
            raise UserError(f"unknown domain '{name}': use one of {', '.join(ALL_DOMAINS)}")
        return getattr(self, name)


DEFAULT_SIZES = {
    "source": {"train": 3600, "dev": 150, "test": 150},  # ~3.5 h, 0.15 h, 0.15 h
    "target": {"train": 1100, "dev": 250, "test": 250},  # ~0.8 h, 0.19 h, 0.19 h
    "target_b": {"train": 850, "dev": 180, "test": 180},  # 0.88 h (slower than target), 0.14 h, 0.16 h
    "german": {"train": 880, "dev": 200, "test": 200},  # 1.0 h, 0.25 h, 0.24 h
}
QUICK_SIZES = {
    "source": {"train": 200, "dev": 40, "test": 40},
    "target": {"train": 200, "dev": 40, "test": 40},
    "target_b": {"train": 200, "dev": 40, "test": 40},
    "german": {"train": 200, "dev": 40, "test": 40},
}

# espeak-ng's variants for the German voice: its male and female ones, the Klatt voices, four more.
ESPEAK_GERMAN_VARIANTS = (
    [f"m{i}" for i in range(1, 9)] + [f"f{i}" for i in range(1, 6)]
    + ["klatt", "klatt2", "klatt3", "anika", "norbert", "steph", "linda"]
)
# German prose from fortunes-de; left out: ASCII art, English phrases (translations), IRC logs and
# computer jargon (channel-debian.fortunes, linuxtag, infodrom, debian, computer, ms).
GERMAN_TOPICS = [
    "anekdoten", "bahnhof", "beilagen", "brot", "dessert", "doppelsinnig", "elefanten", "fussball",
    "gedichte", "hauptgericht", "holenlassen", "huhn", "kalt", "kinderzitate", "kuchen", "letzteworte",
    "lieberals", "loewe", "mathematiker", "murphy", "namen", "plaetzchen", "quiz", "regeln", "salat",
    "sauce", "sicherheitshinweise", "sprichworte", "sprichwortev", "sprueche", "stilblueten", "suppe",
    "tips", "unfug", "vornamen", "vorspeise", "warmduscher", "witze", "woerterbuch", "wusstensie", "zitate",
]


def default_config(seed: int = 42, quick: bool = False) -> CorpusConfig:
    sizes = QUICK_SIZES if quick else DEFAULT_SIZES
    espeak_voices = [f"{accent}+{variant}" for accent in ESPEAK_ACCENTS for variant in ESPEAK_VARIANTS]
    flite_voices = ["kal16", "awb", "rms", "slt"]
    source = DomainConfig(
        topics=[
            "art", "cookie", "definitions", "education", "ethnic", "food", "fortunes", "goedel",
            "humorists", "kids", "knghtbrd", "law", "literature", "love", "men-women",
            "miscellaneous", "paradoxum", "people", "pets", "platitudes", "pratchett", "riddles",
            "songs-poems", "tao", "wisdom", "work", "zippy",
        ],
        engines=[
            EngineVoices("espeak-ng", espeak_voices, share=0.7, heldout_dev=4, heldout_test=4),
            EngineVoices("flite", flite_voices, share=0.3, speakers_per_voice=3, heldout_dev=2, heldout_test=2),
        ],
        speakers=SpeakerConfig(rate_range=(0.85, 1.10)),
        channel=ChannelConfig(),
        train_augment=AugmentConfig(speed_prob=0.3, noise_prob=0.3),
        text_reserve={"dev": 400, "test": 400},
        sizes=dict(sizes["source"]),
    )
    target = DomainConfig(
        topics=[
            "computers", "science", "politics", "medicine", "news", "sports", "linux",
            "linuxcookie", "magic", "drugs", "startrek", "debian",
        ],
        engines=[
            EngineVoices("espeak-ng", espeak_voices, share=0.5, heldout_dev=4, heldout_test=4),
            EngineVoices("flite", flite_voices, share=0.5, speakers_per_voice=3, heldout_dev=2, heldout_test=2),
        ],
        speakers=SpeakerConfig(rate_range=(1.10, 1.35)),
        channel=ChannelConfig(telephone=True),
        train_augment=AugmentConfig(),
        text_reserve={"dev": 400, "test": 400},
        sizes=dict(sizes["target"]),
    )
    target_b = DomainConfig(
        topics=["disclaimer", "perl"],
        engines=[
            EngineVoices("espeak-ng", espeak_voices, share=0.5, heldout_dev=4, heldout_test=4),
            EngineVoices("flite", flite_voices, share=0.5, speakers_per_voice=3, heldout_dev=2, heldout_test=2),
        ],
        speakers=SpeakerConfig(rate_range=(0.85, 1.10)),
        # A small room (short tail) and a boomy, dull microphone: +10 dB at 200 Hz, -20 dB at 2.5 kHz.
        channel=ChannelConfig(
            room=RoomConfig(reverberance=20.0, room_scale=50.0, equalizer=[(200.0, 1.0, 10.0), (2500.0, 2.0, -20.0)])
        ),
        train_augment=AugmentConfig(),
        text_reserve={"dev": 180, "test": 180},
        sizes=dict(sizes["target_b"]),
        extra_train_text_from="target",
    )
    german = DomainConfig(
        topics=[f"de/{topic}" for topic in GERMAN_TOPICS],
        engines=[
            EngineVoices("espeak-ng", [f"de+{variant}" for variant in ESPEAK_GERMAN_VARIANTS], share=1.0,
                         heldout_dev=3, heldout_test=3),
        ],
        speakers=SpeakerConfig(rate_range=(0.85, 1.10)),
        channel=ChannelConfig(),
        train_augment=AugmentConfig(),
        text_reserve={"dev": 400, "test": 400},
        sizes=dict(sizes["german"]),
        language="de",
    )
    return CorpusConfig(seed=seed, source=source, target=target, target_b=target_b, german=german)


def _override(obj: Any, overrides: Dict[str, Any], where: str) -> Any:
    """Return a copy of dataclass `obj` with the (nested) `overrides` applied; unknown keys are errors."""
    if not isinstance(overrides, dict):
        raise UserError(f"corpus config: '{where}' must be a JSON object")
    known = {f.name: f for f in dataclasses.fields(obj)}
    changes = {}
    for key, value in overrides.items():
        if key not in known:
            raise UserError(
                f"corpus config: unknown key '{where}.{key}'; known keys: {', '.join(sorted(known))}"
            )
        current = getattr(obj, key)
        if key == "room":  # optional: null removes the room, an object changes (or adds) one
            changes[key] = None if value is None else _override(current or RoomConfig(), value, f"{where}.room")
        elif dataclasses.is_dataclass(current):
            changes[key] = _override(current, value, f"{where}.{key}")
        elif key == "engines":
            try:
                changes[key] = [EngineVoices(**engine) for engine in value]
            except TypeError as e:
                raise UserError(f"corpus config: bad entry in '{where}.engines' ({e}); see EngineVoices") from None
        elif isinstance(current, dict):
            changes[key] = {**current, **value}
        elif isinstance(current, tuple):
            changes[key] = tuple(value)
        else:
            changes[key] = value
    return dataclasses.replace(obj, **changes)


def load_config(
    seed: int = 42,
    quick: bool = False,
    config_file: Optional[Path] = None,
    sizes: Optional[Dict[str, Dict[str, int]]] = None,
    domains: Sequence[str] = DOMAINS,
) -> CorpusConfig:
    """Defaults, then the JSON `config_file`, then explicit `sizes` ({domain: {split: n}}).

    `domains`: the domains prepared, DOMAINS and any of LANGUAGE_DOMAINS after them (ALL_DOMAINS).
    """
    config = dataclasses.replace(default_config(seed=seed, quick=quick), domains=tuple(domains))
    if config_file is not None:
        try:
            overrides = json.loads(Path(config_file).read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise UserError(f"cannot read corpus config {config_file}: {e}; pass a JSON file") from None
        if isinstance(overrides, dict) and "domains" in overrides:
            raise UserError("corpus config: 'domains' is not a setting: ask for the german domain with --german")
        config = _override(config, overrides, "config")
    for domain, split_sizes in (sizes or {}).items():
        for split, n in split_sizes.items():
            if n is not None:
                if domain not in config.domains:
                    raise UserError(f"a size for {domain} {split}, a domain not prepared: ask for it with --{domain}")
                config.domain(domain).sizes[split] = n
    validate_config(config)
    return config


def validate_config(config: CorpusConfig) -> None:
    if config.domains != DOMAINS + tuple(d for d in LANGUAGE_DOMAINS if d in config.domains):
        raise UserError(
            f"domains {', '.join(config.domains)}: prepare {', '.join(DOMAINS)}, then any of "
            f"{', '.join(LANGUAGE_DOMAINS)} in this order"
        )
    for name in config.domains:
        domain = config.domain(name)
        for split in SPLITS:
            n = domain.sizes.get(split, 0)
            if n < 0:
                raise UserError(f"{name} {split} size must be >= 0 utterances (0 skips the split), got {n}")
        for split in ("dev", "test"):
            if domain.sizes[split] > domain.text_reserve[split]:
                raise UserError(
                    f"{name} {split} asks for {domain.sizes[split]} utterances but only "
                    f"{domain.text_reserve[split]} sentences are reserved for it: raise "
                    f"{name}.text_reserve.{split} in the corpus config (this changes the text split)"
                )
        if not domain.engines or abs(sum(e.share for e in domain.engines) - 1.0) > 1e-6:
            raise UserError(f"{name}.engines: the shares must add up to 1")
        donor = domain.extra_train_text_from
        earlier = config.domains[: config.domains.index(name)]
        if donor is not None and donor not in earlier:
            raise UserError(
                f"{name}.extra_train_text_from: '{donor}' is not a domain before {name} "
                f"(use one of {', '.join(earlier) or 'none'})"
            )
        domain_language(domain)  # a UserError for an unknown language
        for engine in domain.engines:
            if engine.engine not in ("espeak-ng", "flite", "festival"):
                raise UserError(
                    f"{name}.engines: unknown engine '{engine.engine}' (use espeak-ng, flite or festival)"
                )

