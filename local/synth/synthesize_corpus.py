#!/usr/bin/env python3
"""Synthesize the embedded corpus (source ~ LibriSpeech; target, target_b ~ two new domains) offline.

Usage:
  # stage "text": sentence partitions from Debian's fortunes -> data/local/text/{domain}_{split}.tsv
  ./local/synth/synthesize_corpus.py text --text-dir data/local/text --seed 42
  # stage "audio": TTS + channel -> data/audio/..., data/manifests/{domain}_{recordings,supervisions}_{split}.jsonl.gz
  ./local/synth/synthesize_corpus.py audio --text-dir data/local/text --audio-dir data/audio \
      --manifest-dir data/manifests --num-jobs 2 [--quick] [--source-train 3600 ...] [--corpus-config FILE.json]
  # either stage with --german: the german domain too (German fortunes read by German voices)

All knobs are in local/synth/corpus_config.py. A stage (for audio: a split) is skipped when its outputs
exist and were made with the same settings; outputs made with other settings are an error (delete
them to redo). A split of size 0 is not synthesized (e.g. --source-train 0 when the base model is
shipped and only the target and the source dev/test sets are needed).

Python API (for tests): synthesize_utterances(texts, out_dir, domain, seed) -> CutSet.
"""
import argparse
import dataclasses
import hashlib
import json
import logging
import multiprocessing
import os
import tempfile
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence, Set, Tuple

import soundfile as sf
from lhotse import CutSet, Recording, RecordingSet, SupervisionSegment, SupervisionSet
from lhotse.audio import AudioSource

from local.features import compute_features_for_cuts
from local.languages import spell_numbers
from local.manifest_io import atomic_save
from local.progress import ProgressLog
from local.synth.channel import SAMPLE_RATE, render_waveform
from local.synth.corpus_config import (
    ALL_DOMAINS,
    DOMAINS,
    SPLITS,
    CorpusConfig,
    EngineVoices,
    domain_language,
    load_config,
)
from local.synth.corpus_plan import UtterancePlan, build_speakers, plan_corpus, plan_split
from local.synth.tts import check_tools, synthesize
from local.text_corpus import Sentence, build_text_pools, normalize_text
from zipformer.core.atomic import atomic_write_text
from zipformer.core.errors import UserError, exit_on_user_error

TEXT_STAMP = ".text_config.json"


# ----------------------------------------------------------------------------- rendering


def render_utterance(plan: UtterancePlan, audio_path: Path) -> int:
    """Synthesize one planned utterance into `audio_path` (16-bit FLAC); returns its sample count."""
    with tempfile.TemporaryDirectory(prefix="tts-") as tmp:
        tts_wav = Path(tmp) / "tts.wav"
        speaker = plan.speaker
        synthesize(speaker.engine, speaker.voice, speaker.pitch, plan.rate, plan.sentence.spoken, tts_wav)
        audio = render_waveform(tts_wav, plan.render)
    partial = audio_path.with_name(f".tmp-{audio_path.name}")
    sf.write(partial, audio, SAMPLE_RATE, subtype="PCM_16", format="FLAC")
    os.replace(partial, audio_path)
    return len(audio)


def _render_job(job: Tuple[UtterancePlan, Path]) -> Tuple[str, int]:
    plan, path = job
    return plan.id, render_utterance(plan, path)


def render_all(plans: Sequence[UtterancePlan], audio_dir: Path, num_jobs: int, what: str) -> Dict[str, int]:
    """Render `plans` into `audio_dir/{id}.flac` with `num_jobs` processes; returns id -> num_samples."""
    audio_dir.mkdir(parents=True, exist_ok=True)
    jobs = [(plan, audio_dir / f"{plan.id}.flac") for plan in plans]
    progress = ProgressLog(what, len(jobs))
    num_samples = {}
    if num_jobs <= 1 or len(jobs) < 8:
        results = map(_render_job, jobs)
        pool = None
    else:
        pool = multiprocessing.get_context("fork").Pool(num_jobs)
        results = pool.imap_unordered(_render_job, jobs, chunksize=4)
    try:
        for utt_id, n in results:
            num_samples[utt_id] = n
            progress.update(audio_seconds=n / SAMPLE_RATE)
    finally:
        if pool is not None:
            pool.terminate()
            pool.join()
    progress.finish()
    return num_samples


