"""decode.py of a tuner recipe: the test sets with the tuner, with it off and on
(--forgetting-report), or with a registry of domains (--tuners, zipformer.tuners.domain_session)."""
import argparse
import logging
from typing import Dict

from zipformer.checkpoints.config import flags_given
from zipformer.core.atomic import atomic_write_text
from zipformer.core.errors import UserError, exit_on_user_error
from zipformer.core.flag_types import flag_name, str2bool
from zipformer.data.domain_names import add_cut_domain_arguments
from zipformer.decoding import session as decoding
from zipformer.decoding.session import DecodingSession
from zipformer.tuners.domain_session import CutDomainsRecipe, DomainsSession
from zipformer.tuners.recipes import TunerDecodingRecipe, add_tuners_argument
from zipformer.tuners.tensors import tuner_disabled
from zipformer.tuners.tuner import Tuner


class TunerDecodeRecipe(TunerDecodingRecipe):
    """TunerDecodingRecipe with decode.py's own flags: --forgetting-report and the registry's."""

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        super().add_arguments(parser)
        parser.add_argument(
            "--forgetting-report",
            type=str2bool,
            default=False,
            help=f"Decode every test set with the {self.tuner.name} off and on, and write forgetting-report-*.txt.",
        )
        add_tuners_argument(parser, self.tuner)
        add_cut_domain_arguments(parser)
        parser.add_argument(
            "--mixed-domains",
            type=str2bool,
            default=False,
            help="With --tuners: decode all test sets as one shuffled cut set, so that batches mix domains.",
        )


def write_forgetting_report(session: DecodingSession, tuner: Tuner) -> Dict[str, Dict[str, float]]:
    """WER of every test set with the tuner off (the base model) and on."""
    params = session.params
    on = session.decode_all(session.suffix)
    off_suffix = session.suffix.replace(tuner.describe(params), f"-{tuner.name}-off")
    with tuner_disabled(session.model, tuner):
        off = session.decode_all(off_suffix)
    lines = [f"test set\t{tuner.name} off (base)\t{tuner.name} on\trelative change"]
    for name in on:
        change = (on[name] - off[name]) / off[name] * 100 if off[name] else float("nan")
        lines.append(f"{name}\t{off[name]:.2f}\t{on[name]:.2f}\t{change:+.1f}%")
    report = "\n".join(lines) + "\n"
    filename = params.res_dir / f"forgetting-report-{session.suffix}.txt"
    atomic_write_text(filename, report)
    logging.info(f"Forgetting report (WER %), also in {filename}:\n{report}")
    return {"off": off, "on": on}


def decode_domains(tuner: Tuner, args: argparse.Namespace, given: frozenset) -> Dict[str, float]:
    """decode.py --tuners: every cut in its own domain; returns {test_set_name: WER %}."""
    if args.forgetting_report:
        raise UserError("--forgetting-report compares one tuner off and on: decode --tuners without it")
    session = DomainsSession(CutDomainsRecipe(tuner), args, given)
    return session.decode_all(session.suffix)


def decode_main(recipe: TunerDecodeRecipe) -> None:
    """decode.py of a tuner recipe."""
    tuner = recipe.tuner
    parser = decoding.get_parser(recipe)
    args = parser.parse_args()
    switch = flag_name(tuner.switch)
    with exit_on_user_error():
        if args.tuners:
            decode_domains(tuner, args, flags_given(parser))
            logging.info("Done!")
            return
        if args.cut_domains or args.mixed_domains:
            raise UserError("--cut-domains and --mixed-domains need --tuners name=path,... (the registry of domains)")
        if args.forgetting_report and not getattr(args, tuner.switch):
            raise UserError(f"--forgetting-report compares {tuner.name} off and on: it needs {switch} 1")
        session = DecodingSession(recipe, args, flags_given(parser))
        if args.forgetting_report and not session.params[tuner.switch]:
            raise UserError(
                f"--forgetting-report compares {tuner.name} off and on, but the checkpoint has none "
                f"(trained with {switch} 0): decode it without --forgetting-report"
            )
        if args.forgetting_report:
            write_forgetting_report(session, tuner)
        else:
            session.decode_all(session.suffix)
        logging.info("Done!")
