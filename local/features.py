"""80-dim Fbank features of cut sets into lilcom storage, in parallel for large sets, with speed
perturbation: what every preparation path (embedded corpus, LibriSpeech, GigaSpeech, own data) calls."""
import logging
import math
import multiprocessing
import shutil
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import List, Sequence

import torch
from lhotse import CutSet, Fbank, FbankConfig, LilcomChunkyWriter, RecordingSet, SupervisionSet
from lhotse.manipulation import combine

from local.manifest_io import atomic_save
from local.progress import ProgressLog
from local.validate import validate_manifests
from zipformer.core.errors import UserError
from zipformer.model.frontend import FEATURE_DIM

SPEED_FACTORS = (0.9, 1.1)
# Below this much audio, spawning worker processes (each imports torch) costs more than it saves.
PARALLEL_MIN_SECONDS = 1800.0


def _single_thread_worker() -> None:
    # Each worker process computes features for its own chunk: more threads would oversubscribe.
    torch.set_num_threads(1)


def _extract_chunk(cuts: CutSet, storage_path: Path) -> CutSet:
    extractor = Fbank(FbankConfig(num_mel_bins=FEATURE_DIM))
    return cuts.compute_and_store_features(
        extractor=extractor,
        storage_path=storage_path,
        num_jobs=1,
        storage_type=LilcomChunkyWriter,
        progress_bar=False,
    )


def speed_perturb(cuts: CutSet, factors: Sequence[float] = SPEED_FACTORS) -> CutSet:
    """The cuts plus one copy per factor (ids suffixed `_sp{factor}`)."""
    cuts = cuts.to_eager()
    return combine([cuts] + [cuts.perturb_speed(f).to_eager() for f in factors]).to_eager()


def compute_features_for_cuts(cuts: CutSet, storage_dir: Path, num_jobs: int = 1, what: str = "fbank") -> CutSet:
    """Compute and store 80-dim Fbank of every cut in lilcom files under `storage_dir`.

    Returns the eager CutSet with features (each cut: features of shape (num_frames, 80), with
    num_frames = round(duration / 0.01)). Raises UserError when the audio of a cut cannot be loaded.
    Small sets run in this process; sets longer than PARALLEL_MIN_SECONDS use `num_jobs` spawned
    processes, so call it from under `if __name__ == "__main__":` then.
    """
    cuts = cuts.to_eager()
    storage_dir = Path(storage_dir)
    if storage_dir.exists():
        shutil.rmtree(storage_dir)  # stale chunk files of an earlier run
    storage_dir.mkdir(parents=True)
    total_seconds = sum(c.duration for c in cuts)
    parallel = num_jobs > 1 and total_seconds > PARALLEL_MIN_SECONDS
    cut_list = list(cuts)
    chunk_size = max(25, math.ceil(len(cut_list) / (num_jobs * 8 if parallel else 10)))
    chunks = [CutSet.from_cuts(cut_list[i : i + chunk_size]) for i in range(0, len(cut_list), chunk_size)]
    progress = ProgressLog(what, len(cut_list))
    results: List[CutSet] = []
    if parallel:
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(num_jobs, mp_context=context, initializer=_single_thread_worker) as pool:
            futures = [
                (pool.submit(_extract_chunk, chunk, storage_dir / f"feats-{index}"), chunk)
                for index, chunk in enumerate(chunks)
            ]
            for future, chunk in futures:
                results.append(future.result())
                progress.update(audio_seconds=sum(c.duration for c in chunk), count=len(chunk))
    else:
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # Fbank of one utterance gains nothing from threads, and they contend
        try:
            for index, chunk in enumerate(chunks):
                results.append(_extract_chunk(chunk, storage_dir / f"feats-{index}"))
                progress.update(audio_seconds=sum(c.duration for c in chunk), count=len(chunk))
        finally:
            torch.set_num_threads(threads)
    progress.finish()
    with_feats = combine(results).to_eager()
    missing = set(cuts.ids) - set(with_feats.ids)
    if missing:
        example = sorted(missing)[0]
        raise UserError(
            f"{len(missing)} cut(s) lost in feature extraction because their audio could not be "
            f"loaded, e.g. '{example}': check its audio file"
        )
    return with_feats


def compute_fbank_for_manifests(
    recordings_path: Path,
    supervisions_path: Path,
    cuts_path: Path,
    storage_dir: Path,
    num_jobs: int = 1,
    perturb_speed: bool = False,
    trim_to_supervisions: bool = False,
) -> CutSet:
    """Validate one part's manifests, compute its features and write `cuts_path` atomically."""
    for path in (recordings_path, supervisions_path):
        if not Path(path).is_file():
            raise UserError(f"manifest {path} not found: run the manifest stage first")
    recordings = RecordingSet.from_file(recordings_path).to_eager()
    supervisions = SupervisionSet.from_file(supervisions_path).to_eager()
    logging.info(f"validating {recordings_path.name} + {supervisions_path.name}")
    validate_manifests(recordings, supervisions)
    cuts = CutSet.from_manifests(recordings=recordings, supervisions=supervisions)
    if trim_to_supervisions:
        cuts = cuts.trim_to_supervisions(keep_overlapping=False)
    if perturb_speed:
        cuts = speed_perturb(cuts)
    cuts = compute_features_for_cuts(cuts, storage_dir, num_jobs=num_jobs, what=f"fbank {cuts_path.name}")
    atomic_save(cuts, cuts_path)
    logging.info(f"wrote {cuts_path} ({len(cuts)} cuts, {sum(c.duration for c in cuts) / 3600:.3f} h)")
    return cuts
