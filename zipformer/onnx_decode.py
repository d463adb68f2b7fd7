#!/usr/bin/env python3
"""Decode cut sets with exported ONNX models (onnxruntime, greedy search) and score them like decode.py.

Usage:
  ./zipformer/onnx_decode.py \\
      --encoder-model-filename zipformer/exp/encoder-epoch-30-avg-9.onnx \\
      --decoder-model-filename zipformer/exp/decoder-epoch-30-avg-9.onnx \\
      --joiner-model-filename zipformer/exp/joiner-epoch-30-avg-9.onnx \\
      --tokens data/lang_bpe_500/tokens.txt \\
      --test-cuts test-clean=data/fbank/librispeech_cuts_test-clean.jsonl.gz --max-duration 600
  # GigaSpeech scoring: --gigaspeech-scoring 1
  # the deployment runtime instead of onnxruntime (its own features, from the audio): --runtime sherpa-onnx
  # a streaming export (export-onnx-streaming.py) is recognised by its metadata and decoded chunk
  # by chunk (onnxruntime) or by sherpa-onnx's online recognizer:
  ./zipformer/onnx_decode.py --encoder-model-filename zipformer/exp-causal/encoder-epoch-30-avg-9-chunk-16-left-128.onnx ...
  # an encoder of several domains (export-onnx.py --tuners): each cut's domain is its custom field
  # "domain", else its test set's (onnxruntime only: sherpa-onnx has no domain input)
  ./zipformer/onnx_decode.py --encoder-model-filename exp/encoder-domains-call-medical.onnx ... \
      --test-cuts calls=...,dictation=... --cut-domains calls=call,dictation=medical

Writes {exp_dir}/greedy_search/{recogs,errs,wer-summary}-{test_set}-greedy_search-{runtime}-{name}.txt,
where {runtime} is onnx or sherpa-onnx and {name} the encoder file name without "encoder-" and
".onnx" (e.g. epoch-30-avg-9.int8),
beside decode.py's files for the PyTorch model (for a streaming export {exp_dir}/streaming/greedy_search/,
beside streaming_decode.py's), and logs the real-time factor. --exp-dir defaults
to the encoder's directory.
"""
from zipformer.deploy.onnx_decoding import get_parser, main, run  # noqa: F401  (scripts and tests call run(args))

if __name__ == "__main__":
    main()
