"""The recipe hooks of inference (DecodingRecipe) and the one model loader (ModelLoader) of decoding,
pretrained.py, ONNX export, merge.py and the benchmarks.

  ModelLoader(...): weights <- the recipe (a file, or an average over epochs/checkpoints)
                    params  <- the configuration stored with them (zipformer.checkpoints.config)
  .build():         check   <- the vocabulary they were trained with against the BPE model / tokens.txt
                    model   <- built by the recipe from params, loaded strictly, eval mode
Callers run the two apart: between them, the resolved configuration names decoding's result files
and decides the chunk configuration a causal model decodes with.
"""
import logging
from contextlib import nullcontext
from typing import ContextManager, Optional

from torch import nn

from zipformer.checkpoints.averaging import load_averaged_state_dict
from zipformer.checkpoints.checkpoint import LoadedWeights, StateDict, load_model_state_dict, read_model_file
from zipformer.checkpoints.config import apply_model_config
from zipformer.checkpoints.vocabulary import TokenTable, check_vocabulary
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


class ModelLoader:
    """The one way decoding, pretrained.py, ONNX export, merge.py and the benchmarks get a trained model.

    Usage:
        loader = ModelLoader(params, recipe, given, bpe_token_table(sp, params.bpe_model))
        ...  # params now holds the checkpoint's configuration: name result files, check chunk flags
        model = loader.build()

    Construction reads the weights the recipe selects (a file, or an average over epochs or
    checkpoints) and takes the configuration stored with them into params, with vocab_size and
    blank_id from `tokens` (the BPE model or tokens.txt given; None: the checkpoint's own
    decoder, for tools that read no token table). `build` checks the weights against the token
    table, the causal flag and the shape, builds the recipe's model, loads it strictly and returns
    it in eval mode on the CPU.
    """

    def __init__(
        self, params: AttributeDict, recipe: DecodingRecipe, given: frozenset, tokens: Optional[TokenTable]
    ) -> None:
        """`given`: the flags typed on the command line (zipformer.checkpoints.config.flags_given)."""
        self.params, self.recipe, self.tokens = params, recipe, tokens
        if tokens is not None:
            params.vocab_size, params.blank_id = tokens.size, tokens.blank_id
        self.weights = resolve_weights(params, recipe, given)
        if tokens is None:
            embedding = self.weights.state_dict.get("decoder.embedding.weight")
            if embedding is None:
                raise UserError(
                    f"{self.weights.source} has no decoder.embedding.weight: it is not a transducer checkpoint"
                )
            params.vocab_size, params.blank_id = embedding.shape[0], params.get("blank_id", 0)

    def build(self) -> nn.Module:
        params, recipe, weights = self.params, self.recipe, self.weights
        logging.info(f"Using {weights.description}")
        if weights.model_config is None:
            logging.info(f"{weights.source} stores no model configuration: the model flags decide the shape")
        if self.tokens is not None:
            check_vocabulary(weights.vocabulary, self.tokens.vocabulary, weights.source, self.tokens.flag)
            check_vocab_size(weights.state_dict, params, weights.source, self.tokens.flag)
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
