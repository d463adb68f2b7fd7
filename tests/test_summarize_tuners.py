"""local/reports/summarize_tuners.py: the side-by-side table and plot, read from compare_tuners.sh's files."""
from pathlib import Path

from local.reports.summarize_tuners import plot, table

LOG = """\
2026-12-03 14:18:41,731 INFO [training.py:411] A total of 146688 trainable parameters (4.033% of the whole model)
2026-12-03 14:22:01,220 INFO [training.py:600] Epoch 1 done in 197.1 s: 14.5 s of audio/s, peak memory 1009 MB, resident after freeing 507 MB
2026-12-03 14:25:31,660 INFO [training.py:600] Epoch 2 done in 210.9 s: 13.7 s of audio/s, peak memory 1276 MB, resident after freeing 513 MB
"""


def wer_file(res_dir: Path, test_set: str, suffix: str, wer: float) -> None:
    res_dir.mkdir(parents=True, exist_ok=True)
    (res_dir / f"wer-summary-{test_set}-greedy_search-{suffix}.txt").write_text(f"settings\tWER\ngreedy_search\t{wer}\n")


def fake_exp_root(root: Path) -> Path:
    wer_file(root / "base" / "greedy_search", "target", "epoch-99-avg-1-context-2", 69.2)
    wer_file(root / "base" / "greedy_search", "source", "epoch-99-avg-1-context-2", 32.6)
    lora = root / "lora8"
    (lora / "log").mkdir(parents=True)
    (lora / "log" / "log-train-2026-12-03-14-18-40").write_text(LOG)
    wer_file(lora / "greedy_search", "target", "epoch-3-avg-1-context-2-lora-r-8", 52.03)
    wer_file(lora / "greedy_search", "source", "epoch-3-avg-1-context-2-lora-r-8", 32.92)
    wer_file(lora / "greedy_search", "source", "epoch-3-avg-1-context-2-lora-off", 32.6)
    for name in ("encoder", "decoder", "joiner"):
        (lora / f"{name}-epoch-3-avg-1-lora-merged.int8.onnx").write_bytes(b"x" * 1_000_000)
    wer_file(lora / "onnx" / "greedy_search", "target", "onnx-epoch-3", 52.11)
    (lora / "onnx" / "greedy_search" / "log-decode-onnx-epoch-3").write_text("... real-time factor 0.0174\n")
    return root


def test_table_has_a_row_per_method_that_ran(tmp_path: Path):
    lines = table(fake_exp_root(tmp_path), epochs=3)
    rows = [line for line in lines if line.startswith("| ") and "---" not in line][1:]
    assert rows == [
        "| base model | — | 69.20 | 32.60 | — | — | — |",
        "| LoRA, r 8 | 146,688 (4.033%) | 52.03 | 32.92 / 32.60 | 204 | 1276 | 3.00 MB, RTF 0.0174, WER 52.11 |",
    ]


def test_plot_draws_the_methods(tmp_path: Path):
    exp_root = fake_exp_root(tmp_path / "exp")
    plot(exp_root, 3, tmp_path / "plot.png")
    assert (tmp_path / "plot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
