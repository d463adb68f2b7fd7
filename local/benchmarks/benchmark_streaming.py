#!/usr/bin/env python3
"""Latency of streaming recognition on CPU: PyTorch, onnxruntime and sherpa-onnx, fp32 and int8.

A causal model with random weights (compute does not depend on training) of the embedded story's
shape ("small", 3.5M parameters) or icefall's ("normal") is exported with
zipformer/export-onnx-streaming.py at each --chunk-sizes value, then one stream of --seconds of
audio is decoded chunk by chunk with greedy search, --threads threads:
  - PyTorch: zipformer.decoding.streaming_session.StreamingDecoder (encoder chunk + search);
  - onnxruntime: zipformer.deploy.streaming_inference.OnnxStreamingTransducer;
  - sherpa-onnx: its OnlineRecognizer fed the audio in 0.1 s pieces (features included).
Prints a markdown table: algorithmic latency (chunk + the encoder's 13 frames of look-ahead, at
10 ms a frame), compute per chunk (median of --runs decodes / the stream's chunks; sherpa-onnx's
includes its feature extraction) and the real-time factor.

Usage:
  ./local/benchmarks/benchmark_streaming.py --out-dir /tmp/latency --config small --chunk-sizes 8,16,32 --threads 1
"""
import argparse
import os
import statistics
import time
from pathlib import Path
from typing import Callable, Dict, List

import numpy as np
import torch

from local.benchmarks.model_configs import CONFIGS
from zipformer.checkpoints.config import model_config
from zipformer.core.params import AttributeDict
from zipformer.decoding.streaming_session import StreamingDecoder
from zipformer.deploy import export_streaming as onnx_export_streaming
from zipformer.deploy.export import ExportRecipe
from zipformer.deploy.inference import compute_fbank, read_tokens
from zipformer.deploy.sherpa_online import decode_online, online_recognizer
from zipformer.deploy.streaming_inference import OnnxStreamingTransducer
from zipformer.model.builder import get_model
from zipformer.model.flags import add_model_arguments
from zipformer.model.frontend import FEATURE_DIM, SAMPLE_RATE
from zipformer.model.streaming import EMBED_LOOK_AHEAD, TAIL_PAD_FRAMES, num_chunks

REPO = Path(__file__).resolve().parents[2]
FRAME_MS = 10
PIECE_SECONDS = 0.1


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out-dir", type=Path, required=True, help="checkpoint and ONNX files go here")
    parser.add_argument("--config", choices=sorted(CONFIGS), default="small", help="model shape")
    parser.add_argument("--chunk-sizes", default="8,16,32", help="50 Hz frames per chunk, comma-separated")
    parser.add_argument("--left-context-frames", type=int, default=128)
    parser.add_argument("--tokens", type=Path, default=REPO / "pretrained" / "tokens.txt")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of the stream")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--runs", type=int, default=3, help="timed decodes (the median is reported)")
    return parser


def model_params(flags: List[str], vocab_size: int, chunk_size: int, left: int) -> AttributeDict:
    parser = argparse.ArgumentParser()
    add_model_arguments(parser)
    chunk_flags = ["--causal", "1", "--chunk-size", str(chunk_size), "--left-context-frames", str(left)]
    params = AttributeDict(vars(parser.parse_args(flags + chunk_flags)))
    params.update(feature_dim=FEATURE_DIM, vocab_size=vocab_size, blank_id=0, context_size=2)
    return params


def median_seconds(run: Callable[[], object], runs: int) -> float:
    run()  # warm-up
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    args = get_parser().parse_args()
    torch.set_num_threads(args.threads)
    vocab_size = len(read_tokens(args.tokens))
    rng = np.random.default_rng(0)
    samples = (0.1 * rng.standard_normal(int(args.seconds * SAMPLE_RATE))).astype(np.float32)
    features = compute_fbank(samples)
    rows = []
    for chunk_size in (int(c) for c in args.chunk_sizes.split(",")):
        exp_dir = args.out_dir / f"chunk-{chunk_size}"
        exp_dir.mkdir(parents=True, exist_ok=True)
        params = model_params(CONFIGS[args.config], vocab_size, chunk_size, args.left_context_frames)
        torch.manual_seed(0)
        model = get_model(params).eval()
        config = model_config(params, ExportRecipe().config_keys)
        torch.save({"model": model.state_dict(), "model_config": config}, exp_dir / "epoch-1.pt")
        files = onnx_export_streaming.main(
            ExportRecipe(), argv=[
                "--tokens", str(args.tokens), "--exp-dir", str(exp_dir), "--epoch", "1", "--avg", "1",
                "--use-averaged-model", "0", "--causal", "1", "--chunk-size", str(chunk_size),
                "--left-context-frames", str(args.left_context_frames),
            ],
        )
        decoder = StreamingDecoder(model, AttributeDict(decoding_method="greedy_search"), chunk_size)
        chunks = num_chunks(features.shape[0] + TAIL_PAD_FRAMES, chunk_size)
        timings: Dict[str, float] = {
            "PyTorch fp32": median_seconds(
                lambda: list(decoder.decode([("x", [], torch.from_numpy(features))], 1)), args.runs
            )
        }
        for kind, suffix in (("fp32", ""), ("int8", ".int8")):
            paths = [files[f"{name}{suffix}"] for name in ("encoder", "decoder", "joiner")]
            onnx_model = OnnxStreamingTransducer.from_files(*paths, num_threads=args.threads)
            timings[f"onnxruntime {kind}"] = median_seconds(lambda: onnx_model.decode_utterances([features]), args.runs)
            recognizer = online_recognizer(*paths, args.tokens, num_threads=args.threads)
            timings[f"sherpa-onnx {kind}"] = median_seconds(
                lambda: decode_online(recognizer, [(SAMPLE_RATE, samples)], PIECE_SECONDS), args.runs
            )
        latency = (2 * chunk_size + EMBED_LOOK_AHEAD) * FRAME_MS
        for runtime, seconds in timings.items():
            rows.append(
                f"| {chunk_size} ({2 * chunk_size * FRAME_MS} ms) | {latency} | {runtime} | "
                f"{1000 * seconds / chunks:.1f} | {seconds / args.seconds:.3f} |"
            )
    print(f"\n{args.config} model, {args.seconds:.0f} s stream, {args.threads} thread(s), "
          f"left context {args.left_context_frames} frames; load average {os.getloadavg()[0]:.1f} "
          f"on {os.cpu_count()} CPUs (other processes slow the figures)")
    print("| chunk (audio) | algorithmic latency, ms | runtime | compute per chunk, ms | RTF |")
    print("|---|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
