#!/usr/bin/env python3
"""Merge LoRA into the base weights: a plain checkpoint of the base's shape.

  ./zipformer_lora/merge.py --epoch 20 --avg 1 --use-averaged-model 0 --exp-dir zipformer_lora/exp_lora_r8 \\
      --out zipformer_lora/exp_lora_r8/pretrained-merged.pt
  # or a LoRA-only file on its base: --base-ckpt pretrained.pt --lora-ckpt lora-epoch-20.pt

Writes {"model": state_dict} (icefall's pretrained.pt layout: 743 tensors for the normal shape),
with the model configuration and vocabulary: zipformer/decode.py, zipformer/export-onnx.py and
icefall's own scripts load it like any Zipformer.
"""
from zipformer.tuners.scripts import merge_script
from zipformer_lora.lora import LoraTuner

get_parser, main = merge_script(LoraTuner())

if __name__ == "__main__":
    main()