def build_manifests(
    plans: Sequence[UtterancePlan], audio_dir: Path, num_samples: Dict[str, int]
) -> Tuple[RecordingSet, SupervisionSet]:
    recordings, supervisions = [], []
    for plan in plans:
        n = num_samples[plan.id]
        duration = n / SAMPLE_RATE
        recordings.append(
            Recording(
                id=plan.id,
                sources=[AudioSource(type="file", channels=[0], source=str(audio_dir / f"{plan.id}.flac"))],
                sampling_rate=SAMPLE_RATE,
                num_samples=n,
                duration=duration,
            )
        )
        render = plan.render
        supervisions.append(
            SupervisionSegment(
                id=plan.id,
                recording_id=plan.id,
                start=0.0,
                duration=duration,
                channel=0,
                text=plan.sentence.text,
                language=plan.language,
                speaker=plan.speaker.id,
                custom={
                    "domain": plan.domain,
                    "engine": plan.speaker.engine,
                    "voice": plan.speaker.voice,
                    "rate": plan.rate,
                    "timbre": render.timbre,
                    "telephone": render.telephone,
                    "snr_db": render.noise[0] if render.noise else None,
                    "reverb": render.reverb is not None,
                    "room": render.room is not None,
                },
            )
        )
    return RecordingSet.from_recordings(recordings), SupervisionSet.from_segments(supervisions)


# ----------------------------------------------------------------------------- text stage


def text_stamp(config: CorpusConfig) -> str:
    relevant = {}
    for d in config.domains:
        domain = config.domain(d)
        settings = (domain.topics, domain.text_reserve, domain.extra_train_text_from)
        relevant[d] = settings if domain.language is None else settings + (domain.language,)
    return f'{{"seed": {config.seed}, "text": {sorted(relevant.items())!r}}}'


def text_file(text_dir: Path, domain: str, split: str) -> Path:
    return text_dir / f"{domain}_{split}.tsv"


def prepare_text(config: CorpusConfig, text_dir: Path) -> None:
    outputs = [text_file(text_dir, d, s) for d in config.domains for s in SPLITS]
    stamp = text_dir / TEXT_STAMP
    if all(p.is_file() for p in outputs) and stamp.is_file() and stamp.read_text() == text_stamp(config):
        logging.info(f"text partitions in {text_dir} are up to date, skipping")
        return
    pools = build_text_pools(
        {d: config.domain(d).topics for d in config.domains},
        {d: config.domain(d).text_reserve for d in config.domains},
        seed=config.seed,
        extra_train_from={d: config.domain(d).extra_train_text_from for d in config.domains},
        languages={d: domain_language(config.domain(d)) for d in config.domains},
    )
    for domain in config.domains:
        for split in SPLITS:
            lines = "".join(f"{s.text}\t{s.spoken}\n" for s in pools[domain][split])
            atomic_write_text(text_file(text_dir, domain, split), lines)
            logging.info(f"{domain} {split}: {len(pools[domain][split])} sentences")
    atomic_write_text(stamp, text_stamp(config))


def read_text_pools(text_dir: Path, domains: Sequence[str] = DOMAINS) -> Dict[str, Dict[str, List[Sentence]]]:
    pools = {}
    for domain in domains:
        pools[domain] = {}
        for split in SPLITS:
            path = text_file(text_dir, domain, split)
            if not path.is_file():
                raise UserError(f"{path} not found: run the text stage first (./prepare.sh --stage 0)")
            sentences = []
            for number, line in enumerate(path.read_text().splitlines(), 1):
                text, _, spoken = line.partition("\t")
                if not text.strip() or not spoken.strip():
                    raise UserError(f"{path}:{number}: expected 'TEXT<TAB>spoken text'; rerun the text stage")
                sentences.append(Sentence(spoken=spoken, text=text))
            pools[domain][split] = sentences
    return pools


# ----------------------------------------------------------------------------- audio stage


def engine_voices(engines: Iterable[EngineVoices]) -> Dict[str, Set[str]]:
    voices: Dict[str, Set[str]] = {}
    for engine in engines:
        voices.setdefault(engine.engine, set()).update(engine.voices)
    return voices


