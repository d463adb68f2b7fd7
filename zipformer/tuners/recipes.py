"""A tuner (zipformer.tuners.tuner.Tuner) plugged into the shared training, decoding and export machinery.

A tuner's recipe directory is its Tuner plus thin scripts:
  train.py:       training.main(TunerTrainingRecipe(tuner))
  decode.py:      decode_main(tuner)        (with --forgetting-report: the tuner off and on)
  export-onnx.py: export_main(tuner)        (with --merge-{name} when the tuner can merge)
  export-onnx-streaming.py: streaming_export_main(tuner)  (a causal model; the same flags)
  pretrained.py:  pretrained_main(tuner)
  select_checkpoint.py: select_main(tuner)  (the checkpoint with the best target-dev WER whose
                  source-dev WER stays within a budget; decode/export read it with --use-selected 1)
  merge.py:       merge_main(tuner)         (mergeable tuners: a plain base checkpoint)
The fine-tune flags are icefall's (--do-finetune, --finetune-ckpt, --init-modules, the tuner's
--use-*/size flags); one base model serves several tuners through `--base-ckpt` + tuner-only files,
and several domains at once through `--tuners name=path,...` (zipformer.tuners.domains): decode.py,
pretrained.py and export-onnx.py then run each utterance in its own domain.
"""
import argparse
import logging
from dataclasses import replace
from pathlib import Path
from types import ModuleType
from typing import Any, Dict, List, Mapping, Optional

from torch import nn

from zipformer.checkpoints.checkpoint import (
    LoadedWeights,
    StateDict,
    add_checkpoint_arguments,
    checkpoint_suffix,
    epoch_numbers,
    load_averaged_state_dict,
    read_model_file,
    write_checkpoint_file,
)
from zipformer.checkpoints.config import flags_given, model_config
from zipformer.checkpoints.loader import DecodingRecipe, resolve_weights
from zipformer.core.atomic import atomic_write_text
from zipformer.core.errors import UserError, exit_on_user_error
from zipformer.core.flag_types import comma_list, flag_name, int_at_least, non_negative_float, str2bool
from zipformer.core.params import AttributeDict
from zipformer.data.default_cuts import default_cuts, default_dev_sets
from zipformer.data.domain_names import add_cut_domain_arguments, add_file_domain_arguments, file_domains
from zipformer.decoding import session as decoding
from zipformer.decoding import transcribe as pretrained
from zipformer.decoding.session import DecodingSession
from zipformer.deploy import export as onnx_export
from zipformer.deploy import export_streaming as onnx_export_streaming
from zipformer.model.builder import check_causal
from zipformer.model.builder import get_model as get_base_model
from zipformer.model.flags import MODEL_CONFIG_KEYS, add_context_size_argument, add_model_arguments
from zipformer.training import trainer as training
from zipformer.training.trainer import TrainingRecipe, load_pretrained_weights
from zipformer.tuners.domain_session import DomainsSession
from zipformer.tuners.domains import DomainsRecipe
from zipformer.tuners.files import base_fingerprint, combine_base_and_tuner, load_tuner_file, save_tuner_file
from zipformer.tuners.onnx_domains import export_domains
from zipformer.tuners.selection import (
    SELECTION_FILE,
    apply_selection,
    choose,
    format_table,
    list_candidates,
    make_row,
    write_selection,
)
from zipformer.tuners.tensors import (
    base_tensors,
    check_tuner_size,
    freeze_all_but_tuner,
    load_with_tuner,
    tuner_disabled,
    tuner_tensors,
)
from zipformer.tuners.tuner import Tuner


