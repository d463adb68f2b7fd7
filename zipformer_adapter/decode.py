#!/usr/bin/env python3
"""Decode with an adapter fine-tuned model, with the adapters on or off.

  # adapters on, averaged full checkpoints of the fine-tune
  ./zipformer_adapter/decode.py --epoch 20 --avg 10 --use-averaged-model 1 --use-adapters 1 \\
      --adapter-dim 16 --exp-dir zipformer_adapter/exp_adapter_dim16 --max-duration 600
  # the original model from the same checkpoint: adapters ignored, output identical to the base
  ./zipformer_adapter/decode.py --epoch 20 --avg 1 --use-averaged-model 0 --use-adapters 0 ...
  # one base model, adapter-only files: --base-ckpt pretrained.pt --adapter-ckpt adapter-epoch-20.pt
  # (or --base-ckpt with --epoch/--avg to average adapter-epoch-N.pt files)
  # several domains on one base, each cut in its own (README "Several domains on one base"):
  #   --base-ckpt pretrained.pt --tuners a=adapter-a.pt,b=adapter-b.pt --cut-domains set1=a,set2=base
  # both, in one run, with a forgetting report (WER with adapters off and on, every test set):
  ./zipformer_adapter/decode.py ... --use-adapters 1 --forgetting-report 1
  # GigaSpeech scoring: --gigaspeech-scoring 1 --test-cuts dev=data/fbank/cuts_DEV.jsonl.gz,test=data/fbank/cuts_TEST.jsonl.gz
"""
from zipformer.tuners.scripts import decode_script
from zipformer_adapter.adapter import AdapterTuner

get_parser, main = decode_script(AdapterTuner())

if __name__ == "__main__":
    main()
