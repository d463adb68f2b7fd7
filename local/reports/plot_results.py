#!/usr/bin/env python3
"""Draw the figures of RESULTS.md from the main job's logs and result files (PNG).

  loss_curves.png         target-dev loss of adapter vs full fine-tuning, and the validation losses
                          of the base model's pretraining (pretrained/log-train.txt)
  wer_vs_adapter_dim.png  target/source test WER against the adapter bottleneck dim (the sweep)

Usage: ./local/reports/plot_results.py --exp-root exp --adapter-dims 8,16,32 --out-dir .
"""
import argparse
import re
from pathlib import Path
from typing import Dict, List, Tuple

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt

from local.reports.result_files import GREEDY, read_wer
from zipformer.core.errors import fail

VALID_LINE = re.compile(r"Epoch (\d+), validation on (\w+): loss=([\d.]+),")


def valid_curves(log_text: str) -> Dict[str, Tuple[List[int], List[float]]]:
    """{valid set name: (epoch, loss)}; the last value logged for an epoch wins (resumed runs repeat some)."""
    per_set: Dict[str, Dict[int, float]] = {}
    for epoch, name, loss in VALID_LINE.findall(log_text):
        per_set.setdefault(name, {})[int(epoch)] = float(loss)
    return {name: (sorted(values), [values[e] for e in sorted(values)]) for name, values in per_set.items()}


def read_log(exp_dir: Path) -> str:
    return "\n".join(p.read_text() for p in sorted((exp_dir / "log").glob("log-train-*")))


def plot_loss_curves(exp_root: Path, adapter_dim: int, pretrain_log: Path, out: Path) -> None:
    fig, (ax_ft, ax_pre) = plt.subplots(1, 2, figsize=(11, 4))
    for label, exp_dir in ((f"adapters (dim {adapter_dim})", exp_root / f"adapter_dim{adapter_dim}"),
                           ("full fine-tuning", exp_root / "full_finetune")):
        epochs, losses = valid_curves(read_log(exp_dir)).get("target", ([], []))
        if epochs:
            # Validation runs at the start of each epoch: epoch N shows the model after N - 1 epochs.
            ax_ft.plot([e - 1 for e in epochs], losses, marker="o", label=label)
    ax_ft.set(title="Fine-tuning on the target domain", xlabel="epochs trained",
              ylabel="target dev loss per frame")
    ax_ft.legend()
    if pretrain_log.is_file():
        for name, (epochs, losses) in valid_curves(pretrain_log.read_text()).items():
            ax_pre.plot(epochs, losses, marker="o", label=f"validation on {name}")
        ax_pre.legend()
    ax_pre.set(title="Base model pretraining (source domain)", xlabel="epoch (validation at its start)",
               ylabel="validation loss per frame")
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    print(f"wrote {out}")


def plot_wer_vs_dim(exp_root: Path, dims: List[int], adapter_epochs: int, out: Path) -> None:
    base = {s: read_wer(exp_root / "base" / GREEDY, s, "epoch-99-avg-1-*") for s in ("target", "source")}
    fig, ax = plt.subplots(figsize=(6, 4))
    for test_set, marker in (("target", "o"), ("source", "s")):
        points = [(d, read_wer(exp_root / f"adapter_dim{d}" / GREEDY, test_set,
                               f"epoch-{adapter_epochs}-avg-1-*-adapters-dim-{d}")) for d in dims]
        points = [(d, w) for d, w in points if w is not None]
        if points:
            ax.plot([d for d, _ in points], [w for _, w in points], marker=marker, label=f"{test_set} test, adapters on")
        if base[test_set] is not None:
            ax.axhline(base[test_set], linestyle="--", color="gray")
            ax.annotate(f"base, {test_set} test", (dims[0], base[test_set]), textcoords="offset points", xytext=(0, 4))
    ax.set_xscale("log", base=2)
    ax.set_xticks(dims, [str(d) for d in dims])
    ax.set(title="WER against the adapter bottleneck dim", xlabel="adapter dim", ylabel="WER %")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    print(f"wrote {out}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--exp-root", type=Path, default=Path("exp"))
    parser.add_argument("--adapter-dims", default="8,16,32", help="comma-separated dims of the sweep")
    parser.add_argument("--adapter-dim", type=int, default=8, help="the dim whose training curve is drawn")
    parser.add_argument("--adapter-epochs", type=int, default=6)
    parser.add_argument("--pretrain-log", type=Path, default=Path("pretrained/log-train.txt"))
    parser.add_argument("--out-dir", type=Path, default=Path("."))
    args = parser.parse_args()
    if not args.exp_root.is_dir():
        fail(f"{args.exp_root} does not exist: run ./run.sh first (or pass --exp-root)")
    args.out_dir.mkdir(parents=True, exist_ok=True)
    dims = [int(d) for d in args.adapter_dims.split(",")]
    plot_loss_curves(args.exp_root, args.adapter_dim, args.pretrain_log, args.out_dir / "loss_curves.png")
    plot_wer_vs_dim(args.exp_root, dims, args.adapter_epochs, args.out_dir / "wer_vs_adapter_dim.png")


if __name__ == "__main__":
    main()