def add_tuner_arguments(parser: argparse.ArgumentParser, tuner: Tuner, for_training: bool) -> None:
    group = parser.add_argument_group(f"{tuner.name} options")
    tuner.add_arguments(group, for_training)
    if for_training:
        group.add_argument(
            "--do-finetune",
            type=str2bool,
            default=True,
            help="Start from --finetune-ckpt. A resumed run (--start-epoch > 1 or --start-batch > 0) "
            "takes its weights from the resumed checkpoint whatever this flag says.",
        )
        return
    group.add_argument(
        f"--{tuner.file_prefix}ckpt",
        dest="tuner_ckpt",
        type=str,
        default=None,
        help=f"A {tuner.name}-only file ({tuner.file_prefix}epoch-N.pt) to put on top of --base-ckpt, "
        "instead of the full checkpoints of --exp-dir.",
    )
    group.add_argument(
        "--base-ckpt",
        type=str,
        default=None,
        help=f"The base model ({{'model': state_dict}}) the {tuner.name}-only files were trained on; "
        f"with it, --epoch/--avg average {tuner.file_prefix}epoch-N.pt files of --exp-dir.",
    )
    group.add_argument(
        "--use-selected",
        type=str2bool,
        default=False,
        help=f"Use the checkpoint select_checkpoint.py chose ({{exp-dir}}/{SELECTION_FILE}): its epoch, avg "
        "and use-averaged-model replace --epoch/--avg/--use-averaged-model.",
    )


def add_tuners_argument(parser: argparse.ArgumentParser, tuner: Tuner) -> None:
    parser.add_argument(
        "--tuners",
        type=str,
        default=None,
        help=f"Several domains on one base: name=path,... of {tuner.name}-only files ({tuner.file_prefix}epoch-N.pt) "
        "trained on --base-ckpt, each utterance run in its own domain ('base': no tuner).",
    )


def get_tuned_model(params: AttributeDict, tuner: Tuner) -> nn.Module:
    """The base transducer, with fresh tuner modules when the tuner's switch is on."""
    model = get_base_model(params)
    if params[tuner.switch]:
        count = tuner.inject(model, params)
        logging.info(f"{tuner.name}: {flag_name(tuner.size)} {params[tuner.size]}, {count} parameters")
    elif params[tuner.size] != tuner.size_default:
        logging.warning(
            f"{flag_name(tuner.size)} {params[tuner.size]} is ignored: {flag_name(tuner.switch)} 0 builds the model "
            f"without {tuner.name} (pass {flag_name(tuner.switch)} 1 to use them)"
        )
    return model


class TunerTrainingRecipe(TrainingRecipe):
    """Fine-tune a base model with a tuner (only its tensors train), or all weights with the switch off."""

    def __init__(self, tuner: Tuner) -> None:
        self.tuner = tuner
        self.config_keys = TrainingRecipe.config_keys + tuner.config_keys
        self.off_switches = (tuner.switch,)

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        add_tuner_arguments(parser, self.tuner, for_training=True)

    def get_model(self, params: AttributeDict) -> nn.Module:
        return get_tuned_model(params, self.tuner)

    def is_finetuning(self, params: AttributeDict) -> bool:
        if params.do_finetune and not params.finetune_ckpt:
            raise UserError("--do-finetune 1 needs --finetune-ckpt PATH (the pretrained model to fine-tune)")
        return params.do_finetune

    def init_from_pretrained(self, model: nn.Module, params: AttributeDict) -> None:
        tuner = self.tuner
        if not params[tuner.switch] or params.init_modules:
            load_pretrained_weights(model, params.finetune_ckpt, params.init_modules)
            return
        state_dict = read_model_file(params.finetune_ckpt, flag="--finetune-ckpt").state_dict
        check_causal(state_dict, params.causal, params.finetune_ckpt)
        found = len(tuner_tensors(state_dict, tuner))
        if found:
            check_tuner_size(state_dict, tuner, params[tuner.size], params.finetune_ckpt)
        load_with_tuner(model, state_dict, tuner, params.finetune_ckpt, required=False)
        logging.info(
            f"Initialised the base model from {params.finetune_ckpt}"
            + (f" (and its {found} {tuner.name} tensors)" if found else f"; {tuner.name} start fresh")
        )

    def select_trainable(self, model: nn.Module, params: AttributeDict) -> None:
        if params[self.tuner.switch]:
            freeze_all_but_tuner(model, self.tuner)
        else:
            model.requires_grad_(True)

    def choose_data(self, params: AttributeDict) -> None:
        if params.train_cuts is not None and params.valid_cuts is not None:
            return
        what, train, valid = default_cuts(Path(params.manifest_dir))
        if params.train_cuts is None:
            params.train_cuts = train
            logging.info(f"No --train-cuts: fine-tuning on {what} ({train})")
        if params.valid_cuts is None:
            params.valid_cuts = valid
            logging.info(f"No --valid-cuts: validating on {valid}")

    def set_train_mode(self, model: nn.Module, params: AttributeDict) -> None:
        if params[self.tuner.switch]:
            self.tuner.set_train_mode(model)
        else:
            model.train()

    def companion_prefixes(self, params: AttributeDict) -> tuple:
        return (self.tuner.file_prefix,) if params[self.tuner.switch] else ()

    def on_checkpoint_saved(self, filename: Path, info: Mapping[str, Any], model: nn.Module, model_avg) -> None:
        if info["model_config"][self.tuner.switch]:
            save_tuner_file(filename.with_name(self.tuner.file_prefix + filename.name), model, model_avg, info, self.tuner)


