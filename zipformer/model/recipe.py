"""What a recipe says about its model: its flags, how it is built, which flags a checkpoint stores.

Every recipe (the base Zipformer, or one that adds a tuner such as adapters) is one object whose
hooks the shared training, decoding and export machinery call: `ModelRecipe` here, extended by
`zipformer.checkpoints.loader.DecodingRecipe` (which weights, how they load, what a batch decodes
inside), `zipformer.deploy.export.ExportRecipe` (what the ONNX files hold, how they are named and
checked) and `zipformer.training.recipe.TrainingRecipe` (what trains, from what, on which data).
"""
import argparse
from typing import Tuple

from torch import nn

from zipformer.core.params import AttributeDict
from zipformer.model.builder import get_model
from zipformer.model.flags import MODEL_CONFIG_KEYS


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
