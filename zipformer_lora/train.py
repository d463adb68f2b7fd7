#!/usr/bin/env python3
"""Fine-tune a pretrained Zipformer transducer on a new domain with LoRA (only the low-rank terms train).

  ./zipformer_lora/train.py --world-size 1 --num-epochs 20 --start-epoch 1 --use-fp16 1 \\
      --base-lr 0.045 --use-lora 1 --lora-r 8 --do-finetune 1 \\
      --finetune-ckpt pretrained/base.pt --max-duration 100 --exp-dir zipformer_lora/exp_lora_r8

The data, resuming and files are as for ./zipformer_adapter/train.py: without data flags it
fine-tunes on GigaSpeech (when prepared) or the embedded target domain; next to epoch-N.pt it
writes lora-epoch-N.pt, the LoRA tensors alone. --use-lora 0 makes this full fine-tuning.
"""
from zipformer.tuners.scripts import train_script
from zipformer_lora.lora import LoraTuner

get_parser, get_params, get_model, main = train_script(LoraTuner())

if __name__ == "__main__":
    main()