class TunerDecodingRecipe(DecodingRecipe):
    """Decode or export a tuned model: full checkpoints, or a base model plus tuner-only files."""

    def __init__(self, tuner: Tuner) -> None:
        self.tuner = tuner
        self.config_keys = DecodingRecipe.config_keys + tuner.config_keys
        self.off_switches = (tuner.switch,)

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        add_tuner_arguments(parser, self.tuner, for_training=False)

    def get_model(self, params: AttributeDict) -> nn.Module:
        return get_tuned_model(params, self.tuner)

    def load_state_dict(self, params: AttributeDict) -> LoadedWeights:
        if not params.get("use_selected"):
            return self._load_state_dict(params)
        chosen = apply_selection(params, {f"--{self.tuner.file_prefix}ckpt": "tuner_ckpt"})
        weights = self._load_state_dict(params)
        # Logged with the description once the log is set up (decoding sets it up after loading).
        where = Path(params.exp_dir) / SELECTION_FILE
        return replace(weights, description=f"{weights.description} ({chosen.describe()}, chosen in {where})")

    def _load_state_dict(self, params: AttributeDict) -> LoadedWeights:
        tuner = self.tuner
        if params.tuner_ckpt:
            if not params.base_ckpt:
                raise UserError(f"--{tuner.file_prefix}ckpt needs --base-ckpt (the base model it was trained on)")
            checkpoint = load_tuner_file(Path(params.tuner_ckpt), tuner)
            return LoadedWeights(
                self._on_base(params.base_ckpt, checkpoint["model"], checkpoint["base_fingerprint"], params.tuner_ckpt),
                f"{params.base_ckpt} with the {tuner.name} of {params.tuner_ckpt}",
                params.tuner_ckpt,
                checkpoint.get("model_config"),
                checkpoint.get("vocabulary"),
            )
        if params.base_ckpt:
            tensors = load_averaged_state_dict(params, device="cpu", prefix=tuner.file_prefix)
            # The newest tuner file used (for --iter: the newest at or below it) names the base.
            fingerprint = load_tuner_file(Path(tensors.source), tuner)["base_fingerprint"]
            return replace(
                tensors,
                state_dict=self._on_base(params.base_ckpt, tensors.state_dict, fingerprint, tensors.source),
                description=f"{params.base_ckpt} with {tuner.name}: {tensors.description}",
            )
        return super().load_state_dict(params)

    def _on_base(self, base_ckpt: str, tensors: StateDict, fingerprint: str, tuner_source: str) -> StateDict:
        """The tuner tensors on the weights of --base-ckpt, which must be the base they were trained on."""
        base = read_model_file(base_ckpt, flag="--base-ckpt").state_dict
        return combine_base_and_tuner(base, tensors, fingerprint, base_ckpt, tuner_source, self.tuner)

    def load_weights(self, model: nn.Module, weights: LoadedWeights, params: AttributeDict) -> None:
        tuner, state_dict = self.tuner, weights.state_dict
        if params[tuner.switch]:
            check_tuner_size(state_dict, tuner, params[tuner.size], weights.source)
            load_with_tuner(model, state_dict, tuner, weights.source, required=True)
            return
        base = base_tensors(state_dict, tuner)
        if len(base) < len(state_dict):
            logging.info(
                f"{flag_name(tuner.switch)} 0: ignoring the checkpoint's {len(state_dict) - len(base)} "
                f"{tuner.name} tensors (the original model)"
            )
        load_with_tuner(model, base, tuner, weights.source, required=False)

    def describe(self, params: AttributeDict) -> str:
        return self.tuner.describe(params)


