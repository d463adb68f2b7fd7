"""zipformer/core/exp_dir.py: an --exp-dir is writable, locked by one training at a time, and cleaned of dead runs' temp files."""
import socket
import subprocess
import sys
from pathlib import Path

import pytest

import zipformer.core.exp_dir as exp_dir_module
from zipformer.core.errors import UserError
from zipformer.core.exp_dir import LOCK_NAME, check_writable, claim_exp_dir

from conftest import TINY_MODEL_FLAGS, data_flags, run_script


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_second_claim_is_refused_and_the_lock_goes_with_the_run(tmp_path: Path):
    with claim_exp_dir(tmp_path / "exp"):
        assert (tmp_path / "exp" / LOCK_NAME).is_file()
        with pytest.raises(UserError, match=r"another training \(pid \d+\) is using --exp-dir .*exp: wait for it"):
            with claim_exp_dir(tmp_path / "exp"):
                pass
        assert (tmp_path / "exp" / LOCK_NAME).is_file(), "the refused claim must not remove the holder's lock"
    assert not (tmp_path / "exp" / LOCK_NAME).exists()
    with pytest.raises(RuntimeError):
        with claim_exp_dir(tmp_path / "exp"):
            raise RuntimeError("training failed")
    assert not (tmp_path / "exp" / LOCK_NAME).exists()


def test_a_stale_lock_is_taken_over_with_a_warning(tmp_path: Path, caplog):
    (tmp_path / LOCK_NAME).write_text(f"{dead_pid()} {socket.gethostname()}\n")
    with caplog.at_level("WARNING"), claim_exp_dir(tmp_path):
        pass
    assert "Removing the stale lock" in caplog.text and "no longer running" in caplog.text


def test_claiming_removes_the_temp_files_of_killed_runs(tmp_path: Path):
    stale = tmp_path / f".tmp-{dead_pid()}-0123abcd-checkpoint-4.pt"
    stale.write_bytes(b"half")
    kept = tmp_path / "checkpoint-4.pt"
    kept.write_bytes(b"whole")
    with claim_exp_dir(tmp_path):
        assert not stale.exists() and kept.exists()


def test_an_exp_dir_that_cannot_be_created_or_written_is_one_clear_error(tmp_path: Path, monkeypatch):
    (tmp_path / "file").write_text("not a directory")
    with pytest.raises(UserError, match=r"cannot create --exp-dir .*file/exp \(Not a directory\): pass a directory"):
        check_writable(tmp_path / "file" / "exp")

    def read_only(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(exp_dir_module, "open", read_only, raising=False)
    with pytest.raises(UserError, match=r"--exp-dir .* is not writable \(Permission denied\)"):
        check_writable(tmp_path / "exp")


@pytest.mark.slow
def test_a_second_training_into_a_locked_exp_dir_is_refused(tiny_corpus, tmp_path: Path):
    with claim_exp_dir(tmp_path):
        proc = run_script("zipformer/train.py", "--exp-dir", tmp_path, "--num-epochs", "1", "--tensorboard", "0",
                          *TINY_MODEL_FLAGS, *data_flags(tiny_corpus), check=False)
    assert proc.returncode != 0
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: another training (pid ") and "pass another --exp-dir" in last
    assert not list(tmp_path.glob("*.pt"))
