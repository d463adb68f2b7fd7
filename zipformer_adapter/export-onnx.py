#!/usr/bin/env python3
"""Export an adapter fine-tuned Zipformer transducer to ONNX for sherpa-onnx, adapters baked in.

Usage (the seed tutorial's command):
  ./zipformer_adapter/export-onnx.py --tokens data/lang_bpe_500/tokens.txt \\
      --use-averaged-model 0 --epoch 20 --avg 1 \\
      --exp-dir zipformer_adapter/exp_giga_finetune_adapters1_adapter_dim16 \\
      --use-adapters 1 --adapter-dim 16   # the shape comes from the checkpoint
  # an adapter-only file on top of the base model it was trained on:
  ./zipformer_adapter/export-onnx.py --tokens ... --exp-dir DIR \\
      --base-ckpt pretrained.pt --adapter-ckpt DIR/adapter-epoch-20.pt

Writes {exp_dir}/{encoder,decoder,joiner}-epoch-20-avg-1.onnx (with --adapter-ckpt:
-{adapter file stem}) and *.int8.onnx. The encoder's metadata records the adapters: use_adapters,
adapter_dim, adapter_positions, num_adapters, adapter_fingerprint and base_fingerprint.
--tuners a=adapter-a.pt,b=adapter-b.pt (with --base-ckpt) writes one encoder for every domain instead,
with an int64 input `domain` (N,), for onnxruntime (sherpa-onnx has no such input):
{encoder,decoder,joiner}-domains-a-b.onnx.
"""
from zipformer.tuners.scripts import export_script
from zipformer_adapter.adapter import AdapterTuner

get_parser, main = export_script(AdapterTuner(), "zipformer_adapter/exp")

if __name__ == "__main__":
    main()
