#!/usr/bin/env python3
"""Export a Zipformer transducer to ONNX (encoder, decoder, joiner; fp32 and int8) for sherpa-onnx.

Usage:
  ./zipformer/export-onnx.py --tokens data/lang_bpe_500/tokens.txt --use-averaged-model 1 \\
      --epoch 30 --avg 9 --exp-dir zipformer/exp [model-shape flags as in training]

Writes {exp_dir}/{encoder,decoder,joiner}-epoch-30-avg-9.onnx and *.int8.onnx. Decode them with
./zipformer/onnx_pretrained.py (wav files) or ./zipformer/onnx_decode.py (cut sets), or deploy
with sherpa-onnx (see README).
"""
import argparse
from pathlib import Path
from typing import Dict, List, Optional

from zipformer.deploy import export as onnx_export
from zipformer.deploy.export import ExportRecipe


def get_parser() -> argparse.ArgumentParser:
    return onnx_export.get_parser(ExportRecipe())


def main(argv: Optional[List[str]] = None) -> Dict[str, Path]:
    return onnx_export.main(ExportRecipe(), argv)


if __name__ == "__main__":
    main()
