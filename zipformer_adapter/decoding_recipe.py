"""How the adapter recipe builds and loads a model for decoding and export (a DecodingRecipe)."""
import argparse
import logging
from dataclasses import replace

from torch import nn

from zipformer.checkpoint import LoadedWeights, load_averaged_state_dict
from zipformer.recipe import DecodingRecipe
from zipformer.utils import AttributeDict, UserError
from zipformer_adapter.adapter import (
    ADAPTER_CONFIG_KEYS,
    base_state_dict,
    check_adapter_dim,
    load_adapter_checkpoint,
)
from zipformer_adapter.flags import add_adapter_arguments
from zipformer_adapter.loading import (
    combine_base_and_adapters,
    load_adapter_file_on_base,
    load_state_dict_with_adapters,
)
from zipformer_adapter.model import get_model


class AdapterDecodingRecipe(DecodingRecipe):
    config_keys = DecodingRecipe.config_keys + ADAPTER_CONFIG_KEYS
    off_switches = ("use_adapters",)

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        add_adapter_arguments(parser, for_training=False)

    def get_model(self, params: AttributeDict) -> nn.Module:
        return get_model(params)

    def load_state_dict(self, params: AttributeDict) -> LoadedWeights:
        if params.adapter_ckpt:
            if not params.base_ckpt:
                raise UserError("--adapter-ckpt needs --base-ckpt (the base model the adapters were trained on)")
            return load_adapter_file_on_base(params.base_ckpt, params.adapter_ckpt)
        if params.base_ckpt:
            adapters = load_averaged_state_dict(params, device="cpu", prefix="adapter-")
            # The newest adapter file used (for --iter: the newest one at or below it) names the base.
            fingerprint = load_adapter_checkpoint(adapters.source)["base_fingerprint"]
            combined = combine_base_and_adapters(params.base_ckpt, adapters.state_dict, fingerprint, adapters.source)
            return replace(
                adapters, state_dict=combined, description=f"{params.base_ckpt} with adapters: {adapters.description}"
            )
        return super().load_state_dict(params)

    def load_weights(self, model: nn.Module, weights: LoadedWeights, params: AttributeDict) -> None:
        state_dict = weights.state_dict
        if params.use_adapters:
            check_adapter_dim(state_dict, params.adapter_dim, weights.source)
            load_state_dict_with_adapters(model, state_dict, weights.source, adapters_required=True)
            return
        base = base_state_dict(state_dict)
        ignored = len(state_dict) - len(base)
        if ignored:
            logging.info(f"--use-adapters 0: ignoring the checkpoint's {ignored} adapter tensors (the original model)")
        load_state_dict_with_adapters(model, base, weights.source, adapters_required=False)

    def describe(self, params: AttributeDict) -> str:
        return f"-adapters-dim-{params.adapter_dim}" if params.use_adapters else "-adapters-off"
