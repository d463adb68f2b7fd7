"""What a recipe says about its model: the hooks shared by training, decoding and export.

A recipe (the base Zipformer, or one that adds a tuner such as adapters) subclasses these instead
of copying scripts. This module is light on purpose: ONNX export and pretrained.py import it
without the training loop, lhotse or the searches.
"""
import argparse
from typing import Tuple

from torch import nn

from zipformer.checkpoint import LoadedWeights, load_averaged_state_dict, load_model_state_dict, read_model_file
from zipformer.model_args import MODEL_CONFIG_KEYS, get_model
from zipformer.utils import AttributeDict


class ModelRecipe:
    """The model of a recipe: its flags, how it is built, and which flags a checkpoint stores."""

    # Flags stored in every checkpoint as "model_config" and read back by every script.
    config_keys: Tuple[str, ...] = MODEL_CONFIG_KEYS
    # Stored flags that the command line may turn from True to False (a tuner's on/off flag).
    off_switches: Tuple[str, ...] = ()

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """Flags of this recipe, beyond the shared ones."""

    def get_model(self, params: AttributeDict) -> nn.Module:
        return get_model(params)


class DecodingRecipe(ModelRecipe):
    """Hooks of decoding and export. The base recipe decodes a plain model."""

    def load_state_dict(self, params: AttributeDict) -> LoadedWeights:
        """The weights to use: `--checkpoint FILE` (pretrained.py), else averaged per --epoch/--iter/--avg."""
        if params.get("checkpoint"):
            return read_model_file(params.checkpoint, flag="--checkpoint")
        return load_averaged_state_dict(params, device="cpu")

    def load_weights(self, model: nn.Module, weights: LoadedWeights, params: AttributeDict) -> None:
        """Put the weights into the model strictly; UserError naming the first mismatch otherwise."""
        load_model_state_dict(model, weights.state_dict, weights.source, strict=True)

    def describe(self, params: AttributeDict) -> str:
        """Extra words for the result-file suffix."""
        return ""
