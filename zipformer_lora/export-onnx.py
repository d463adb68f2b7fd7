#!/usr/bin/env python3
"""Export a LoRA fine-tuned Zipformer transducer to ONNX for sherpa-onnx, merged or not.

  ./zipformer_lora/export-onnx.py --tokens data/lang_bpe_500/tokens.txt --use-averaged-model 0 \\
      --epoch 20 --avg 1 --exp-dir zipformer_lora/exp_lora_r8 --merge-lora 1

--merge-lora 1 folds LoRA into the weights first: the files are an ordinary Zipformer (no LoRA
nodes, no extra cost), named {encoder,decoder,joiner}-epoch-20-avg-1-lora-merged.onnx. Without it
the low-rank terms are in the graph. The encoder's metadata records use_lora, lora_r,
lora_fingerprint, base_fingerprint (and lora_merged).
--tuners a=lora-a.pt,b=lora-b.pt (with --base-ckpt) writes one encoder for every domain instead,
with an int64 input `domain` (N,), for onnxruntime (sherpa-onnx has no such input):
{encoder,decoder,joiner}-domains-a-b.onnx.
"""
from zipformer.tuners.scripts import export_script
from zipformer_lora.lora import LoraTuner

get_parser, main = export_script(LoraTuner(), "zipformer_lora/exp")

if __name__ == "__main__":
    main()
