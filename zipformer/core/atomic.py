"""Writing files so that a reader never sees half of one: write a hidden temp file, then rename.

Every file this project writes (checkpoints, tuner files, manifests, result files, ONNX models)
goes through `write_atomically`. A crash or error mid-write leaves any previous file intact; the
temp file is removed on error, and one left by a killed process (SIGKILL, power loss) is named
`.tmp-{pid}-{random}-{name}`, so `remove_stale_temp_files` can find it at the next start.
"""
import os
import re
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO, Union

PathLike = Union[str, Path]

TEMP_PREFIX = ".tmp-"
_TEMP_NAME = re.compile(rf"^{re.escape(TEMP_PREFIX)}(\d+)-[0-9a-f]{{8}}-.+")


def temp_path(path: PathLike) -> Path:
    """A hidden, unique sibling of `path` that ends with the same suffixes.

    The leading dot keeps it out of globs such as `checkpoint-*.pt`; the suffixes are kept
    because some writers choose the format from them (lhotse's `.jsonl.gz`). Not mkstemp: its
    0600 mode would stick to the final file.
    """
    path = Path(path)
    return path.with_name(f"{TEMP_PREFIX}{os.getpid()}-{uuid.uuid4().hex[:8]}-{path.name}")


def write_atomically(path: PathLike, write: Callable[[Path], None]) -> None:
    """Run write(tmp) on a temp file beside `path`, fsync it, then rename it over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(path)
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextmanager
def atomic_open(path: PathLike) -> Iterator[TextIO]:
    """Open `path` for writing UTF-8 text; it appears (replacing any old file) only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(path)
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            yield f
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_text(path: PathLike, text: str) -> None:
    with atomic_open(path) as f:
        f.write(text)


def process_alive(pid: int) -> bool:
    """True when a process with this pid exists (perhaps owned by another user)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temp_files(directory: PathLike) -> list[Path]:
    """Delete temp files of this project's naming in `directory` whose writer process is gone.

    Returns what was removed. Files of a live process (another run writing now) are kept.
    """
    directory = Path(directory)
    if not directory.is_dir():
        return []
    removed = []
    for path in directory.iterdir():
        match = _TEMP_NAME.match(path.name)
        if match and path.is_file() and not process_alive(int(match.group(1))):
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed
