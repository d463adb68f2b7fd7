#!/usr/bin/env python3
"""Why sherpa-onnx's online transcripts differ from streaming_decode.py's: decode a test set with
onnxruntime on the very frames sherpa-onnx decodes and compare with sherpa-onnx's transcripts.

  ./zipformer/onnx_decode.py --runtime sherpa-onnx --encoder-model-filename E --decoder-model-filename D \\
      --joiner-model-filename J --tokens data/lang_bpe_500/tokens.txt --test-cuts target=CUTS
  ./local/benchmarks/sherpa_online_same_frames.py --encoder-model-filename E --decoder-model-filename D \\
      --joiner-model-filename J --tokens data/lang_bpe_500/tokens.txt --cuts CUTS \\
      --sherpa-recogs EXP/streaming/greedy_search/recogs-target-greedy_search-sherpa-onnx-....txt

sherpa-onnx computes its own fbank from the audio and pads no tail; streaming_decode.py decodes the
stored (lhotse) features with 30 frames of tail padding. Here onnxruntime runs the same streaming
export over sherpa-onnx's frames (zipformer.deploy.sherpa_online.stream_on_sherpa_frames): if every
transcript then equals sherpa-onnx's, the runtimes agree and the differences against
streaming_decode.py come from the features and the tail alone. Prints the count and each
difference; exits 1 if any.
"""
import argparse
import sys
from pathlib import Path

import numpy as np
from lhotse import load_manifest

from zipformer.core.errors import exit_on_user_error
from zipformer.decoding.scoring import read_hypotheses
from zipformer.deploy.inference import read_tokens, tokens_to_text
from zipformer.deploy.sherpa_online import stream_on_sherpa_frames
from zipformer.deploy.streaming_inference import OnnxStreamingTransducer
from zipformer.model.frontend import SAMPLE_RATE


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--encoder-model-filename", type=Path, required=True)
    parser.add_argument("--decoder-model-filename", type=Path, required=True)
    parser.add_argument("--joiner-model-filename", type=Path, required=True)
    parser.add_argument("--tokens", type=Path, required=True)
    parser.add_argument("--cuts", type=Path, required=True, help="the test set's cuts (with recordings)")
    parser.add_argument("--sherpa-recogs", type=Path, required=True, help="onnx_decode.py --runtime sherpa-onnx's recogs file")
    return parser


def main() -> None:
    args = get_parser().parse_args()
    with exit_on_user_error():
        model = OnnxStreamingTransducer.from_files(
            args.encoder_model_filename, args.decoder_model_filename, args.joiner_model_filename
        )
        table = read_tokens(args.tokens)
        sherpa = {cut_id: " ".join(words) for cut_id, words in read_hypotheses(args.sherpa_recogs).items()}
    differ = 0
    cuts = load_manifest(args.cuts)
    for cut in cuts:
        samples = cut.resample(SAMPLE_RATE).load_audio()[0].astype(np.float32)
        text = " ".join(tokens_to_text(stream_on_sherpa_frames(model, samples), table).split())
        if text != sherpa[cut.id]:
            differ += 1
            print(f"{cut.id}\n  onnxruntime: {text}\n  sherpa-onnx: {sherpa[cut.id]}")
    print(f"{len(cuts) - differ} of {len(cuts)} transcripts equal sherpa-onnx's on its own frames")
    sys.exit(1 if differ else 0)


if __name__ == "__main__":
    main()
