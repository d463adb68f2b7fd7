"""The files behind a cut set's features (or audio): checked before training, tolerated if they vanish during it.

`check_storage_files` stats each distinct file once, so a missing feature file is a one-line error
before the first batch instead of a crash mid-epoch. `SkipUnreadableCuts` wraps the training
dataset: a cut whose file disappears later is left out of its batch and named in
`batch["skipped_cuts"]`, which the training loop counts.
"""
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional

from lhotse import CutSet
from lhotse.cut import Cut
from torch.utils.data import Dataset

from zipformer.core.errors import UserError

# lhotse feature storages with one file per cut (storage_path is a directory, storage_key the file).
_FILE_PER_CUT = ("lilcom_files", "numpy_files")
# Storages whose storage_path is one file holding many cuts.
_ONE_FILE = ("lilcom_chunky", "numpy_hdf5", "lilcom_hdf5", "chunked_lilcom_hdf5")
# What reading a missing or damaged feature/audio file raises inside lhotse (HDF5: KeyError).
LOAD_ERRORS = (OSError, EOFError, ValueError, KeyError)


def storage_file(cut: Cut, audio: bool) -> Optional[Path]:
    """The file a cut's features (or, with `audio`, its recording) are read from; None when not a local file."""
    if audio:
        sources = [s.source for s in cut.recording.sources if s.type == "file"] if cut.has_recording else []
        return Path(sources[0]) if sources else None
    if not cut.has_features:
        return None
    features = cut.features
    if features.storage_type in _FILE_PER_CUT:
        return Path(features.storage_path) / features.storage_key
    if features.storage_type in _ONE_FILE:
        return Path(features.storage_path)
    return None


def check_storage_files(cuts: Iterable[Cut], flag: str, audio: bool = False) -> None:
    """UserError naming the first missing file (and how many are missing) of the cuts' features or audio."""
    seen: Dict[Path, str] = {}
    for cut in cuts:
        path = storage_file(cut, audio)
        if path is not None and path not in seen:
            seen[path] = cut.id
    missing = [path for path in seen if not path.is_file()]
    if missing:
        what = "audio" if audio else "feature"
        raise UserError(
            f"{len(missing)} of the {len(seen)} {what} files of the cuts in {flag} are missing, e.g. {missing[0]} "
            f"(cut {seen[missing[0]]}): re-run the ./prepare.sh stage that writes them, or fix the cut manifest"
        )


class SkipUnreadableCuts(Dataset):
    """A batch dataset that leaves out the cuts whose features (or audio) cannot be read."""

    def __init__(self, dataset: Dataset, audio: bool = False) -> None:
        self.dataset = dataset
        self.audio = audio

    def _readable(self, cut: Cut) -> bool:
        try:
            cut.load_audio() if self.audio else cut.load_features()
        except LOAD_ERRORS:
            return False
        return True

    def __getitem__(self, cuts: CutSet) -> Dict[str, Any]:
        try:
            return self.dataset[cuts]
        except LOAD_ERRORS:
            readable = [cut for cut in cuts if self._readable(cut)]
            readable_ids = {cut.id for cut in readable}
            skipped: List[str] = [cut.id for cut in cuts if cut.id not in readable_ids]
            if not readable:
                # Nothing to train on: the training loop stops with a message naming the cuts.
                return {"skipped_cuts": skipped}
            batch = self.dataset[CutSet.from_cuts(readable)]
            batch["skipped_cuts"] = skipped
            return batch
