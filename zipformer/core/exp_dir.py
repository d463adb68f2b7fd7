"""Claiming an --exp-dir for one training run: create it, prove it writable, lock it.

Two trainings into one directory would overwrite each other's checkpoints and logs, so a run holds
`{exp_dir}/.train.lock` (holding its pid and host) until it exits. A lock whose process is gone (a
run killed with SIGKILL) is stale: the next run says so and takes it over.
"""
import logging
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from zipformer.core.atomic import process_alive, remove_stale_temp_files
from zipformer.core.errors import UserError

LOCK_NAME = ".train.lock"
_PROBE_NAME = ".write-probe"


def check_writable(exp_dir: Path) -> None:
    """Create `exp_dir` and write, sync and remove a probe file in it, or raise UserError."""
    try:
        exp_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create --exp-dir {exp_dir} ({e.strerror}): pass a directory you can write to") from None
    probe = exp_dir / _PROBE_NAME
    try:
        with open(probe, "wb") as f:
            f.write(b"probe")
            f.flush()
            os.fsync(f.fileno())
        probe.unlink()
    except OSError as e:
        raise UserError(f"--exp-dir {exp_dir} is not writable ({e.strerror}): pass a directory you can write to") from None


def _lock_owner(lock: Path) -> tuple[int, str]:
    """(pid, host) written in a lock file; (0, "") when it is unreadable (a crash mid-write)."""
    try:
        pid, host = lock.read_text().split()[:2]
        return int(pid), host
    except (OSError, ValueError):
        return 0, ""


def _take_lock(lock: Path) -> None:
    host = socket.gethostname()
    while True:
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            pid, owner_host = _lock_owner(lock)
            if owner_host and owner_host != host:
                raise UserError(
                    f"{lock.parent} is locked by pid {pid} on host {owner_host}: wait for that training to finish, "
                    f"use another --exp-dir, or delete {lock} if it is no longer running"
                ) from None
            if pid > 0 and process_alive(pid):
                raise UserError(
                    f"another training (pid {pid}) is using --exp-dir {lock.parent}: wait for it to finish or "
                    "pass another --exp-dir"
                ) from None
            logging.warning(f"Removing the stale lock {lock} of pid {pid}, which is no longer running")
            lock.unlink(missing_ok=True)
            continue
        with os.fdopen(fd, "w") as f:
            f.write(f"{os.getpid()} {host}\n")
        return


@contextmanager
def claim_exp_dir(exp_dir: Path) -> Iterator[None]:
    """Check that `exp_dir` is writable, lock it for this process, and clean temp files of dead runs.

    The lock is released when the block exits, however it exits (a SIGKILL leaves a stale lock,
    which the next run takes over).
    """
    exp_dir = Path(exp_dir)
    check_writable(exp_dir)
    lock = exp_dir / LOCK_NAME
    _take_lock(lock)
    try:
        for path in remove_stale_temp_files(exp_dir):
            logging.warning(f"Removed {path.name}, a partial file left by a run that was killed while writing it")
        yield
    finally:
        if _lock_owner(lock)[0] == os.getpid():
            lock.unlink(missing_ok=True)
