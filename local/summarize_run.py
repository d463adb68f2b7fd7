#!/usr/bin/env python3
"""Collect the main job's results into one table: $exp_root/summary.md (printed too).

Reads the files the stages wrote: wer-summary-* of the base, adapter, full fine-tuning and
sherpa-onnx decodes, the recogs-* hypotheses (to check that adapters off give the base model's
output exactly) and the training logs (trainable parameters, seconds per epoch, peak memory).
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse  # noqa: E402
import os  # noqa: E402
import re  # noqa: E402
from datetime import datetime  # noqa: E402
from typing import Dict, List, Optional  # noqa: E402

GREEDY = "greedy_search"


def read_wer(res_dir: Path, test_set: str, suffix_pattern: str) -> Optional[float]:
    """WER % from the one wer-summary file matching the pattern, or None if it is not there."""
    files = sorted(res_dir.glob(f"wer-summary-{test_set}-{GREEDY}-{suffix_pattern}.txt"))
    if not files:
        return None
    value = files[-1].read_text().splitlines()[1].split("\t")[1]
    return float(value)


def read_hyps(res_dir: Path, test_set: str, suffix_pattern: str) -> Optional[List[str]]:
    files = sorted(res_dir.glob(f"recogs-{test_set}-{GREEDY}-{suffix_pattern}.txt"))
    if not files:
        return None
    return [line for line in files[-1].read_text().splitlines() if "\thyp=" in line]


def training_stats(exp_dir: Path) -> Dict[str, str]:
    """Trainable parameters, mean seconds per epoch, throughput and peak memory from the train log."""
    logs = sorted((exp_dir / "log").glob("log-train-*"))
    if not logs:
        return {}
    text = logs[-1].read_text()
    stats = {}
    trainable = re.search(r"A total of (\d+) trainable parameters \(([\d.]+)% of the whole model\)", text)
    if trainable:
        stats["trainable"] = f"{int(trainable.group(1)):,} ({trainable.group(2)}%)"
    epochs = re.findall(r"Epoch \d+ done in ([\d.]+) s: ([\d.]+) s of audio/s, peak memory (\d+) MB", text)
    if epochs:
        seconds = [float(e[0]) for e in epochs]
        rates = [float(e[1]) for e in epochs]
        stats["s_per_epoch"] = f"{sum(seconds) / len(seconds):.0f}"
        stats["throughput"] = f"{sum(rates) / len(rates):.1f}"
        stats["peak_mb"] = str(max(int(e[2]) for e in epochs))
    return stats


def fmt(wer: Optional[float]) -> str:
    return "—" if wer is None else f"{wer:.2f}"


def relative(before: Optional[float], after: Optional[float]) -> str:
    if before is None or after is None or before == 0:
        return "—"
    return f"{(after - before) / before * 100:+.1f}%"


def build_summary(
    exp_root: Path, adapter_dim: int, adapter_epochs: int, full_epochs: int, adapter_avg: int = 1, adapter_averaged: bool = False
) -> str:
    base = exp_root / "base" / GREEDY
    adapter = exp_root / f"adapter_dim{adapter_dim}" / GREEDY
    full = exp_root / "full_finetune" / GREEDY
    which = f"epoch-{adapter_epochs}-avg-{adapter_avg}"
    averaged = "-use-averaged-model" if adapter_averaged else ""
    on = f"{which}-*-adapters-dim-{adapter_dim}{averaged}"
    off = f"{which}-*-adapters-off{averaged}"

    wers = {
        "base": {s: read_wer(base, s, "epoch-99-avg-1-*") for s in ("source", "target")},
        "on": {s: read_wer(adapter, s, on) for s in ("source", "target")},
        "off": {s: read_wer(adapter, s, off) for s in ("source", "target")},
        "full": {s: read_wer(full, s, f"epoch-{full_epochs}-avg-1-*") for s in ("source", "target")},
    }
    sherpa = {
        kind: read_wer(adapter, "target", f"sherpa-onnx-{which}{ext}")
        for kind, ext in (("fp32", ""), ("int8", ".int8"))
    }
    base_hyps = read_hyps(base, "source", "epoch-99-avg-1-*")
    off_hyps = read_hyps(adapter, "source", off)
    identical = "—" if base_hyps is None or off_hyps is None else ("yes" if base_hyps == off_hyps else "NO")

    adapter_stats = training_stats(exp_root / f"adapter_dim{adapter_dim}")
    full_stats = training_stats(exp_root / "full_finetune")
    lines = [
        f"# Main job summary ({datetime.now():%Y-%m-%d %H:%M}, {os.cpu_count()} CPU cores)",
        "",
        "WER % (greedy search). Source stands for LibriSpeech, target for GigaSpeech.",
        "",
        "| model | target test | source test | trainable parameters |",
        "|---|---|---|---|",
        f"| base model (before) | {fmt(wers['base']['target'])} | {fmt(wers['base']['source'])} | — |",
        f"| + adapters dim {adapter_dim} (after) | {fmt(wers['on']['target'])} "
        f"({relative(wers['base']['target'], wers['on']['target'])}) | {fmt(wers['on']['source'])} "
        f"| {adapter_stats.get('trainable', '—')} |",
        f"| same checkpoint, `--use-adapters 0` | {fmt(wers['off']['target'])} | {fmt(wers['off']['source'])} | — |",
    ]
    if wers["full"]["target"] is not None:
        lines.append(
            f"| full fine-tuning ({full_epochs} epochs) | {fmt(wers['full']['target'])} "
            f"({relative(wers['base']['target'], wers['full']['target'])}) | {fmt(wers['full']['source'])} "
            f"| {full_stats.get('trainable', '—')} |"
        )
    lines += [
        "",
        f"Adapters off reproduce the base model's source-test hypotheses exactly: **{identical}**.",
        "",
        f"sherpa-onnx on the target test set (exported adapter model): fp32 {fmt(sherpa['fp32'])}, int8 {fmt(sherpa['int8'])}.",
        "",
        "| training | s per epoch | s of audio per s | peak memory MB |",
        "|---|---|---|---|",
    ]
    for name, stats in (("adapters", adapter_stats), ("full fine-tuning", full_stats)):
        if stats:
            lines.append(f"| {name} | {stats.get('s_per_epoch')} | {stats.get('throughput')} | {stats.get('peak_mb')} |")
    commands = exp_root / "commands.sh"
    if commands.is_file():
        lines += ["", "Commands:", "", "```", commands.read_text().rstrip(), "```"]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--exp-root", type=Path, default=Path("exp"))
    parser.add_argument("--adapter-dim", type=int, default=16)
    parser.add_argument("--adapter-epochs", type=int, required=True)
    parser.add_argument("--adapter-avg", type=int, default=1, help="The --avg the adapters were decoded with.")
    parser.add_argument(
        "--adapter-averaged", type=int, choices=(0, 1), default=0, help="The --use-averaged-model they were decoded with."
    )
    parser.add_argument("--full-epochs", type=int, default=2)
    args = parser.parse_args()
    summary = build_summary(
        args.exp_root, args.adapter_dim, args.adapter_epochs, args.full_epochs, args.adapter_avg, bool(args.adapter_averaged)
    )
    out = args.exp_root / "summary.md"
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(summary)
    tmp.replace(out)
    print(summary)
    print(f"(written to {out})")


if __name__ == "__main__":
    main()
