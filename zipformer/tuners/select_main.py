"""select_checkpoint.py of a tuner recipe: decode the dev sets with every candidate checkpoint, and
choose the one with the best target-dev WER whose source-dev WER stays within a budget
(zipformer.tuners.selection); decode.py and export-onnx.py read the choice with --use-selected 1."""
import argparse
import logging
from pathlib import Path

from zipformer.checkpoints.averaging import load_averaged_state_dict
from zipformer.checkpoints.checkpoint import StateDict, epoch_numbers
from zipformer.checkpoints.config import flags_given
from zipformer.core.atomic import atomic_write_text
from zipformer.core.errors import UserError, exit_on_user_error
from zipformer.core.flag_types import comma_list, flag_name, int_at_least, non_negative_float, str2bool
from zipformer.data.default_cuts import default_dev_sets
from zipformer.decoding import session as decoding
from zipformer.decoding.session import DecodingSession
from zipformer.tuners.files import base_fingerprint, load_tuner_file
from zipformer.tuners.recipes import TunerDecodingRecipe
from zipformer.tuners.selection import choose, format_table, list_candidates, make_row, write_selection
from zipformer.tuners.tensors import base_tensors, load_with_tuner, tuner_disabled, tuner_tensors
from zipformer.tuners.tuner import Tuner


class _SelectionSession(DecodingSession):
    """Decodes the dev sets into {exp_dir}/selection/{method}, apart from decode.py's test results."""

    results_subdir = "selection"


class TunerSelectionRecipe(TunerDecodingRecipe):
    """TunerDecodingRecipe with select_checkpoint.py's own flags (decode.py's checkpoint and test-set
    flags stay, but the selection sets them)."""

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        super().add_arguments(parser)
        tuner = self.tuner
        group = parser.add_argument_group("Checkpoint selection options")
        group.add_argument(
            "--epoch-candidates",
            type=comma_list(int_at_least(1)),
            default=None,
            help=f"Comma-separated epochs to try (default: every {tuner.file_prefix}epoch-N.pt of --exp-dir).",
        )
        group.add_argument(
            "--avg-candidates", type=comma_list(int_at_least(1)), default="1,2,3", help="Comma-separated --avg values to try."
        )
        group.add_argument(
            "--averaged-candidates",
            type=comma_list(str2bool),
            default="0,1",
            help="Comma-separated --use-averaged-model values to try: 0 (plain mean of epoch files), 1 (averaged model).",
        )
        group.add_argument("--source-dev", type=str, default=None, help="Source-domain dev cuts (default: from --manifest-dir).")
        group.add_argument("--target-dev", type=str, default=None, help="Target-domain dev cuts (default: from --manifest-dir).")
        group.add_argument(
            "--max-source-rise",
            type=non_negative_float,
            default=1.0,
            help=f"The budget: how many absolute WER points the source-dev WER with the {tuner.name} on may rise "
            f"over the base model's ({tuner.name} off).",
        )


def _swap_in_tuner(session: DecodingSession, tuner: Tuner, base: StateDict, base_print: str, prefix: str) -> str:
    """Load the tuner tensors of the checkpoint session.params names into the model; return what they are."""
    params = session.params
    weights = load_averaged_state_dict(params, device="cpu", prefix=prefix)
    if prefix and load_tuner_file(Path(weights.source), tuner)["base_fingerprint"] != base_print:
        raise UserError(f"{weights.source} was trained on another base model than the other checkpoints of {params.exp_dir}")
    tensors = {k: v.to(session.device) for k, v in tuner_tensors(weights.state_dict, tuner).items()}
    load_with_tuner(session.model, {**base, **tensors}, tuner, weights.source, required=True)
    return weights.description


def select_main(recipe: TunerSelectionRecipe) -> None:
    """select_checkpoint.py: decode the dev sets with every candidate, choose under the budget, write the choice."""
    tuner = recipe.tuner
    parser = decoding.get_parser(recipe)
    args = parser.parse_args()
    with exit_on_user_error():
        chosen_by_us = {"epoch", "iter", "avg", "use_averaged_model", "test_cuts", "use_selected", "tuner_ckpt"}
        clash = sorted(chosen_by_us & flags_given(parser))
        if clash:
            raise UserError(
                f"select_checkpoint.py sets {', '.join(map(flag_name, clash))} itself: leave "
                f"{'it' if len(clash) == 1 else 'them'} out (candidates: "
                "--epoch-candidates, --avg-candidates, --averaged-candidates; dev sets: --source-dev, --target-dev)"
            )
        exp_dir = Path(args.exp_dir)
        prefix = tuner.file_prefix if epoch_numbers(exp_dir, tuner.file_prefix) else ""
        present = epoch_numbers(exp_dir, prefix)
        epochs = args.epoch_candidates or present
        if not epochs:
            raise UserError(f"no epoch-N.pt in {exp_dir}: check --exp-dir")
        default_source, default_target = default_dev_sets(Path(args.manifest_dir))
        dev_sets = {"source": args.source_dev or default_source, "target": args.target_dev or default_target}
        candidates = list_candidates(epochs, args.avg_candidates, args.averaged_candidates)
        # The newest candidate's files build the model (and name the base); then only tuner tensors change.
        args.epoch, args.avg, args.use_averaged_model, args.iter = max(epochs), 1, False, 0
        args.test_cuts = ",".join(f"{name}={path}" for name, path in dev_sets.items())
        session = _SelectionSession(recipe, args, flags_given(parser))
        params = session.params
        if not params[tuner.switch]:
            raise UserError(f"{exp_dir} holds no {tuner.name} (trained with {flag_name(tuner.switch)} 0): nothing to select")
        base = base_tensors(session.model.state_dict(), tuner)
        base_print = base_fingerprint(base, tuner)
        with tuner_disabled(session.model, tuner):
            base_source = session.decode_all(f"base-{tuner.name}-off", names=["source"])["source"]
        rows = []
        for candidate in candidates:
            params.update(epoch=candidate.epoch, avg=candidate.avg, use_averaged_model=candidate.use_averaged_model)
            logging.info(f"Candidate {candidate.describe()}: {_swap_in_tuner(session, tuner, base, base_print, prefix)}")
            wers = session.decode_all(decoding.result_suffix(params, recipe))
            rows.append(make_row(candidate, wers["target"], wers["source"], base_source, args.max_source_rise))
        try:
            chosen = choose(rows, args.max_source_rise)
        except UserError:
            print(format_table(rows, None, base_source, args.max_source_rise), end="")
            raise
        table = format_table(rows, chosen, base_source, args.max_source_rise)
        atomic_write_text(params.res_dir / "selection-table.txt", table)
        path = write_selection(exp_dir, chosen, rows, base_source, args.max_source_rise, dev_sets)
        print(table, end="")
        print(f"chosen: {chosen.candidate.describe()} (written to {path}; use it with --use-selected 1)")
