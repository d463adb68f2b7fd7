"""Writing manifests without ever leaving a half-written file, and stage up-to-date checks."""
import os
from pathlib import Path
from typing import Any, Iterable


def temp_path(path: Path) -> Path:
    """A hidden sibling of `path` with the same suffixes (lhotse picks the format from them)."""
    path = Path(path)
    return path.with_name(f".tmp-{os.getpid()}-{path.name}")


def atomic_save(manifest: Any, path: Path) -> None:
    """Save a lhotse manifest (RecordingSet, SupervisionSet, CutSet) to `path` via a temp name."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(path)
    try:
        manifest.to_file(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_text(path: Path, text: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(path)
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def up_to_date(outputs: Iterable[Path], inputs: Iterable[Path] = ()) -> bool:
    """True when every output exists and none is older than any existing input (like make)."""
    outputs = [Path(p) for p in outputs]
    if not outputs or not all(p.is_file() or p.is_dir() for p in outputs):
        return False
    input_times = [Path(p).stat().st_mtime for p in inputs if Path(p).exists()]
    oldest_output = min(p.stat().st_mtime for p in outputs)
    return not input_times or oldest_output >= max(input_times)
