"""export-onnx.py and export-onnx-streaming.py of a tuner recipe: the tuned model as ONNX, its encoder's
metadata recording the tuner; with --merge-{name} the tuner folded into the base weights first (a
plain Zipformer), with --tuners (export-onnx.py) one encoder for every domain (zipformer.tuners.onnx_domains)."""
import argparse
import logging
from pathlib import Path
from typing import Dict, List, Optional

from torch import nn

from zipformer.checkpoints.checkpoint import LoadedWeights, StateDict
from zipformer.core.errors import UserError, exit_on_user_error
from zipformer.core.flag_types import flag_name, str2bool
from zipformer.core.params import AttributeDict
from zipformer.deploy import export as onnx_export
from zipformer.deploy import export_streaming as onnx_export_streaming
from zipformer.deploy.export import ExportRecipe
from zipformer.tuners.domains import DomainsRecipe
from zipformer.tuners.recipes import TunerDecodingRecipe, add_tuners_argument
from zipformer.tuners.tuner import Tuner


def _merge_flag(tuner: Tuner) -> str:
    return f"merge_{tuner.name}"


class TunerExportRecipe(TunerDecodingRecipe):
    """TunerDecodingRecipe with the export scripts' own flags: --merge-{name} (a mergeable tuner) and,
    unless `streaming` (a streaming encoder takes one tuner), the registry of --tuners."""

    def __init__(self, tuner: Tuner, default_exp_dir: str, streaming: bool = False) -> None:
        super().__init__(tuner)
        self.default_exp_dir = default_exp_dir
        self.streaming = streaming

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        super().add_arguments(parser)
        tuner = self.tuner
        if tuner.mergeable:
            parser.add_argument(
                flag_name(_merge_flag(tuner)),
                type=str2bool,
                default=False,
                help=f"Fold the {tuner.name} into the base weights first: the files are a plain Zipformer "
                f"(no {tuner.name} nodes, no extra cost at inference) that any runtime loads.",
            )
        if not self.streaming:
            add_tuners_argument(parser, tuner)


class _MergingRecipe(TunerDecodingRecipe):
    """Loads the tuned model as usual, then folds the tuner into the base weights."""

    def load_weights(self, model: nn.Module, weights: LoadedWeights, params: AttributeDict) -> None:
        super().load_weights(model, weights, params)
        self.tuner.merge(model)

    def onnx_metadata(self, params: AttributeDict, state_dict: StateDict) -> Dict[str, str]:
        return {**super().onnx_metadata(params, state_dict), f"{self.tuner.name}_merged": "1"}

    def export_suffix(self, params: AttributeDict) -> str:
        return super().export_suffix(params) + f"-{self.tuner.name}-merged"


def _exported_recipe(recipe: TunerExportRecipe, params: AttributeDict) -> ExportRecipe:
    """The recipe that exports what the flags ask: every domain of --tuners, the merged tuner, or the tuner."""
    tuner = recipe.tuner
    merge = bool(params.get(_merge_flag(tuner), False))
    if params.get("tuners"):
        if merge:
            raise UserError(
                f"{flag_name(_merge_flag(tuner))} folds one {tuner.name} into the base: export --tuners without it"
            )
        return DomainsRecipe(tuner)
    return _MergingRecipe(tuner) if merge else recipe


def export_main(recipe: TunerExportRecipe, argv: Optional[List[str]] = None) -> Dict[str, Path]:
    """export-onnx.py of a tuner recipe; returns the written files by name."""
    params, given = onnx_export.export_params(recipe, argv, "log-export-onnx")
    with exit_on_user_error():
        written = onnx_export.export(params, _exported_recipe(recipe, params), given)
    logging.info("Done!")
    return written


def streaming_export_main(recipe: TunerExportRecipe, argv: Optional[List[str]] = None) -> Dict[str, Path]:
    """export-onnx-streaming.py of a tuner recipe: the tuned causal model as streaming ONNX."""
    params, given = onnx_export.export_params(recipe, argv, "log-export-onnx-streaming")
    with exit_on_user_error():
        written = onnx_export_streaming.export(params, _exported_recipe(recipe, params), given)
    logging.info("Done!")
    return written
