#!/usr/bin/env python3
"""Transcribe a few audio files with a LoRA fine-tuned checkpoint, LoRA on or off.

  ./zipformer_lora/pretrained.py --checkpoint zipformer_lora/exp/epoch-6.pt \\
      --bpe-model data/lang_bpe_500/bpe.model foo.wav      # --use-lora 0: the base model

Several domains on one base: --checkpoint pretrained.pt --tuners a=lora-a.pt,b=lora-b.pt
--domains a,b,base x.wav y.wav z.wav (or one --domain for all). Everything else is as in
./zipformer/pretrained.py.
"""
from zipformer.tuners.scripts import pretrained_script
from zipformer_lora.lora import LoraTuner

get_parser, main = pretrained_script(LoraTuner())

if __name__ == "__main__":
    main()
