#!/usr/bin/env python3
"""What streaming costs in WER: a causal model decoded in full context and chunk by chunk.

  ./local/benchmarks/streaming_wer_cost.py --exp-dir exp/base --epoch 99 --avg 1 --chunk-sizes 8,16,32,64 \
      --left-context-frames 128 --test-cuts source=data/fbank/source_cuts_test.jsonl.gz,...

Runs the user's own commands: `decode.py --chunk-size -1 --left-context-frames -1` (full context),
then `streaming_decode.py --chunk-size C --left-context-frames L` (real streaming, chunk by chunk)
for each C, with greedy search, and prints a markdown table: the algorithmic latency of each chunk
size (C frames of 50 Hz are 20·C ms of audio; the encoder looks 13 feature frames, 130 ms, past
the chunk) and each test set's WER with its change against full context. Extra arguments go to
both scripts (e.g. --use-adapters 1 for zipformer_adapter/, --num-threads 2).
"""
import argparse
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from zipformer.model.streaming import EMBED_LOOK_AHEAD

REPO = Path(__file__).resolve().parents[2]
FRAME_MS = 10  # one feature frame; the encoder's 50 Hz frames are two of them


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", default="zipformer", help="recipe directory: zipformer, zipformer_adapter, ...")
    parser.add_argument("--exp-dir", type=Path, required=True)
    parser.add_argument("--epoch", type=int, required=True)
    parser.add_argument("--avg", type=int, default=1)
    parser.add_argument("--use-averaged-model", type=int, default=0)
    parser.add_argument("--chunk-sizes", default="8,16,32,64", help="50 Hz frames per chunk, comma-separated")
    parser.add_argument("--left-context-frames", type=int, default=128)
    parser.add_argument("--test-cuts", required=True, help="name=path,... as for decode.py")
    return parser


def read_wers(res_dir: Path, tag: str) -> Dict[str, float]:
    """{test set: WER} from the newest wer-summary-{set}-greedy_search-*{tag}* file of each set."""
    wers: Dict[str, float] = {}
    for path in sorted(res_dir.glob(f"wer-summary-*-greedy_search-*{tag}*.txt"), key=lambda p: p.stat().st_mtime):
        test_set = path.name.removeprefix("wer-summary-").split("-greedy_search-")[0]
        wers[test_set] = float(path.read_text().splitlines()[1].split("\t")[1])
    return wers


def decode(script: str, args: argparse.Namespace, chunk: int, left: int, extra: Sequence[str]) -> None:
    # This interpreter, not the script's shebang: the .venv need not be activated.
    command = [
        sys.executable, str(REPO / args.recipe / script), "--exp-dir", str(args.exp_dir), "--epoch", str(args.epoch),
        "--avg", str(args.avg), "--use-averaged-model", str(args.use_averaged_model),
        "--chunk-size", str(chunk), "--left-context-frames", str(left), "--test-cuts", args.test_cuts,
        "--decoding-method", "greedy_search", *extra,
    ]
    print("$ " + " ".join(command), flush=True)
    subprocess.run(command, check=True)


def table(full: Dict[str, float], streamed: Dict[int, Dict[str, float]], left: int) -> List[str]:
    sets = sorted(full)

    def cell(wer: Optional[float], reference: float) -> str:
        return "—" if wer is None else f"{wer:.2f} ({wer - reference:+.2f})"

    lines = [
        f"| chunk (audio) | algorithmic latency, ms | {' | '.join(f'{s} WER %' for s in sets)} |",
        "|---|---|" + "---|" * len(sets),
        f"| full context | — | {' | '.join(f'{full[s]:.2f}' for s in sets)} |",
    ]
    for chunk, wers in streamed.items():
        latency = (2 * chunk + EMBED_LOOK_AHEAD) * FRAME_MS
        cells = " | ".join(cell(wers.get(s), full[s]) for s in sets)
        lines.append(f"| {chunk} ({2 * chunk * FRAME_MS} ms), left {left} | {latency} | {cells} |")
    return lines


def main() -> None:
    args, extra = get_parser().parse_known_args()
    chunks = [int(c) for c in args.chunk_sizes.split(",")]
    decode("decode.py", args, -1, -1, extra)
    full = read_wers(args.exp_dir / "greedy_search", f"epoch-{args.epoch}-avg-{args.avg}-chunk--1-left-context--1-")
    streamed = {}
    for chunk in chunks:
        decode("streaming_decode.py", args, chunk, args.left_context_frames, extra)
        tag = f"epoch-{args.epoch}-avg-{args.avg}-chunk-{chunk}-left-context-{args.left_context_frames}-"
        streamed[chunk] = read_wers(args.exp_dir / "streaming" / "greedy_search", tag)
    print("\n".join(["", f"Streaming against full context, {args.exp_dir} epoch {args.epoch} avg {args.avg}:", *table(full, streamed, args.left_context_frames)]))


if __name__ == "__main__":
    main()
