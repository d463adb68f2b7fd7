#!/usr/bin/env python3
"""The table of local/compare_tuners.sh: $exp_root/summary.md (printed too).

Per method: trainable parameters, target and source test WER (tuner on / off), seconds per epoch
and peak memory of the fine-tune, and the deployed int8 ONNX files (size, onnxruntime real-time
factor and WER on the target test set).
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse  # noqa: E402
import re  # noqa: E402
from datetime import datetime  # noqa: E402
from typing import List, Optional  # noqa: E402

from local.summarize_run import fmt, read_wer, training_stats  # noqa: E402
from zipformer.atomic import atomic_write_text  # noqa: E402

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
        "(./local/compare_tuners.sh); greedy search, WER %.",
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--exp-root", type=Path, default=Path("exp/tuners"))
    parser.add_argument("--epochs", type=int, default=6)
    args = parser.parse_args()
    text = "\n".join(table(args.exp_root, args.epochs)) + "\n"
    atomic_write_text(args.exp_root / "summary.md", text)
    print(text)


if __name__ == "__main__":
    main()
