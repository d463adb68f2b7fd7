"""local/reports/plot_results.py: log parsing and the PNG files."""
from pathlib import Path

from local.reports.plot_results import main as plot_main
from local.reports.plot_results import valid_curves

LOG = """\
2026-11-24 06:28:42,381 INFO [training.py:531] Epoch 1, batch 0, loss[loss=0.9, simple_loss=0.8], tot_loss[loss=0.9257, simple_loss=0.8672]
2026-11-24 06:28:42,381 INFO [training.py:552] Epoch 1, validation on target: loss=0.8058, simple_loss=0.766
2026-11-24 06:29:42,381 INFO [training.py:531] Epoch 1, batch 20, loss[loss=0.8, simple_loss=0.8], tot_loss[loss=0.9208, simple_loss=0.8]
2026-11-24 06:30:42,381 INFO [training.py:531] Epoch 2, batch 0, loss[loss=0.8, simple_loss=0.8], tot_loss[loss=0.8277, simple_loss=0.8]
2026-11-24 06:30:42,381 INFO [training.py:552] Epoch 2, validation on target: loss=0.7990, simple_loss=0.766
2026-11-24 06:31:42,381 INFO [training.py:552] Epoch 2, validation on target: loss=0.7980, simple_loss=0.766
"""


def test_validation_curve_keeps_the_last_value_of_a_repeated_epoch():
    assert valid_curves(LOG) == {"target": ([1, 2], [0.8058, 0.7980])}


def test_writes_both_figures(tmp_path: Path, monkeypatch):
    exp_root = tmp_path / "exp"
    (exp_root / "adapter_dim8" / "log").mkdir(parents=True)
    (exp_root / "adapter_dim8" / "log" / "log-train-1").write_text(LOG)
    pretrain_log = tmp_path / "log-train.txt"
    pretrain_log.write_text(LOG)
    out_dir = tmp_path / "figures"
    monkeypatch.setattr(
        "sys.argv",
        ["plot_results.py", "--exp-root", str(exp_root), "--pretrain-log", str(pretrain_log), "--out-dir", str(out_dir)],
    )
    plot_main()
    for name in ("loss_curves.png", "wer_vs_adapter_dim.png"):
        assert (out_dir / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
