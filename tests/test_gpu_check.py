"""local/benchmarks/gpu_check.py on CPU with a tiny model: every report line, and the one-line stop on a non-finite loss."""
import math
import sys

import pytest

import local.benchmarks.gpu_check as gpu_check

from conftest import TINY_MODEL_FLAGS, run_script

TINY_CHECK_FLAGS = [
    *TINY_MODEL_FLAGS,
    "--adapter-dim", "4",
    "--batches", "3",
    "--warmup-batches", "1",
    "--max-duration", "12",
    "--seconds", "2,3",
    "--vocab-size", "50",
    "--backend-runs", "1",
]


@pytest.mark.slow
def test_reports_training_backends_and_decoding_on_cpu() -> None:
    out = run_script("local/benchmarks/gpu_check.py", *TINY_CHECK_FLAGS).stdout
    lines = dict(line.split(": ", 1) for line in out.splitlines())
    assert lines["device"].startswith("CPU (no CUDA GPU), float32")
    assert lines["train"].startswith("3 batches, median step")
    assert "utterances/s" in lines["throughput"]
    assert "peak resident memory" in lines
    assert lines["grad scale"] == "none (float32)"
    per_frame = float(lines["loss"].split()[0])
    assert math.isfinite(per_frame) and per_frame > 0
    assert "simple loss" in lines["rnnt backend torch"]
    assert {"rnnt backend k2", "rnnt backend fast_rnnt"} <= set(lines)
    assert lines["greedy decoding"].startswith("4 utterances")


def test_a_non_finite_loss_stops_with_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    real_compute_loss = gpu_check.compute_loss

    def diverging(params, model, sp, batch, is_training, state):
        loss, info = real_compute_loss(params, model, sp, batch, is_training, state)
        if state.batch_idx_train == 2:
            info["loss"] = math.nan
        return loss, info

    monkeypatch.setattr(gpu_check, "compute_loss", diverging)
    monkeypatch.setattr(sys, "argv", ["gpu_check.py", *TINY_CHECK_FLAGS])
    with pytest.raises(SystemExit) as stop:
        gpu_check.main()
    message = str(stop.value.code)
    assert message.startswith("error: non-finite loss nan at batch 2") and "\n" not in message
