#!/usr/bin/env python3
"""Decode with a LoRA fine-tuned model, with LoRA on or off.

  ./zipformer_lora/decode.py --epoch 20 --avg 10 --exp-dir zipformer_lora/exp_lora_r8 --max-duration 600
  ./zipformer_lora/decode.py --epoch 20 --avg 1 --use-averaged-model 0 --use-lora 0 ...   # the base, exactly
  # one base model, LoRA-only files: --base-ckpt pretrained.pt --lora-ckpt lora-epoch-20.pt
  # both, with a forgetting report (WER with LoRA off and on, every test set): --forgetting-report 1
  # several domains on one base, each cut in its own (README "Several domains on one base"):
  #   --base-ckpt pretrained.pt --tuners a=lora-a.pt,b=lora-b.pt --cut-domains set1=a,set2=base
"""
from zipformer.tuners.scripts import decode_script
from zipformer_lora.lora import LoraTuner

get_parser, main = decode_script(LoraTuner())

if __name__ == "__main__":
    main()
