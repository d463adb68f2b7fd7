"""Deterministic plan of the embedded corpus: who says which sentence, through which channel.

A plan is a list of `UtterancePlan`s; rendering one (local/synth/channel.py) depends on nothing else, so
the audio is the same whatever the number of worker processes. Each domain has its own pool of
pseudo-speakers (a TTS voice with fixed pitch, speaking rate and timbre); dev and test speakers of a
domain are held out from its train speakers.
"""
import random
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

from local.synth.corpus_config import (
    SPLITS,
    AugmentConfig,
    ChannelConfig,
    CorpusConfig,
    DomainConfig,
    RoomConfig,
    domain_language,
)
from local.text_corpus import Sentence
from zipformer.core.errors import UserError


@dataclass(frozen=True)
class Speaker:
    id: str
    engine: str
    voice: str
    pitch: int  # espeak-ng -p; ignored by the other engines
    rate: float  # speaking rate, x engine default
    timbre: float  # sox `speed` factor


@dataclass(frozen=True)
class RenderSpec:
    """Everything needed to render one utterance (after TTS) into its final 16 kHz waveform."""

    timbre: float  # sox `speed` factor (speaker timbre x train speed perturbation)
    reverb: Optional[Tuple[float, float]]  # (reverberance %, room scale %) or None
    room: Optional[RoomConfig]  # the domain's fixed room, or None
    noise: Optional[Tuple[float, str]]  # (SNR dB, colour) or None
    telephone: bool
    band_hz: Tuple[int, int]
    mu_law: bool
    level_dbfs: float
    seed: int  # for the noise samples


@dataclass(frozen=True)
class UtterancePlan:
    id: str
    domain: str
    split: str
    sentence: Sentence
    speaker: Speaker
    rate: float  # this utterance's speaking rate
    render: RenderSpec
    language: str  # lhotse's name of the sentence's language ("English", "German")


def _uniform(rng: random.Random, bounds: Sequence[float]) -> float:
    return rng.uniform(float(bounds[0]), float(bounds[1]))


def speaker_prefix(domain_name: str) -> str:
    """Initials of the domain's name: "source" -> "S", "target" -> "T", "target_b" -> "TB"."""
    return "".join(part[0] for part in domain_name.split("_") if part).upper()


def build_speakers(domain_name: str, domain: DomainConfig, seed: int) -> Dict[str, List[Speaker]]:
    """Pseudo-speakers of a domain by split: {"train": [...], "dev": [...], "test": [...]}."""
    rng = random.Random(f"speakers-{seed}-{domain_name}")
    prefix = speaker_prefix(domain_name)
    by_split: Dict[str, List[Speaker]] = {split: [] for split in SPLITS}
    cfg = domain.speakers
    number = 0
    for engine in domain.engines:
        speakers = []
        for voice in engine.voices:
            for _ in range(engine.speakers_per_voice):
                number += 1
                speakers.append(
                    Speaker(
                        id=f"{prefix}{number:03d}-{engine.engine.split('-')[0]}-{voice.replace('+', '-')}",
                        engine=engine.engine,
                        voice=voice,
                        pitch=rng.randint(int(cfg.pitch_range[0]), int(cfg.pitch_range[1])),
                        rate=round(_uniform(rng, cfg.rate_range), 3),
                        timbre=round(_uniform(rng, cfg.timbre_range), 3),
                    )
                )
        n_held = engine.heldout_dev + engine.heldout_test
        if len(speakers) <= n_held:
            raise UserError(
                f"{domain_name}: engine {engine.engine} has {len(speakers)} pseudo-speakers, not enough "
                f"to hold out {n_held} for dev/test and keep some for train: add voices or "
                "speakers_per_voice, or lower heldout_dev/heldout_test"
            )
        rng.shuffle(speakers)
        by_split["dev"] += speakers[: engine.heldout_dev]
        by_split["test"] += speakers[engine.heldout_dev : n_held]
        by_split["train"] += speakers[n_held:]
    return by_split


