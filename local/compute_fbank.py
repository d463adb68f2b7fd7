#!/usr/bin/env python3
"""80-dim Fbank features (lhotse Fbank, lilcom storage) for recordings + supervisions manifests.

Usage:
  ./local/compute_fbank.py --dataset source target --parts train dev test \
      [--manifest-dir data/manifests] [--fbank-dir data/fbank] [--num-jobs 2] \
      [--speed-perturb-parts train] [--trim-to-supervisions] [--skip-missing]

Reads   {manifest-dir}/{dataset}_{recordings,supervisions}_{part}.jsonl.gz,
writes  {fbank-dir}/{dataset}_cuts_{part}.jsonl.gz and the features in {fbank-dir}/{dataset}_feats_{part}/.
Manifests are validated (lhotse + file checks) before any feature is computed. A part is skipped
when its cuts file is newer than its manifests. Speed perturbation (x0.9, x1.1, as icefall's
LibriSpeech recipe) triples the listed parts.
"""
import argparse
import logging
from pathlib import Path

from local.features import compute_fbank_for_manifests
from local.manifest_io import up_to_date
from zipformer.core.errors import exit_on_user_error


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", nargs="+", required=True, help="manifest prefixes, e.g. source target, or librispeech")
    parser.add_argument("--parts", nargs="+", required=True)
    parser.add_argument("--manifest-dir", type=Path, default=Path("data/manifests"))
    parser.add_argument("--fbank-dir", type=Path, default=Path("data/fbank"))
    parser.add_argument("--num-jobs", type=int, default=2)
    parser.add_argument("--speed-perturb-parts", nargs="*", default=[], help="parts to perturb by 0.9/1.1")
    parser.add_argument("--trim-to-supervisions", action="store_true", help="one cut per supervision (long recordings)")
    parser.add_argument("--skip-missing", action="store_true", help="skip parts without manifests (e.g. a split of size 0)")
    return parser


def main() -> None:
    args = get_parser().parse_args()
    logging.basicConfig(format="%(asctime)s %(levelname)s [%(filename)s:%(lineno)d] %(message)s", level=logging.INFO)
    with exit_on_user_error():
        for dataset in args.dataset:
            for part in args.parts:
                recordings = args.manifest_dir / f"{dataset}_recordings_{part}.jsonl.gz"
                supervisions = args.manifest_dir / f"{dataset}_supervisions_{part}.jsonl.gz"
                cuts = args.fbank_dir / f"{dataset}_cuts_{part}.jsonl.gz"
                if args.skip_missing and not recordings.exists():
                    logging.info(f"no {recordings}, skipping {dataset} {part}")
                    continue
                if up_to_date([cuts], [recordings, supervisions]):
                    logging.info(f"{cuts} is up to date, skipping")
                    continue
                compute_fbank_for_manifests(
                    recordings,
                    supervisions,
                    cuts,
                    args.fbank_dir / f"{dataset}_feats_{part}",
                    num_jobs=args.num_jobs,
                    perturb_speed=part in args.speed_perturb_parts,
                    trim_to_supervisions=args.trim_to_supervisions,
                )


if __name__ == "__main__":
    main()
