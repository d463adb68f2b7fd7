#!/usr/bin/env python3
"""Choose the checkpoint with the best target-dev WER whose source-dev WER (adapter on) stays within a budget.

  ./zipformer_adapter/select_checkpoint.py --exp-dir exp/adapter_dim8 --avg-candidates 1,2,3 \\
      --max-source-rise 1.0 --source-dev data/fbank/source_cuts_dev.jsonl.gz \\
      --target-dev data/fbank/target_cuts_dev.jsonl.gz
  # then decode or export the choice:
  ./zipformer_adapter/decode.py --exp-dir exp/adapter_dim8 --use-selected 1 ...

Decodes the source dev set once with the adapter off (the base model, the reference) and both dev sets
with every candidate (every epoch present by default; --avg-candidates; the plain mean and the
averaged model), prints the table and writes the choice to {exp_dir}/selected-checkpoint.json.
"""
from zipformer.tuners.scripts import select_script
from zipformer_adapter.adapter import AdapterTuner

get_parser, main = select_script(AdapterTuner())

if __name__ == "__main__":
    main()