def _render_spec(
    rng: random.Random, channel: ChannelConfig, speaker: Speaker, augment: Optional[AugmentConfig]
) -> RenderSpec:
    timbre = speaker.timbre
    noise = None
    if rng.random() < channel.noise_prob:
        noise = (round(_uniform(rng, channel.snr_db), 2), rng.choice(list(channel.noise_colors)))
    if augment is not None:
        if rng.random() < augment.speed_prob:
            timbre = timbre * _uniform(rng, augment.speed_range)
        if noise is None and rng.random() < augment.noise_prob:
            noise = (round(_uniform(rng, augment.snr_db), 2), rng.choice(["white", "pink"]))
    reverb = None
    if rng.random() < channel.reverb_prob:
        reverb = (
            round(_uniform(rng, channel.reverberance_range), 1),
            round(_uniform(rng, channel.room_scale_range), 1),
        )
    return RenderSpec(
        timbre=round(timbre, 4),
        reverb=reverb,
        room=channel.room,
        noise=noise,
        telephone=channel.telephone,
        band_hz=tuple(channel.band_hz),
        mu_law=channel.mu_law and channel.telephone,
        level_dbfs=round(_uniform(rng, channel.level_dbfs), 2),
        seed=rng.randrange(2**31),
    )


def plan_split(
    config: CorpusConfig,
    domain_name: str,
    split: str,
    sentences: Sequence[Sentence],
    speakers: Sequence[Speaker],
    id_prefix: Optional[str] = None,
) -> List[UtterancePlan]:
    """One utterance per sentence; engines drawn by their shares, speakers uniformly within an engine."""
    domain = config.domain(domain_name)
    if not speakers and sentences:
        raise UserError(
            f"{domain_name} {split}: no pseudo-speakers for this split: raise heldout_dev/heldout_test "
            "of an engine in the corpus config"
        )
    rng = random.Random(f"plan-{config.seed}-{domain_name}-{split}-{id_prefix}")
    by_engine: Dict[str, List[Speaker]] = {}
    for speaker in speakers:
        by_engine.setdefault(speaker.engine, []).append(speaker)
    engines = [e for e in domain.engines if e.engine in by_engine]
    weights = [e.share for e in engines]
    augment = domain.train_augment if split == "train" else None
    prefix = id_prefix or f"{domain_name}-{split}"
    language = domain_language(domain).name
    plans = []
    for index, sentence in enumerate(sentences):
        engine = rng.choices(engines, weights=weights)[0].engine
        speaker = rng.choice(by_engine[engine])
        rate = speaker.rate * (1.0 + rng.uniform(-1.0, 1.0) * domain.speakers.rate_jitter)
        plans.append(
            UtterancePlan(
                id=f"{prefix}-{index:05d}",
                domain=domain_name,
                split=split,
                sentence=sentence,
                speaker=speaker,
                rate=round(rate, 4),
                render=_render_spec(rng, domain.channel, speaker, augment),
                language=language,
            )
        )
    return plans


def plan_corpus(
    config: CorpusConfig, pools: Dict[str, Dict[str, List[Sentence]]]
) -> Dict[Tuple[str, str], List[UtterancePlan]]:
    """Plans of every (domain, split), sized by config.<domain>.sizes."""
    plans = {}
    for domain_name in config.domains:
        domain = config.domain(domain_name)
        speakers = build_speakers(domain_name, domain, config.seed)
        for split in SPLITS:
            n = domain.sizes[split]
            available = pools[domain_name][split]
            if n > len(available):
                raise UserError(
                    f"{domain_name} {split}: {n} utterances asked but the text partition has only "
                    f"{len(available)} sentences: lower the size or add topics in the corpus config"
                )
            plans[(domain_name, split)] = plan_split(
                config, domain_name, split, available[:n], speakers[split]
            )
    return plans
