"""local/reports/summarize_run.py: the training figures of the summary table, read from a training log."""
from pathlib import Path

from local.reports.result_files import training_stats
from local.reports.summarize_run import build_summary

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


def test_the_summary_reads_the_averaged_adapters_decode(tmp_path: Path):
    def wer_file(exp: str, test_set: str, suffix: str, wer: float) -> None:
        res_dir = tmp_path / exp / "greedy_search"
        res_dir.mkdir(parents=True, exist_ok=True)
        (res_dir / f"wer-summary-{test_set}-greedy_search-{suffix}.txt").write_text(f"settings\tWER\ngreedy_search\t{wer}\n")

    common = "context-2-max-sym-per-frame-1"
    wer_file("adapter_dim8", "target", f"epoch-6-avg-1-{common}-adapters-dim-8", 51.0)  # the last epoch alone
    wer_file("adapter_dim8", "target", f"epoch-6-avg-2-{common}-adapters-dim-8-use-averaged-model", 49.5)
    wer_file("adapter_dim8", "source", f"epoch-6-avg-2-{common}-adapters-off-use-averaged-model", 32.6)
    wer_file("adapter_dim8", "target", "sherpa-onnx-epoch-6-avg-2", 49.4)
    summary = build_summary(tmp_path, 8, 6, 2, adapter_avg=2, adapter_averaged=True)
    assert "| + adapters dim 8 (after) | 49.50 " in summary
    assert "| same checkpoint, `--use-adapters 0` | — | 32.60 | — |" in summary
    assert "fp32 49.40" in summary
    assert "| + adapters dim 8 (after) | 51.00 " in build_summary(tmp_path, 8, 6, 2)
