#!/usr/bin/env python3
"""The table of local/benchmarks/compare_tuners.sh: $exp_root/summary.md (printed too).

Per method: trainable parameters, target and source test WER (tuner on / off), seconds per epoch
and peak memory of the fine-tune, and the deployed int8 ONNX files (size, onnxruntime real-time
factor and WER on the target test set). With --plot FILE it also draws the target test WER against
the number of trainable parameters.
"""
import argparse
import re
from datetime import datetime
from pathlib import Path
from typing import List, Optional

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt

from local.reports.result_files import fmt, read_wer, training_stats
from zipformer.core.atomic import atomic_write_text

METHODS = {
    "adapter8": ("adapters, dim 8", "-adapters-dim-8", "-adapters-off"),
    "adapter16": ("adapters, dim 16", "-adapters-dim-16", "-adapters-off"),
    "lora4": ("LoRA, r 4", "-lora-r-4", "-lora-off"),
    "lora8": ("LoRA, r 8", "-lora-r-8", "-lora-off"),
    "lora16": ("LoRA, r 16", "-lora-r-16", "-lora-off"),
    "full": ("full fine-tuning", "", None),
}


def onnx_stats(method_dir: Path) -> str:
    """'size MB, RTF r, WER w' of the int8 files and their onnxruntime decode, or '—'."""
    files = sorted(method_dir.glob("*.int8.onnx"))
    logs = sorted((method_dir / "onnx" / "greedy_search").glob("log-decode-*"))
    if not files or not logs:
        return "—"
    size = sum(f.stat().st_size for f in files) / 1e6
    rtf = re.findall(r"real-time factor ([\d.]+)", logs[-1].read_text())
    wer = read_wer(method_dir / "onnx" / "greedy_search", "target", "*")
    return f"{size:.2f} MB, RTF {rtf[-1] if rtf else '?'}, WER {fmt(wer)}"


def table(exp_root: Path, epochs: int) -> List[str]:
    res = "greedy_search"
    base_dir = exp_root / "base" / res
    lines = [
        f"Embedded story, base pretrained/base.pt, {epochs} epochs of the target train set per method "
        "(./local/benchmarks/compare_tuners.sh); greedy search, WER %.",
        "",
        "| method | trainable params (%) | target test | source test, on / off | s per epoch | peak memory MB "
        "| deployed int8 ONNX (size, RTF, target WER) |",
        "|---|---|---|---|---|---|---|",
        f"| base model | — | {fmt(read_wer(base_dir, 'target', '*'))} | {fmt(read_wer(base_dir, 'source', '*'))} "
        "| — | — | — |",
    ]
    for method, (label, on, off) in METHODS.items():
        method_dir = exp_root / method
        if not method_dir.is_dir():
            continue
        stats = training_stats(method_dir)
        pattern = f"epoch-{epochs}-avg-1-*{on}"
        target = read_wer(method_dir / res, "target", pattern)
        source_on = read_wer(method_dir / res, "source", pattern)
        source_off: Optional[float] = read_wer(method_dir / res, "source", f"*{off}") if off else None
        source = f"{fmt(source_on)} / {fmt(source_off)}" if off else f"{fmt(source_on)} / —"
        lines.append(
            f"| {label} | {stats.get('trainable', '—')} | {fmt(target)} | {source} | {stats.get('s_per_epoch', '—')} "
            f"| {stats.get('peak_mb', '—')} | {onnx_stats(method_dir)} |"
        )
    lines += ["", f"Written {datetime.now():%Y-%m-%d %H:%M} from {exp_root}; the commands are in {exp_root}/commands.sh."]
    return lines


def plot(exp_root: Path, epochs: int, filename: Path) -> None:
    """Target test WER against trainable parameters (log scale), one point per method."""
    fig, ax = plt.subplots(figsize=(6, 4))
    for method, (label, on, _) in METHODS.items():
        method_dir = exp_root / method
        trainable = training_stats(method_dir).get("trainable") if method_dir.is_dir() else None
        wer = read_wer(method_dir / "greedy_search", "target", f"epoch-{epochs}-avg-1-*{on}")
        if trainable is None or wer is None:
            continue
        count = int(trainable.split()[0].replace(",", ""))
        lora = method.startswith("lora")
        ax.scatter(count, wer, color="tab:red" if lora else "tab:blue")
        # LoRA labels above the points, the others below: neighbouring points keep readable labels.
        ax.annotate(label, (count, wer), textcoords="offset points", xytext=(4, 5 if lora else -11), fontsize=8)
    base = read_wer(exp_root / "base" / "greedy_search", "target", "*")
    if base is not None:
        ax.axhline(base, color="gray", linestyle="--", label=f"base model ({base:.1f})")
        ax.legend()
    ax.set_xscale("log")
    ax.set_xlabel("trainable parameters")
    ax.set_ylabel("target test WER %")
    ax.set_title(f"Fine-tuning the embedded story's base, {epochs} epochs")
    fig.tight_layout()
    fig.savefig(filename, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--exp-root", type=Path, default=Path("exp/tuners"))
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--plot", type=Path, default=None, help="Also draw WER against trainable parameters here.")
    args = parser.parse_args()
    text = "\n".join(table(args.exp_root, args.epochs)) + "\n"
    atomic_write_text(args.exp_root / "summary.md", text)
    print(text)
    if args.plot is not None:
        plot(args.exp_root, args.epochs, args.plot)


if __name__ == "__main__":
    main()
