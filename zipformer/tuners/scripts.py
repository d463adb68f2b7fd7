"""The scripts of a tuner's recipe directory: each factory returns the functions icefall's script
exposes, built on the script's recipe object, so a recipe's script is its docstring plus
  get_parser, main = decode_script(MyTuner())
"""
import argparse

from torch import nn

from zipformer.core.params import AttributeDict
from zipformer.decoding import session as decoding
from zipformer.decoding import transcribe as pretrained
from zipformer.deploy import export as onnx_export
from zipformer.deploy import export_streaming as onnx_export_streaming
from zipformer.training import flags as training_flags
from zipformer.training.main import main as training_main
from zipformer.tuners.decode_main import TunerDecodeRecipe, decode_main
from zipformer.tuners.export_main import TunerExportRecipe, export_main, streaming_export_main
from zipformer.tuners.merge_main import get_merge_parser, merge_main
from zipformer.tuners.pretrained_main import TunerPretrainedRecipe, pretrained_main
from zipformer.tuners.recipes import TunerDecodingRecipe, TunerTrainingRecipe
from zipformer.tuners.select_main import TunerSelectionRecipe, select_main
from zipformer.tuners.tuner import Tuner


def train_script(tuner: Tuner) -> tuple:
    """(get_parser, get_params, get_model, main) of train.py."""
    recipe = TunerTrainingRecipe(tuner)

    def get_parser() -> argparse.ArgumentParser:
        return training_flags.get_parser(recipe)

    def get_model(params: AttributeDict) -> nn.Module:
        return recipe.get_model(params)

    return get_parser, training_flags.get_params, get_model, lambda: training_main(recipe)


def select_script(tuner: Tuner) -> tuple:
    """(get_parser, main) of select_checkpoint.py."""
    recipe = TunerSelectionRecipe(tuner)
    return (lambda: decoding.get_parser(recipe)), (lambda: select_main(recipe))


def decode_script(tuner: Tuner) -> tuple:
    """(get_parser, main) of decode.py."""
    recipe = TunerDecodeRecipe(tuner)
    return (lambda: decoding.get_parser(recipe)), (lambda: decode_main(recipe))


def export_script(tuner: Tuner, default_exp_dir: str) -> tuple:
    """(get_parser, main) of export-onnx.py; main(argv) returns the written files by name."""
    recipe = TunerExportRecipe(tuner, default_exp_dir)
    return (lambda: onnx_export.get_parser(recipe)), (lambda argv=None: export_main(recipe, argv))


def streaming_export_script(tuner: Tuner, default_exp_dir: str) -> tuple:
    """(get_parser, main) of export-onnx-streaming.py; main(argv) returns the written files by name."""
    recipe = TunerExportRecipe(tuner, default_exp_dir, streaming=True)
    return (lambda: onnx_export_streaming.get_parser(recipe)), (lambda argv=None: streaming_export_main(recipe, argv))


def pretrained_script(tuner: Tuner) -> tuple:
    """(get_parser, main) of pretrained.py."""
    recipe = TunerPretrainedRecipe(tuner)
    return (lambda: pretrained.get_parser(recipe)), (lambda: pretrained_main(recipe))


def merge_script(tuner: Tuner) -> tuple:
    """(get_parser, main) of merge.py."""
    recipe = TunerDecodingRecipe(tuner)
    return (lambda: get_merge_parser(recipe)), (lambda: merge_main(recipe))