# ---- decode.py -----------------------------------------------------------------------------------


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


def get_decode_parser(tuner: Tuner) -> argparse.ArgumentParser:
    parser = decoding.get_parser(TunerDecodingRecipe(tuner))
    parser.add_argument(
        "--forgetting-report",
        type=str2bool,
        default=False,
        help=f"Decode every test set with the {tuner.name} off and on, and write forgetting-report-*.txt.",
    )
    add_tuners_argument(parser, tuner)
    add_cut_domain_arguments(parser)
    parser.add_argument(
        "--mixed-domains",
        type=str2bool,
        default=False,
        help="With --tuners: decode all test sets as one shuffled cut set, so that batches mix domains.",
    )
    return parser


def decode_domains(tuner: Tuner, args: argparse.Namespace, given: frozenset) -> Dict[str, float]:
    """decode.py --tuners: every cut in its own domain; returns {test_set_name: WER %}."""
    if args.forgetting_report:
        raise UserError("--forgetting-report compares one tuner off and on: decode --tuners without it")
    session = DomainsSession(DomainsRecipe(tuner), args, given)
    return session.decode_all(session.suffix)


def decode_main(tuner: Tuner) -> None:
    parser = get_decode_parser(tuner)
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
        session = DecodingSession(TunerDecodingRecipe(tuner), args, flags_given(parser))
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


# ---- pretrained.py -------------------------------------------------------------------------------


def get_pretrained_parser(tuner: Tuner) -> argparse.ArgumentParser:
    parser = pretrained.get_parser(TunerDecodingRecipe(tuner))
    add_tuners_argument(parser, tuner)
    add_file_domain_arguments(parser)
    return parser


def transcribe(tuner: Tuner, params: AttributeDict, given: frozenset) -> List[str]:
    """pretrained.py's texts: with --tuners, each sound file in its --domain / --domains."""
    names = file_domains(params, params.sound_files)
    if not params.tuners:
        if names is not None:
            raise UserError("--domain and --domains need --tuners name=path,... (the registry of domains)")
        return pretrained.transcribe(params, TunerDecodingRecipe(tuner), given)
    if names is None:
        raise UserError("--tuners needs each file's domain: --domain NAME for all, or --domains a,b,... (one per file)")
    recipe = DomainsRecipe(tuner)
    return pretrained.transcribe(params, recipe, given, lambda model: recipe.registry.selected(model, names, "--domains"))


def pretrained_main(tuner: Tuner) -> None:
    """pretrained.py of a tuner recipe (the base model is --checkpoint, or --base-ckpt)."""
    pretrained.main(
        TunerDecodingRecipe(tuner), get_pretrained_parser(tuner), lambda params, given: transcribe(tuner, params, given)
    )


# ---- select_checkpoint.py ------------------------------------------------------------------------


class _SelectionSession(DecodingSession):
    """Decodes the dev sets into {exp_dir}/selection/{method}, apart from decode.py's test results."""

    results_subdir = "selection"


def get_select_parser(tuner: Tuner) -> argparse.ArgumentParser:
    """decode.py's flags (but the checkpoint and test-set ones, which the selection sets) and its own."""
    parser = decoding.get_parser(TunerDecodingRecipe(tuner))
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
    return parser


def _swap_in_tuner(session: DecodingSession, tuner: Tuner, base: StateDict, base_print: str, prefix: str) -> str:
    """Load the tuner tensors of the checkpoint session.params names into the model; return what they are."""
    params = session.params
    weights = load_averaged_state_dict(params, device="cpu", prefix=prefix)
    if prefix and load_tuner_file(Path(weights.source), tuner)["base_fingerprint"] != base_print:
        raise UserError(f"{weights.source} was trained on another base model than the other checkpoints of {params.exp_dir}")
    tensors = {k: v.to(session.device) for k, v in tuner_tensors(weights.state_dict, tuner).items()}
    load_with_tuner(session.model, {**base, **tensors}, tuner, weights.source, required=True)
    return weights.description


