"""The one model loader of decoding, export and pretrained.py: weights, configuration, vocabulary, model.

  resolve_weights: weights <- the recipe (a file, or an average over epochs/checkpoints)
                   params  <- the configuration stored with them (zipformer.checkpoints.config)
  build_model:     check   <- the vocabulary they were trained with against the BPE model / tokens.txt
                   model   <- built by the recipe from params, loaded strictly, eval mode
Callers run the two apart: between them, the resolved configuration names decoding's result files
and decides the chunk configuration a causal model decodes with.
"""
import logging
from contextlib import nullcontext
from typing import Any, ContextManager, Mapping

from torch import nn

from zipformer.checkpoints.averaging import load_averaged_state_dict
from zipformer.checkpoints.checkpoint import LoadedWeights, StateDict, load_model_state_dict, read_model_file
from zipformer.checkpoints.config import apply_model_config
from zipformer.checkpoints.vocabulary import check_vocabulary
from zipformer.core.errors import UserError
from zipformer.core.params import AttributeDict
from zipformer.model.builder import check_causal, count_parameters
from zipformer.model.recipe import ModelRecipe


class DecodingRecipe(ModelRecipe):
    """Hooks of decoding, and of the loading that export shares. The base recipe decodes a plain model."""

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

    def batch_context(self, model: nn.Module, batch: dict) -> ContextManager:
        """What `model` decodes `batch` inside (e.g. each utterance in its domain); the base recipe: nothing."""
        return nullcontext()


def check_vocab_size(state_dict: StateDict, params: AttributeDict, source: str, flag: str) -> None:
    """The decoder's embedding must have params.vocab_size rows (what the BPE model / tokens.txt has)."""
    embedding = state_dict.get("decoder.embedding.weight")
    if embedding is not None and embedding.shape[0] != params.vocab_size:
        raise UserError(
            f"{source} was trained with {embedding.shape[0]} tokens but {flag} has "
            f"{params.vocab_size}: pass the BPE model / tokens.txt the model was trained with"
        )


def _unknown_settings(weights: LoadedWeights, recipe: DecodingRecipe) -> str:
    extra = {k: v for k, v in (weights.model_config or {}).items() if k not in recipe.config_keys and v}
    return ", ".join(f"{k}={v}" for k, v in extra.items())


def resolve_weights(params: AttributeDict, recipe: DecodingRecipe, given: frozenset) -> LoadedWeights:
    """Read the weights the flags select and take the configuration stored with them into params."""
    weights = recipe.load_state_dict(params)
    apply_model_config(params, weights.model_config, given, weights.source, recipe.config_keys, recipe.off_switches)
    return weights


def build_model(
    params: AttributeDict,
    recipe: DecodingRecipe,
    weights: LoadedWeights,
    vocabulary: Mapping[str, Any],
    vocabulary_flag: str,
) -> nn.Module:
    """The recipe's model for `weights` (from resolve_weights), loaded strictly, in eval mode on the CPU.

    params.vocab_size and params.blank_id must already come from the BPE model or tokens.txt,
    which `vocabulary_flag` names (e.g. "--bpe-model data/lang_bpe_500/bpe.model").
    """
    logging.info(f"Using {weights.description}")
    if weights.model_config is None:
        logging.info(f"{weights.source} stores no model configuration: the model flags decide the shape")
    check_vocabulary(weights.vocabulary, vocabulary, weights.source, vocabulary_flag)
    check_vocab_size(weights.state_dict, params, weights.source, vocabulary_flag)
    check_causal(weights.state_dict, params.causal, weights.source)
    model = recipe.get_model(params)
    logging.info(f"Number of model parameters: {count_parameters(model)}")
    try:
        recipe.load_weights(model, weights, params)
    except UserError as e:
        unknown = _unknown_settings(weights, recipe)
        if not unknown:
            raise
        raise UserError(f"{e} ({weights.source} was trained with settings this recipe lacks: {unknown})") from None
    return model.eval()
