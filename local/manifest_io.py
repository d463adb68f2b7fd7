"""Writing manifests without ever leaving a half-written file, and stage up-to-date checks."""
from pathlib import Path
from typing import Any, Iterable

from zipformer.core.atomic import write_atomically


def atomic_save(manifest: Any, path: Path) -> None:
    """Save a lhotse manifest (RecordingSet, SupervisionSet, CutSet) to `path` via a temp name."""
    write_atomically(path, manifest.to_file)


def up_to_date(outputs: Iterable[Path], inputs: Iterable[Path] = ()) -> bool:
    """True when every output exists and none is older than any existing input (like make)."""
    outputs = [Path(p) for p in outputs]
    if not outputs or not all(p.is_file() or p.is_dir() for p in outputs):
        return False
    input_times = [Path(p).stat().st_mtime for p in inputs if Path(p).exists()]
    oldest_output = min(p.stat().st_mtime for p in outputs)
    return not input_times or oldest_output >= max(input_times)
