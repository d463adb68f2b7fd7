#!/usr/bin/env python3
"""Fine-tune a pretrained Zipformer transducer on a new domain with adapters (only they train).

The seed tutorial's command:
  ./zipformer_adapter/train.py --world-size 1 --num-epochs 20 --start-epoch 1 --use-fp16 1 \\
      --base-lr 0.045 --use-adapters 1 --adapter-dim 16 --do-finetune 1 --master-port 13022 \\
      --finetune-ckpt pretrained/base.pt --max-duration 100 --exp-dir zipformer_adapter/exp_adapter_dim16

Without data flags it fine-tunes on GigaSpeech's cuts_S (validation on LibriSpeech dev-clean and
GigaSpeech DEV) when prepared, else on the embedded target domain (validation on both domains);
--train-cuts/--valid-cuts choose other data. The model's shape comes from --finetune-ckpt's stored
configuration (icefall's pretrained.pt has none: then the shape flags say it).

Next to epoch-N.pt it writes adapter-epoch-N.pt: the adapters alone (a few MB) with their
configuration and a fingerprint of the base model. Resuming (--start-epoch N+1) needs no change of
--do-finetune. --use-adapters 0 makes this full fine-tuning (use a lower --base-lr, e.g. 0.0045).
"""
from zipformer.tuners.scripts import train_script
from zipformer_adapter.adapter import AdapterTuner

get_parser, get_params, get_model, main = train_script(AdapterTuner())

if __name__ == "__main__":
    main()