def select_main(tuner: Tuner) -> None:
    """select_checkpoint.py: decode the dev sets with every candidate, choose under the budget, write the choice."""
    parser = get_select_parser(tuner)
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
        session = _SelectionSession(TunerDecodingRecipe(tuner), args, flags_given(parser))
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
            wers = session.decode_all(decoding.result_suffix(params, TunerDecodingRecipe(tuner)))
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


# ---- export-onnx.py ------------------------------------------------------------------------------


class _MergingRecipe(TunerDecodingRecipe):
    """Loads the tuned model as usual, then folds the tuner into the base weights."""

    def load_weights(self, model: nn.Module, weights: LoadedWeights, params: AttributeDict) -> None:
        super().load_weights(model, weights, params)
        self.tuner.merge(model)


def _merge_flag(tuner: Tuner) -> str:
    return f"merge_{tuner.name}"


def get_export_parser(
    tuner: Tuner, default_exp_dir: str, exporter: ModuleType = onnx_export
) -> argparse.ArgumentParser:
    """The flags of `exporter` (onnx_export or onnx_export_streaming) for the tuned model."""
    parser = exporter.get_parser(TunerDecodingRecipe(tuner), default_exp_dir)
    if tuner.mergeable:
        parser.add_argument(
            flag_name(_merge_flag(tuner)),
            type=str2bool,
            default=False,
            help=f"Fold the {tuner.name} into the base weights first: the files are a plain Zipformer "
            f"(no {tuner.name} nodes, no extra cost at inference) that any runtime loads.",
        )
    if exporter is onnx_export:
        add_tuners_argument(parser, tuner)
    return parser


def export_domains_main(
    tuner: Tuner, default_exp_dir: str, argv: Optional[List[str]], parser: argparse.ArgumentParser, merge: bool
) -> Dict[str, Path]:
    """export-onnx.py --tuners: one encoder for every domain (input `domain`), encoder-domains-{names}.onnx."""
    recipe = DomainsRecipe(tuner)

    def export_function(
        params: AttributeDict, recipe: DomainsRecipe, metadata, file_suffix, given: frozenset
    ) -> Dict[str, Path]:
        if merge:
            raise UserError(
                f"{flag_name(_merge_flag(tuner))} folds one {tuner.name} into the base: export --tuners without it"
            )
        return export_domains(params, recipe, metadata, file_suffix, given)

    def file_suffix(params: AttributeDict) -> str:
        return "domains-" + "-".join(recipe.registry.names)

    return onnx_export.main(
        recipe, default_exp_dir, None, file_suffix, argv, parser=parser, export_function=export_function
    )


def export_main(
    tuner: Tuner, default_exp_dir: str, argv: Optional[List[str]] = None, exporter: ModuleType = onnx_export
) -> Dict[str, Path]:
    """export-onnx.py of a tuner recipe (with onnx_export_streaming: export-onnx-streaming.py); the
    encoder's metadata records the tuner (or the merge)."""
    parser = get_export_parser(tuner, default_exp_dir, exporter)
    known, _ = parser.parse_known_args(argv)
    merge = bool(getattr(known, _merge_flag(tuner), False))
    if getattr(known, "tuners", None):
        return export_domains_main(tuner, default_exp_dir, argv, parser, merge)
    recipe = _MergingRecipe(tuner) if merge else TunerDecodingRecipe(tuner)

    def metadata(params: AttributeDict, state_dict: StateDict) -> Dict[str, str]:
        extra = tuner.onnx_metadata(params, state_dict)
        if merge:
            extra[f"{tuner.name}_merged"] = "1"
        return extra

    def file_suffix(params: AttributeDict) -> str:
        suffix = Path(params.tuner_ckpt).stem if params.tuner_ckpt else checkpoint_suffix(params)
        return suffix + (f"-{tuner.name}-merged" if merge else "")

    return exporter.main(recipe, default_exp_dir, metadata, file_suffix, argv, parser=parser)


def get_streaming_export_parser(tuner: Tuner, default_exp_dir: str) -> argparse.ArgumentParser:
    return get_export_parser(tuner, default_exp_dir, onnx_export_streaming)


