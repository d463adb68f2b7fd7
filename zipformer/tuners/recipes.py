"""A tuner (zipformer.tuners.tuner.Tuner) plugged into the shared training, decoding and export machinery.

`TunerTrainingRecipe` and `TunerDecodingRecipe` are the recipe objects whose hooks the machinery
calls; each script of a tuner's recipe directory is a main over them (zipformer.tuners.scripts):
  train.py:       zipformer.training.main.main(TunerTrainingRecipe(tuner))
  decode.py:      zipformer.tuners.decode_main  (with --forgetting-report: the tuner off and on)
  export-onnx.py: zipformer.tuners.export_main  (with --merge-{name} when the tuner can merge)
  export-onnx-streaming.py: zipformer.tuners.export_main too (a causal model, as streaming ONNX)
  pretrained.py:  zipformer.tuners.pretrained_main
  select_checkpoint.py: zipformer.tuners.select_main (the checkpoint with the best target-dev WER
                  whose source-dev WER stays within a budget; decode/export read it with --use-selected 1)
  merge.py:       zipformer.tuners.merge_main   (mergeable tuners: a plain base checkpoint)
The fine-tune flags are icefall's (--do-finetune, --finetune-ckpt, --init-modules, the tuner's
--use-*/size flags); one base model serves several tuners through `--base-ckpt` + tuner-only files,
and several domains at once through `--tuners name=path,...` (zipformer.tuners.domains): decode.py,
pretrained.py and export-onnx.py then run each utterance in its own domain.
"""
import argparse
import logging
from dataclasses import replace
from pathlib import Path
from typing import Any, Dict, Mapping

from torch import nn

from zipformer.checkpoints.averaging import checkpoint_suffix, load_averaged_state_dict
from zipformer.checkpoints.checkpoint import LoadedWeights, StateDict, read_model_file
from zipformer.core.errors import UserError
from zipformer.core.flag_types import flag_name, str2bool
from zipformer.core.params import AttributeDict
from zipformer.data.default_cuts import default_cuts
from zipformer.deploy.export import ExportRecipe
from zipformer.model.builder import check_causal
from zipformer.model.builder import get_model as get_base_model
from zipformer.training.pretrained_weights import load_pretrained_weights
from zipformer.training.recipe import TrainingRecipe
from zipformer.tuners.files import combine_base_and_tuner, load_tuner_file, save_tuner_file
from zipformer.tuners.selection import SELECTION_FILE, apply_selection
from zipformer.tuners.tensors import (
    base_tensors,
    check_tuner_size,
    freeze_all_but_tuner,
    load_with_tuner,
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


class TunerDecodingRecipe(ExportRecipe):
    """Decode or export a tuned model: full checkpoints, or a base model plus tuner-only files."""

    def __init__(self, tuner: Tuner) -> None:
        self.tuner = tuner
        self.config_keys = ExportRecipe.config_keys + tuner.config_keys
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

    def onnx_metadata(self, params: AttributeDict, state_dict: StateDict) -> Dict[str, str]:
        return self.tuner.onnx_metadata(params, state_dict)

    def export_suffix(self, params: AttributeDict) -> str:
        return Path(params.tuner_ckpt).stem if params.tuner_ckpt else checkpoint_suffix(params)
