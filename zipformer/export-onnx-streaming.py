#!/usr/bin/env python3
"""Export a causal Zipformer transducer to streaming ONNX (encoder with its cached states, decoder,
joiner; fp32 and int8) for sherpa-onnx's online recognizer.

Usage:
  ./zipformer/export-onnx-streaming.py --tokens data/lang_bpe_500/tokens.txt --use-averaged-model 1 \\
      --epoch 30 --avg 9 --exp-dir zipformer/exp-causal \\
      --causal 1 --chunk-size 16 --left-context-frames 128 [model-shape flags as in training]

--chunk-size and --left-context-frames (one value each; training takes lists) fix the latency:
a chunk of C 50 Hz frames is 2C·10 ms of audio. Writes
{exp_dir}/{encoder,decoder,joiner}-epoch-30-avg-9-chunk-16-left-128.onnx and *.int8.onnx. Decode
them with ./zipformer/onnx_pretrained-streaming.py (wav files), ./zipformer/onnx_decode.py (cut
sets), or deploy with sherpa-onnx's OnlineRecognizer (see README).
"""
import argparse
from pathlib import Path
from typing import Dict, List, Optional

from zipformer.deploy import export_streaming as onnx_export_streaming
from zipformer.deploy.export import ExportRecipe


def get_parser() -> argparse.ArgumentParser:
    return onnx_export_streaming.get_parser(ExportRecipe())


def main(argv: Optional[List[str]] = None) -> Dict[str, Path]:
    return onnx_export_streaming.main(ExportRecipe(), argv)


if __name__ == "__main__":
    main()
