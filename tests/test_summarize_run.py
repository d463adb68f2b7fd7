"""local/summarize_run.py: the training figures of the summary table, read from a training log."""
from pathlib import Path

from local.summarize_run import training_stats

LOG = """\
2026-11-24 09:23:58,001 INFO [training.py:360] A total of 52416 trainable parameters (1.480% of the whole model)
2026-11-24 09:25:06,332 INFO [training.py:495] Epoch 1 done in 68.3 s: 42.0 s of audio/s, peak memory 999 MB
2026-11-24 09:26:28,911 INFO [training.py:495] Epoch 2 done in 71.7 s: 40.0 s of audio/s, peak memory 1553 MB
"""


def test_training_stats_average_the_epochs_and_take_the_largest_peak_memory(tmp_path: Path):
    (tmp_path / "log").mkdir()
    (tmp_path / "log" / "log-train-2026-11-24-09-23-57").write_text(LOG)
    stats = training_stats(tmp_path)
    assert stats == {"trainable": "52,416 (1.480%)", "s_per_epoch": "70", "throughput": "41.0", "peak_mb": "1553"}


def test_training_stats_without_a_log_are_empty(tmp_path: Path):
    assert training_stats(tmp_path) == {}
