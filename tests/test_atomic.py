"""The one atomic writer: no half-written file, no temp file left, stale temp files of dead runs removed."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

from zipformer.core.atomic import TEMP_PREFIX, atomic_open, remove_stale_temp_files, temp_path, write_atomically


def test_atomic_open_leaves_old_file_on_failure(tmp_path: Path) -> None:
    path = tmp_path / "errs.txt"
    path.write_text("old\n")
    with pytest.raises(RuntimeError):
        with atomic_open(path) as f:
            f.write("half")
            raise RuntimeError("interrupted")
    assert path.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["errs.txt"]


def test_write_atomically_replaces_and_keeps_the_suffixes(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "cuts.jsonl.gz"
    seen = []
    write_atomically(path, lambda tmp: (seen.append(tmp.name), tmp.write_bytes(b"new")))
    assert path.read_bytes() == b"new"
    assert seen[0].startswith(TEMP_PREFIX) and seen[0].endswith(".jsonl.gz")
    assert [p.name for p in path.parent.iterdir()] == ["cuts.jsonl.gz"]


def test_temp_names_are_unique_and_hidden(tmp_path: Path) -> None:
    a, b = temp_path(tmp_path / "checkpoint-4.pt"), temp_path(tmp_path / "checkpoint-4.pt")
    assert a != b
    assert a.name.startswith(".") and not list(tmp_path.glob("checkpoint-*.pt"))


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_stale_temp_files_of_dead_writers_are_removed(tmp_path: Path) -> None:
    stale = tmp_path / f"{TEMP_PREFIX}{_dead_pid()}-0123abcd-checkpoint-8.pt"
    live = tmp_path / f"{TEMP_PREFIX}{os.getpid()}-89abcdef-epoch-2.pt"
    other = tmp_path / ".tmp-notes.txt"  # not this project's naming: left alone
    for path in (stale, live, other):
        path.write_bytes(b"x")
    assert remove_stale_temp_files(tmp_path) == [stale]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([live.name, other.name])
    assert remove_stale_temp_files(tmp_path / "missing") == []
