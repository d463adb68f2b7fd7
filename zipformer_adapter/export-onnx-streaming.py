#!/usr/bin/env python3
"""Export an adapter fine-tuned causal Zipformer transducer to streaming ONNX for sherpa-onnx's
online recognizer, adapters baked into the encoder.

Usage:
  ./zipformer_adapter/export-onnx-streaming.py --tokens data/lang_bpe_500/tokens.txt \\
      --use-averaged-model 0 --epoch 20 --avg 1 --exp-dir zipformer_adapter/exp_causal \\
      --use-adapters 1 --adapter-dim 16 --causal 1 --chunk-size 16 --left-context-frames 128
  # an adapter-only file on top of the causal base model it was trained on:
  ./zipformer_adapter/export-onnx-streaming.py --tokens ... --exp-dir DIR --causal 1 \\
      --chunk-size 16 --left-context-frames 128 --base-ckpt pretrained.pt --adapter-ckpt DIR/adapter-epoch-20.pt

Writes {exp_dir}/{encoder,decoder,joiner}-epoch-20-avg-1-chunk-16-left-128.onnx and *.int8.onnx.
Adapters add no cached state: the inputs, outputs and streaming metadata are the base model's;
the encoder's metadata also records the adapters (use_adapters, adapter_dim, adapter_positions,
num_adapters, adapter_fingerprint, base_fingerprint). --use-adapters 0 exports the base model.
"""
from zipformer.tuners.scripts import streaming_export_script
from zipformer_adapter.adapter import AdapterTuner

get_parser, main = streaming_export_script(AdapterTuner(), "zipformer_adapter/exp")

if __name__ == "__main__":
    main()
