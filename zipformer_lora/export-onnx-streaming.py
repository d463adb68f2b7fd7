#!/usr/bin/env python3
"""Export a LoRA fine-tuned causal Zipformer transducer to streaming ONNX for sherpa-onnx's online
recognizer, merged or not.

  ./zipformer_lora/export-onnx-streaming.py --tokens data/lang_bpe_500/tokens.txt --use-averaged-model 0 \\
      --epoch 20 --avg 1 --exp-dir zipformer_lora/exp_causal_lora_r8 --merge-lora 1 \\
      --causal 1 --chunk-size 16 --left-context-frames 128

--merge-lora 1 folds LoRA into the weights first: the encoder is an ordinary streaming Zipformer,
named {encoder,decoder,joiner}-epoch-20-avg-1-lora-merged-chunk-16-left-128.onnx. Without it the
low-rank terms are in the graph. The encoder's metadata records use_lora, lora_r,
lora_fingerprint, base_fingerprint (and lora_merged) beside the streaming metadata.
"""
from zipformer.tuners.scripts import streaming_export_script
from zipformer_lora.lora import LoraTuner

get_parser, main = streaming_export_script(LoraTuner(), "zipformer_lora/exp")

if __name__ == "__main__":
    main()
