#!/usr/bin/env python3
"""Collect the main job's results into one table: $exp_root/summary.md (printed too).

Reads the files the stages wrote: wer-summary-* of the base, adapter, full fine-tuning and
sherpa-onnx decodes, the recogs-* hypotheses (to check that adapters off give the base model's
output exactly) and the training logs (trainable parameters, seconds per epoch, peak memory).
With --chunk-size and --left-context-frames (`./run.sh --streaming`), also the streaming decodes
(streaming/greedy_search/) of the base and the adapters on and off, and sherpa-onnx's online
recognizer on the streaming export.
"""
import argparse
import os
from datetime import datetime
from pathlib import Path
from typing import Dict, Optional, Tuple

from local.reports.result_files import GREEDY, fmt, read_wer, relative, same_hyps, training_stats
from zipformer.core.atomic import atomic_write_text


def build_summary(
    exp_root: Path,
    adapter_dim: int,
    adapter_epochs: int,
    full_epochs: int,
    adapter_avg: int = 1,
    adapter_averaged: bool = False,
    latency: Optional[Tuple[int, int]] = None,
) -> str:
    """The summary's markdown; `latency` = (chunk size, left context) adds the streaming columns."""
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
    identical = same_hyps(base, adapter, "epoch-99-avg-1-*", off)

    adapter_stats = training_stats(exp_root / f"adapter_dim{adapter_dim}")
    full_stats = training_stats(exp_root / "full_finetune")
    streams: Dict[str, Dict[str, Optional[float]]] = {}
    if latency is not None:
        chunk, left = latency
        tag = f"chunk-{chunk}-left-context-{left}"
        base_s, adapter_s = (exp_root / d / "streaming" / GREEDY for d in ("base", f"adapter_dim{adapter_dim}"))
        on_s = f"{which}-{tag}-*-adapters-dim-{adapter_dim}{averaged}"
        off_s = f"{which}-{tag}-*-adapters-off{averaged}"
        streams = {
            "base": {s: read_wer(base_s, s, f"epoch-99-avg-1-{tag}-*") for s in ("source", "target")},
            "on": {s: read_wer(adapter_s, s, on_s) for s in ("source", "target")},
            "off": {s: read_wer(adapter_s, s, off_s) for s in ("source", "target")},
        }
        online = f"sherpa-onnx-{which}-chunk-{chunk}-left-{left}"
        sherpa = {kind: read_wer(adapter_s, "target", online + ext) for kind, ext in (("fp32", ""), ("int8", ".int8"))}
        streamed_identical = same_hyps(base_s, adapter_s, f"epoch-99-avg-1-{tag}-*", off_s)

    def row(name: str, key: str, trainable: str) -> str:
        cells = [fmt(wers[key]["target"]), fmt(wers[key]["source"])]
        if key == "on":
            cells[0] += f" ({relative(wers['base']['target'], wers['on']['target'])})"
        if streams:
            cells += [fmt(streams[key]["target"]), fmt(streams[key]["source"])]
            if key == "on":
                cells[2] += f" ({relative(streams['base']['target'], streams['on']['target'])})"
        return f"| {name} | {' | '.join(cells)} | {trainable} |"

    columns = "target test | source test"
    if streams:
        columns = (
            "target test, full context | source test, full context | "
            f"target test, streaming ({chunk * 20} ms chunks) | source test, streaming"
        )
    lines = [
        f"# Main job summary ({datetime.now():%Y-%m-%d %H:%M}, {os.cpu_count()} CPU cores)",
        "",
        "WER % (greedy search). Source stands for LibriSpeech, target for GigaSpeech.",
        "",
        f"| model | {columns} | trainable parameters |",
        "|---|" + "---|" * (columns.count("|") + 2),
        row("base model (before)", "base", "—"),
        row(f"+ adapters dim {adapter_dim} (after)", "on", adapter_stats.get("trainable", "—")),
        row("same checkpoint, `--use-adapters 0`", "off", "—"),
    ]
    if wers["full"]["target"] is not None:
        lines.append(
            f"| full fine-tuning ({full_epochs} epochs) | {fmt(wers['full']['target'])} "
            f"({relative(wers['base']['target'], wers['full']['target'])}) | {fmt(wers['full']['source'])} "
            + "| — | — " * bool(streams)
            + f"| {full_stats.get('trainable', '—')} |"
        )
    lines += ["", f"Adapters off reproduce the base model's source-test hypotheses exactly: **{identical}**."]
    if streams:
        lines.append(f"Streaming too: **{streamed_identical}**.")
        deployed = (
            f"sherpa-onnx's online recognizer on the target test set (streaming export, chunk {chunk}, "
            f"left context {left}): fp32 {fmt(sherpa['fp32'])}, int8 {fmt(sherpa['int8'])}; PyTorch streaming: "
            f"{fmt(streams['on']['target'])}."
        )
    else:
        deployed = (
            f"sherpa-onnx on the target test set (exported adapter model): fp32 {fmt(sherpa['fp32'])}, "
            f"int8 {fmt(sherpa['int8'])}."
        )
    lines += [
        "",
        deployed,
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
    parser.add_argument("--chunk-size", type=int, help="With --left-context-frames: add the streaming results.")
    parser.add_argument("--left-context-frames", type=int)
    args = parser.parse_args()
    if (args.chunk_size is None) != (args.left_context_frames is None):
        parser.error("--chunk-size and --left-context-frames go together")
    latency = None if args.chunk_size is None else (args.chunk_size, args.left_context_frames)
    summary = build_summary(
        args.exp_root, args.adapter_dim, args.adapter_epochs, args.full_epochs, args.adapter_avg,
        bool(args.adapter_averaged), latency,
    )
    out = args.exp_root / "summary.md"
    atomic_write_text(out, summary)
    print(summary)
    print(f"(written to {out})")


if __name__ == "__main__":
    main()