def streaming_export_main(tuner: Tuner, default_exp_dir: str, argv: Optional[List[str]] = None) -> Dict[str, Path]:
    """export-onnx-streaming.py of a tuner recipe: the tuned causal model as streaming ONNX."""
    return export_main(tuner, default_exp_dir, argv, onnx_export_streaming)


# ---- merge.py ------------------------------------------------------------------------------------


def get_merge_parser(tuner: Tuner) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    group = parser.add_argument_group("Merge options")
    add_checkpoint_arguments(group, f"zipformer_{tuner.name}/exp", "Merge", "Checkpoints are read here.")
    group.add_argument("--checkpoint", type=str, default=None, help="One file to merge instead of --epoch/--avg.")
    add_context_size_argument(group)
    group.add_argument("--out", type=Path, required=True, help="The merged {'model': state_dict} file.")
    add_model_arguments(parser)
    add_tuner_arguments(parser, tuner, for_training=False)
    return parser


def merge_main(tuner: Tuner) -> None:
    """merge.py of a mergeable tuner: the tuned weights folded into a plain base checkpoint."""
    parser = get_merge_parser(tuner)
    params = AttributeDict({"feature_dim": 80, "blank_id": 0, **vars(parser.parse_args())})
    recipe = TunerDecodingRecipe(tuner)
    with exit_on_user_error():
        if not params[tuner.switch]:
            raise UserError(f"{flag_name(tuner.switch)} 0 leaves nothing to merge: drop the flag")
        weights = resolve_weights(params, recipe, flags_given(parser))
        embedding = weights.state_dict.get("decoder.embedding.weight")
        if embedding is None:
            raise UserError(f"{weights.source} has no decoder.embedding.weight: it is not a transducer checkpoint")
        params.vocab_size = embedding.shape[0]
        model = recipe.get_model(params)
        recipe.load_weights(model, weights, params)
        tuner.merge(model)
    merged = {
        "model": model.state_dict(),
        "model_config": model_config(params, MODEL_CONFIG_KEYS),
        "vocabulary": weights.vocabulary,
    }
    write_checkpoint_file(params.out, merged)
    print(f"wrote {params.out}: {len(merged['model'])} tensors, {weights.description} with {tuner.name} merged")


# ---- the scripts of a tuner's recipe directory ---------------------------------------------------
# Each returns the functions icefall's scripts expose, so a recipe's script is its docstring plus
#   get_parser, main = decode_script(MyTuner())


def train_script(tuner: Tuner) -> tuple:
    """(get_parser, get_params, get_model, main) of train.py."""
    recipe = TunerTrainingRecipe(tuner)

    def get_parser() -> argparse.ArgumentParser:
        return training.get_parser(recipe)

    def get_model(params: AttributeDict) -> nn.Module:
        return recipe.get_model(params)

    return get_parser, training.get_params, get_model, lambda: training.main(recipe)


def select_script(tuner: Tuner) -> tuple:
    """(get_parser, main) of select_checkpoint.py."""
    return (lambda: get_select_parser(tuner)), (lambda: select_main(tuner))


def decode_script(tuner: Tuner) -> tuple:
    """(get_parser, main) of decode.py."""
    return (lambda: get_decode_parser(tuner)), (lambda: decode_main(tuner))


def export_script(tuner: Tuner, default_exp_dir: str) -> tuple:
    """(get_parser, main) of export-onnx.py; main(argv) returns the written files by name."""
    return (lambda: get_export_parser(tuner, default_exp_dir)), (
        lambda argv=None: export_main(tuner, default_exp_dir, argv)
    )


def streaming_export_script(tuner: Tuner, default_exp_dir: str) -> tuple:
    """(get_parser, main) of export-onnx-streaming.py; main(argv) returns the written files by name."""
    return (lambda: get_streaming_export_parser(tuner, default_exp_dir)), (
        lambda argv=None: streaming_export_main(tuner, default_exp_dir, argv)
    )


def pretrained_script(tuner: Tuner) -> tuple:
    """(get_parser, main) of pretrained.py."""
    return (lambda: get_pretrained_parser(tuner)), (lambda: pretrained_main(tuner))


def merge_script(tuner: Tuner) -> tuple:
    """(get_parser, main) of merge.py."""
    return (lambda: get_merge_parser(tuner)), (lambda: merge_main(tuner))
