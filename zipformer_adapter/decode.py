#!/usr/bin/env python3
"""Decode with an adapter fine-tuned model, with the adapters on or off.

  # adapters on, averaged full checkpoints of the fine-tune
  ./zipformer_adapter/decode.py --epoch 20 --avg 10 --use-averaged-model 1 --use-adapters 1 \\
      --adapter-dim 16 --exp-dir zipformer_adapter/exp_adapter_dim16 --max-duration 600
  # the original model from the same checkpoint: adapters ignored, output identical to the base
  ./zipformer_adapter/decode.py --epoch 20 --avg 1 --use-averaged-model 0 --use-adapters 0 ...
  # one base model, adapter-only files: --base-ckpt pretrained.pt --adapter-ckpt adapter-epoch-20.pt
  # (or --base-ckpt with --epoch/--avg to average adapter-epoch-N.pt files)
  # both, in one run, with a forgetting report (WER with adapters off and on, every test set):
  ./zipformer_adapter/decode.py ... --use-adapters 1 --forgetting-report 1
  # GigaSpeech scoring: --gigaspeech-scoring 1 --test-cuts dev=data/fbank/cuts_DEV.jsonl.gz,test=data/fbank/cuts_TEST.jsonl.gz
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse  # noqa: E402
import logging  # noqa: E402
from typing import Dict  # noqa: E402

from zipformer import decoding  # noqa: E402
from zipformer.atomic import atomic_write_text  # noqa: E402
from zipformer.decoding import DecodingSession  # noqa: E402
from zipformer.model_config import flags_given  # noqa: E402
from zipformer.utils import UserError, exit_on_user_error, str2bool  # noqa: E402
from zipformer_adapter.adapter import adapters_disabled  # noqa: E402
from zipformer_adapter.decoding_recipe import AdapterDecodingRecipe  # noqa: E402


def write_forgetting_report(session: DecodingSession) -> Dict[str, Dict[str, float]]:
    """WER of every test set with the adapters off (the base model) and on."""
    params = session.params
    on = session.decode_all(session.suffix)
    with adapters_disabled(session.model):
        off = session.decode_all(session.suffix.replace(f"-adapters-dim-{params.adapter_dim}", "-adapters-off"))
    lines = ["test set\tadapters off (base)\tadapters on\trelative change"]
    for name in on:
        change = (on[name] - off[name]) / off[name] * 100 if off[name] else float("nan")
        lines.append(f"{name}\t{off[name]:.2f}\t{on[name]:.2f}\t{change:+.1f}%")
    report = "\n".join(lines) + "\n"
    filename = params.res_dir / f"forgetting-report-{session.suffix}.txt"
    atomic_write_text(filename, report)
    logging.info(f"Forgetting report (WER %), also in {filename}:\n{report}")
    return {"off": off, "on": on}


def get_parser() -> argparse.ArgumentParser:
    parser = decoding.get_parser(AdapterDecodingRecipe())
    parser.add_argument(
        "--forgetting-report",
        type=str2bool,
        default=False,
        help="With --use-adapters 1: decode every test set with the adapters off and on, and "
        "write forgetting-report-*.txt.",
    )
    return parser


def main() -> None:
    recipe = AdapterDecodingRecipe()
    parser = get_parser()
    args = parser.parse_args()
    with exit_on_user_error():
        if args.forgetting_report and not args.use_adapters:
            raise UserError("--forgetting-report compares adapters off and on: it needs --use-adapters 1")
        session = DecodingSession(recipe, args, flags_given(parser))
        if args.forgetting_report and not session.params.use_adapters:
            raise UserError(
                "--forgetting-report compares adapters off and on, but the checkpoint has no adapters "
                "(trained with --use-adapters 0): decode it without --forgetting-report"
            )
        if args.forgetting_report:
            write_forgetting_report(session)
        else:
            session.decode_all(session.suffix)
        logging.info("Done!")


if __name__ == "__main__":
    main()
