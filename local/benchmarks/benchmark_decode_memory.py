#!/usr/bin/env python3
"""Peak resident memory of decode.py and onnx_decode.py on the same cuts (greedy search).

In a temporary directory: --num-cuts cuts of random 80-dim fbank, 2-15 s each (lilcom storage);
the checkpoint as exp/epoch-1.pt; its ONNX export (export-onnx.py). Then decode.py and
onnx_decode.py (fp32 and int8 files) decode them with the same --max-duration, each in its own
process, and each process's peak resident memory (its ru_maxrss) is printed.

Usage:
  ./local/benchmarks/benchmark_decode_memory.py                      # pretrained/base.pt, 200 cuts
  ./local/benchmarks/benchmark_decode_memory.py --num-cuts 400 --max-duration 600
"""
import argparse
import os
import random
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import List, Tuple

import numpy as np
from lhotse import CutSet, LilcomChunkyWriter, MonoCut, SupervisionSegment
from lhotse.features import Features

REPO = Path(__file__).resolve().parents[2]
FRAME_SHIFT = 0.01


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", type=Path, default=REPO / "pretrained/base.pt")
    parser.add_argument("--bpe-model", type=Path, default=REPO / "pretrained/bpe.model")
    parser.add_argument("--tokens", type=Path, default=REPO / "pretrained/tokens.txt")
    parser.add_argument("--num-cuts", type=int, default=200)
    parser.add_argument("--max-duration", type=float, default=300.0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    return parser


def write_cuts(directory: Path, num_cuts: int, seed: int) -> Path:
    """Cuts of random fbank, 2-15 s, with a one-word transcript (the WER is not the point)."""
    rng = random.Random(seed)
    cuts = []
    with LilcomChunkyWriter(directory / "feats") as writer:
        for i in range(num_cuts):
            num_frames = int(rng.uniform(2.0, 15.0) / FRAME_SHIFT)
            feats = np.random.default_rng(i).normal(-6.0, 3.0, size=(num_frames, 80)).astype(np.float32)
            key = writer.write(f"cut-{i}", feats)
            duration = num_frames * FRAME_SHIFT
            features = Features(
                type="fbank", num_frames=num_frames, num_features=80, frame_shift=FRAME_SHIFT,
                sampling_rate=16000, start=0.0, duration=duration, storage_type=writer.name,
                storage_path=str(writer.storage_path), storage_key=key, recording_id=f"rec-{i}", channels=0,
            )
            supervision = SupervisionSegment(f"cut-{i}", f"rec-{i}", 0.0, duration, text="HELLO")
            cuts.append(MonoCut(f"cut-{i}", 0.0, duration, 0, features=features, supervisions=[supervision]))
    path = directory / "cuts.jsonl.gz"
    CutSet.from_cuts(cuts).to_file(path)
    return path


def peak_mb(command: List[str], threads: int) -> Tuple[float, str]:
    """Run a command; its peak resident memory (MB) and the last line of its log."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    proc = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"error: {' '.join(command)} failed:\n{output[-3000:]}")
    return usage.ru_maxrss / 1024, output.strip().splitlines()[-1]


def main() -> None:
    args = get_parser().parse_args()
    python = sys.executable
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        cuts = write_cuts(tmp, args.num_cuts, args.seed)
        exp = tmp / "exp"
        exp.mkdir()
        (exp / "epoch-1.pt").symlink_to(args.checkpoint.resolve())
        which = ["--epoch", "1", "--avg", "1", "--use-averaged-model", "0", "--exp-dir", str(exp)]
        peak_mb([python, "zipformer/export-onnx.py", *which, "--tokens", str(args.tokens)], args.threads)
        data = ["--test-cuts", f"test={cuts}", "--max-duration", str(args.max_duration), "--num-workers", "0"]
        runs = {
            "decode.py (PyTorch)": [python, "zipformer/decode.py", *which, "--bpe-model", str(args.bpe_model),
                                    "--num-threads", str(args.threads), *data],
        }
        for kind in ("", ".int8"):
            files = [f"--{part}-model-filename={exp}/{part}-epoch-1-avg-1{kind}.onnx" for part in ("encoder", "decoder", "joiner")]
            runs[f"onnx_decode.py ({kind[1:] or 'fp32'})"] = [
                python, "zipformer/onnx_decode.py", *files, "--tokens", str(args.tokens),
                "--num-threads", str(args.threads), *data,
            ]
        print(f"{args.num_cuts} cuts of 2-15 s, --max-duration {args.max_duration:g}, {args.threads} thread(s)")
        print("| script | peak resident MB |")
        print("|---|---:|")
        for name, command in runs.items():
            mb, _ = peak_mb(command, args.threads)
            print(f"| {name} | {mb:.0f} |")


if __name__ == "__main__":
    main()