def active_splits(config: CorpusConfig) -> List[Tuple[str, str]]:
    """(domain, split) pairs with at least one utterance."""
    return [(d, s) for d in config.domains for s in SPLITS if config.domain(d).sizes[s] > 0]


def manifest_paths(manifest_dir: Path, domain: str, split: str) -> Tuple[Path, Path]:
    return (
        manifest_dir / f"{domain}_recordings_{split}.jsonl.gz",
        manifest_dir / f"{domain}_supervisions_{split}.jsonl.gz",
    )


def _without_unset(value: Any) -> Any:
    """`value` with every None-valued dict entry removed, recursively."""
    if isinstance(value, dict):
        return {k: _without_unset(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_unset(v) for v in value]
    return value


def split_stamp(config: CorpusConfig, domain: str, split: str, sentences: Sequence[Sentence]) -> str:
    """Everything a split's audio depends on: seed, the domain's voices/channel, its size and text.

    Settings that are off (None, e.g. no room) are left out, so that a knob added later does not
    invalidate corpora synthesized before it existed.
    """
    settings = _without_unset(dataclasses.asdict(config.domain(domain)))
    settings["sizes"] = settings["sizes"][split]
    text_hash = hashlib.sha256("".join(f"{s.text}\t{s.spoken}\n" for s in sentences).encode()).hexdigest()
    return json.dumps({"seed": config.seed, "domain": settings, "text_sha256": text_hash}, sort_keys=True, indent=1)


def stamp_path(manifest_dir: Path, domain: str, split: str) -> Path:
    return manifest_dir / f".synth_{domain}_{split}.json"


def prepare_audio(config: CorpusConfig, text_dir: Path, audio_dir: Path, manifest_dir: Path, num_jobs: int) -> None:
    """Synthesize every split of size > 0 whose manifests are missing.

    A split whose manifests exist is skipped when it was made with the same settings (per-split
    stamp), and is an error otherwise: nothing is overwritten silently.
    """
    pools = read_text_pools(text_dir, config.domains)
    todo, conflicts = [], []
    stamps = {}
    for domain, split in active_splits(config):
        stamps[(domain, split)] = split_stamp(config, domain, split, pools[domain][split][: config.domain(domain).sizes[split]])
        stamp = stamp_path(manifest_dir, domain, split)
        if all(p.is_file() for p in manifest_paths(manifest_dir, domain, split)):
            if stamp.is_file() and stamp.read_text() == stamps[(domain, split)]:
                logging.info(f"{domain} {split}: synthesized manifests are up to date, skipping")
                continue
            conflicts.append((domain, split))
        todo.append((domain, split))
    if conflicts:
        names = ", ".join(f"{d} {s}" for d, s in conflicts)
        files = " ".join(f"{manifest_dir}/{d}_*_{s}.jsonl.gz" for d, s in conflicts)
        raise UserError(
            f"{names}: {manifest_dir} holds audio made with other settings (sizes, seed, --quick or "
            f"corpus config): delete {files} (and their data/fbank cuts) to rebuild, or rerun with "
            "the settings they were made with"
        )
    if not todo:
        return
    check_tools(engine_voices(e for d in config.domains for e in config.domain(d).engines))
    plans = plan_corpus(config, pools)
    for domain, split in todo:
        split_plans = plans[(domain, split)]
        split_dir = audio_dir / domain / split
        num_samples = render_all(split_plans, split_dir, num_jobs, f"synthesize {domain}/{split}")
        recordings, supervisions = build_manifests(split_plans, split_dir, num_samples)
        rec_path, sup_path = manifest_paths(manifest_dir, domain, split)
        atomic_save(recordings, rec_path)
        atomic_save(supervisions, sup_path)
        atomic_write_text(stamp_path(manifest_dir, domain, split), stamps[(domain, split)])
        hours = sum(num_samples.values()) / SAMPLE_RATE / 3600
        logging.info(f"{domain} {split}: {len(split_plans)} utterances, {hours:.3f} h -> {rec_path.name}")


# ----------------------------------------------------------------------------- API for tests


def synthesize_utterances(
    texts: Sequence[str],
    out_dir: Path,
    domain: str = "source",
    seed: int = 0,
    split: str = "train",
    compute_features: bool = True,
    num_jobs: int = 1,
    config: Optional[CorpusConfig] = None,
    id_prefix: Optional[str] = None,
) -> CutSet:
    """Synthesize `texts` with the `domain`'s voices and channel (fast: ~20-60 ms per utterance).

    Args:
      texts: sentences in any casing/punctuation; supervisions get the normalised upper-case text
        (in the domain's language: German keeps ä, ö, ü, ß and has its numbers read in words).
      out_dir: receives audio/{id}.flac and, with compute_features, feats/ (lilcom) + cuts.jsonl.gz.
      domain: "source" (clean), "target" (telephone line, faster speech), "target_b" (a fixed
        far-field room) or "german" (German voices, clean); see local/synth/corpus_config.py.
      split: whose pseudo-speakers speak ("train", or the held-out "dev"/"test" speakers).
      config: corpus settings (voices, channel, ...); default: local/synth/corpus_config.py's defaults.
      seed: seed of speakers and channel (config.seed instead when a config is given).
      id_prefix: recording/supervision ids are "{id_prefix}-NNNNN" (default "{domain}-{split}").
    Returns:
      an eager CutSet (one cut per text, in order), with 80-dim Fbank features of shape
      (num_frames, 80) when compute_features is True.
    Deterministic for given texts, domain, split and seed.
    """
    out_dir = Path(out_dir)
    config = config or load_config(seed=seed)
    language = domain_language(config.domain(domain))
    sentences = []
    for text in texts:
        spoken = spell_numbers(text, language)
        normalized = normalize_text(spoken, language)
        if not normalized:
            raise UserError(f"text {text!r} has no words to speak")
        sentences.append(Sentence(spoken=spoken, text=normalized))
    speakers = build_speakers(domain, config.domain(domain), config.seed)[split]
    check_tools(engine_voices(config.domain(domain).engines))
    plans = plan_split(config, domain, split, sentences, speakers, id_prefix=id_prefix)
    audio_dir = out_dir / "audio"
    num_samples = render_all(plans, audio_dir, num_jobs, f"synthesize {len(plans)} {domain} utterances")
    recordings, supervisions = build_manifests(plans, audio_dir, num_samples)
    cuts = CutSet.from_manifests(recordings=recordings, supervisions=supervisions)
    if compute_features:
        cuts = compute_features_for_cuts(cuts, out_dir / "feats", num_jobs=1)
        atomic_save(cuts, out_dir / "cuts.jsonl.gz")
    return cuts


# ----------------------------------------------------------------------------- CLI


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seed", type=int, default=42, help="seed of the text split, speakers and channel")
    parser.add_argument("--quick", action="store_true", help="tiny sizes for smoke tests (corpus_config.QUICK_SIZES)")
    parser.add_argument("--corpus-config", type=Path, help="JSON overrides of local/synth/corpus_config.py")
    parser.add_argument("--german", action="store_true", help="the german domain too (German fortunes, German voices)")
    for domain in ALL_DOMAINS:
        for split in SPLITS:
            parser.add_argument(
                f"--{domain.replace('_', '-')}-{split}", dest=f"{domain}_{split}", type=int, help=f"utterances in {domain} {split}"
            )


def config_from_args(args: argparse.Namespace) -> CorpusConfig:
    sizes = {d: {s: getattr(args, f"{d}_{s}") for s in SPLITS} for d in ALL_DOMAINS}
    domains = ALL_DOMAINS if args.german else DOMAINS
    return load_config(seed=args.seed, quick=args.quick, config_file=args.corpus_config, sizes=sizes, domains=domains)


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("stage", choices=["text", "audio"])
    parser.add_argument("--text-dir", type=Path, default=Path("data/local/text"))
    parser.add_argument("--audio-dir", type=Path, default=Path("data/audio"))
    parser.add_argument("--manifest-dir", type=Path, default=Path("data/manifests"))
    parser.add_argument("--num-jobs", type=int, default=2)
    add_config_arguments(parser)
    return parser


def main() -> None:
    args = get_parser().parse_args()
    logging.basicConfig(format="%(asctime)s %(levelname)s [%(filename)s:%(lineno)d] %(message)s", level=logging.INFO)
    with exit_on_user_error():
        config = config_from_args(args)
        if args.stage == "text":
            prepare_text(config, args.text_dir)
        else:
            prepare_audio(config, args.text_dir, args.audio_dir, args.manifest_dir, args.num_jobs)


if __name__ == "__main__":
    main()
