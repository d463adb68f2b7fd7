#!/usr/bin/env python3
"""Transcribe a few audio files with an adapter fine-tuned checkpoint, adapters on or off.

  ./zipformer_adapter/pretrained.py --checkpoint exp/adapter_dim8/epoch-6.pt \\
      --bpe-model data/lang_bpe_500/bpe.model foo.wav      # --use-adapters 0: the base model

Several domains on one base: --checkpoint pretrained.pt --tuners a=adapter-a.pt,b=adapter-b.pt
--domains a,b,base x.wav y.wav z.wav (or one --domain for all). Everything else is as in
./zipformer/pretrained.py.
"""
from zipformer.tuners.scripts import pretrained_script
from zipformer_adapter.adapter import AdapterTuner

get_parser, main = pretrained_script(AdapterTuner())

if __name__ == "__main__":
    main()
