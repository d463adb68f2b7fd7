"""How the adapter recipe builds and loads a model for decoding and export (a DecodingRecipe)."""
import argparse
import logging
from typing import Dict, Tuple

import torch
from torch import nn

from zipformer.checkpoint import load_averaged_state_dict
from zipformer.decoding import DecodingRecipe
from zipformer.utils import AttributeDict, UserError
from zipformer_adapter.adapter import base_state_dict, check_adapter_dim, load_adapter_checkpoint
from zipformer_adapter.flags import add_adapter_arguments
from zipformer_adapter.loading import (
    combine_base_and_adapters,
    load_adapter_file_on_base,
    load_state_dict_with_adapters,
)
from zipformer_adapter.model import get_model


class AdapterDecodingRecipe(DecodingRecipe):
    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        add_adapter_arguments(parser, for_training=False)

    def get_model(self, params: AttributeDict) -> nn.Module:
        return get_model(params)

    def load_state_dict(self, params: AttributeDict) -> Tuple[Dict[str, torch.Tensor], str]:
        if params.adapter_ckpt:
            if not params.base_ckpt:
                raise UserError("--adapter-ckpt needs --base-ckpt (the base model the adapters were trained on)")
            return load_adapter_file_on_base(params.base_ckpt, params.adapter_ckpt), (
                f"{params.base_ckpt} with the adapters of {params.adapter_ckpt}"
            )
        if params.base_ckpt:
            adapters, description = load_averaged_state_dict(params, device=torch.device("cpu"), prefix="adapter-")
            newest = params.exp_dir / (
                f"adapter-checkpoint-{params.iter}.pt" if params.iter > 0 else f"adapter-epoch-{params.epoch}.pt"
            )
            fingerprint = load_adapter_checkpoint(newest)["base_fingerprint"]
            combined = combine_base_and_adapters(params.base_ckpt, adapters, fingerprint, str(newest))
            return combined, f"{params.base_ckpt} with adapters: {description}"
        return super().load_state_dict(params)

    def load_weights(self, model: nn.Module, state_dict: Dict[str, torch.Tensor], params: AttributeDict) -> None:
        if params.use_adapters:
            check_adapter_dim(state_dict, params.adapter_dim, "the checkpoint")
            load_state_dict_with_adapters(model, state_dict, "the checkpoint", adapters_required=True)
            return
        base = base_state_dict(state_dict)
        ignored = len(state_dict) - len(base)
        if ignored:
            logging.info(f"--use-adapters 0: ignoring the checkpoint's {ignored} adapter tensors (the original model)")
        model.load_state_dict(base, strict=True)

    def describe(self, params: AttributeDict) -> str:
        return f"-adapters-dim-{params.adapter_dim}" if params.use_adapters else "-adapters-off"
