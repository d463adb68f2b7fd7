"""Residual bottleneck adapters for a Zipformer2 encoder: the adapter tuner.

`AdapterTuner` puts four `AdapterModule`s into every `Zipformer2EncoderLayer`, at the insertion
points the base layer exposes (the reference's positions and parameter names, so checkpoints
interoperate with icefall's adapter recipe). The base model's code is not copied; everything
that is not specific to adapters (freezing, files, loading, the scripts) is zipformer.tuners's.
"""
import argparse
from typing import List, Mapping, Optional, Sequence

import torch
from torch import nn

from zipformer.core.errors import UserError
from zipformer.core.flag_types import int_at_least, str2bool
from zipformer.core.params import AttributeDict
from zipformer.model.scaling import SwooshL
from zipformer.model.zipformer import Zipformer2EncoderLayer
from zipformer.tuners.stacking import DomainTensors, base_rows_kept, per_utterance, take_stacked
from zipformer.tuners.tuner import Tuner

# Assignment order gives icefall's state_dict order (mid, post_sa, post_conv, adapter).
ADAPTER_POSITIONS = ("mid_adapter", "post_sa_adapter", "post_conv_adapter", "adapter")
ADAPTER_INITS = ("zero", "icefall")


class AdapterModule(nn.Module):
    """y = x + out_proj(SwooshL(in_proj(x))), Linear D -> b -> D with biases.

    With init "zero" (the default) out_proj starts at zero, so a fresh adapter is the identity
    and the pretrained model's output is unchanged at step 0. "icefall" keeps PyTorch's default
    init, as the reference does, for comparisons.
    """

    # ScaledAdam's step floor for the zero-initialised out_proj: its steps are proportional to the
    # tensor's RMS, so from zero it would never move. 0.05 is about the RMS of a default-initialised
    # D->b Linear, and gives steps like Adam's at lr 2e-3 until the weights outgrow it.
    ZERO_INIT_MIN_RMS = 0.05

    def __init__(self, embed_dim: int, bottleneck_dim: int, init: str = "zero") -> None:
        super().__init__()
        if init not in ADAPTER_INITS:
            raise ValueError(f"adapter init must be one of {ADAPTER_INITS}, got '{init}'")
        self.in_proj = nn.Linear(embed_dim, bottleneck_dim)
        self.activation = SwooshL()
        self.out_proj = nn.Linear(bottleneck_dim, embed_dim)
        self.enabled = True
        if init == "zero":
            nn.init.zeros_(self.out_proj.weight)
            nn.init.zeros_(self.out_proj.bias)
            self.out_proj.param_min_rms = self.ZERO_INIT_MIN_RMS

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.enabled:
            return x
        return x + self.out_proj(self.activation(self.in_proj(x)))


class StackedAdapters(nn.Module):
    """The adapters of K domains at one insertion point, applied per utterance.

    in_weight (K, b, D), in_bias (K, b), out_weight (K, D, b), out_bias (K, D): domain k's
    AdapterModule at index k, smaller bottlenecks zero-padded to the largest b. `domain_index`
    (N,) picks each utterance's domain; its rows with index -1 pass through unchanged (the base).
    """

    def __init__(self, domains: Sequence[DomainTensors], prefix: str) -> None:
        super().__init__()
        self.in_weight = nn.Parameter(take_stacked(domains, f"{prefix}.in_proj.weight"), requires_grad=False)
        self.in_bias = nn.Parameter(take_stacked(domains, f"{prefix}.in_proj.bias"), requires_grad=False)
        self.out_weight = nn.Parameter(take_stacked(domains, f"{prefix}.out_proj.weight"), requires_grad=False)
        self.out_bias = nn.Parameter(take_stacked(domains, f"{prefix}.out_proj.bias"), requires_grad=False)
        self.activation = SwooshL()
        self.domain_index: Optional[torch.Tensor] = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (T, N, D) -> (T, N, D)."""
        index = self.domain_index
        if index is None:
            raise RuntimeError(
                "StackedAdapters needs each utterance's domain: run the model inside domains_selected()"
            )
        hidden = torch.einsum("tnd,nbd->tnb", x, per_utterance(self.in_weight, index))
        hidden = self.activation(hidden + per_utterance(self.in_bias, index))
        delta = torch.einsum("tnb,ndb->tnd", hidden, per_utterance(self.out_weight, index))
        return base_rows_kept(index, x, x + delta + per_utterance(self.out_bias, index))


def encoder_layers(model: nn.Module) -> List[Zipformer2EncoderLayer]:
    return [m for m in model.modules() if isinstance(m, Zipformer2EncoderLayer)]


def add_adapters(model: nn.Module, bottleneck_dim: int, init: str = "zero") -> int:
    """Insert four adapters into every encoder layer; return the number of adapter parameters."""
    if bottleneck_dim < 1:
        raise UserError(f"--adapter-dim must be a positive integer, got {bottleneck_dim}")
    layers = encoder_layers(model)
    if not layers:
        raise ValueError("the model has no Zipformer2EncoderLayer to put adapters into")
    for layer in layers:
        for position in ADAPTER_POSITIONS:
            if getattr(layer, position) is not None:
                raise ValueError(f"the model already has adapters (found {position})")
            setattr(layer, position, AdapterModule(layer.embed_dim, bottleneck_dim, init))
    return sum(p.numel() for n, p in model.named_parameters() if is_adapter_key(n))


def is_adapter_key(name: str) -> bool:
    """True for parameters of an adapter (icefall's rule: the name contains "adapter")."""
    return "adapter" in name


class AdapterTuner(Tuner):
    """icefall's flags: --use-adapters, --adapter-dim (and --adapter-init for training)."""

    name = "adapters"
    file_prefix = "adapter-"
    switch = "use_adapters"
    size = "adapter_dim"
    size_default = 16

    def add_arguments(self, group: argparse._ArgumentGroup, for_training: bool) -> None:
        group.add_argument(
            "--use-adapters",
            type=str2bool,
            default=True,
            help="Put four residual bottleneck adapters into every encoder layer. With 0, training is "
            "full fine-tuning and decoding runs the original model (adapter weights are ignored).",
        )
        group.add_argument(
            "--adapter-dim",
            type=int_at_least(1),
            default=self.size_default,
            help="Bottleneck dimension of the adapters (ignored, with a warning, under --use-adapters 0).",
        )
        if for_training:
            group.add_argument(
                "--adapter-init",
                type=str,
                default="zero",
                choices=ADAPTER_INITS,
                help="zero: out_proj starts at 0, so fresh adapters leave the model unchanged; "
                "icefall: PyTorch's default init, as the reference recipe does.",
            )

    def inject(self, model: nn.Module, params: AttributeDict) -> int:
        return add_adapters(model, params.adapter_dim, params.get("adapter_init", "zero"))

    def is_tuner_key(self, name: str) -> bool:
        return is_adapter_key(name)

    def size_of(self, state_dict: Mapping[str, torch.Tensor]) -> Optional[int]:
        for key, value in state_dict.items():
            if is_adapter_key(key) and key.endswith("in_proj.weight"):
                return int(value.shape[0])
        return None

    def set_enabled(self, model: nn.Module, enabled: bool) -> None:
        for module in model.modules():
            if isinstance(module, AdapterModule):
                module.enabled = enabled

    def set_train_mode(self, model: nn.Module) -> None:
        """Adapters in train mode, every other module in eval mode.

        The frozen body then computes exactly its inference function (no dropout, layer skip or
        feature masks, and the training-only gradient regularisers are off), so fine-tuning sees
        the same network that decoding and the exported model run.
        """
        model.eval()
        for module in model.modules():
            if isinstance(module, AdapterModule):
                module.train()

    def stack_domains(self, model: nn.Module, domains: Sequence[DomainTensors]) -> int:
        names = {layer: name for name, layer in model.named_modules() if isinstance(layer, Zipformer2EncoderLayer)}
        if not names:
            raise ValueError("the model has no Zipformer2EncoderLayer to put adapters into")
        for layer, name in names.items():
            for position in ADAPTER_POSITIONS:
                setattr(layer, position, StackedAdapters(domains, f"{name}.{position}"))
        return sum(p.numel() for n, p in model.named_parameters() if is_adapter_key(n))

    def set_domain_index(self, model: nn.Module, index: Optional[torch.Tensor]) -> None:
        for module in model.modules():
            if isinstance(module, StackedAdapters):
                module.domain_index = index

    def onnx_metadata(self, params: AttributeDict, state_dict: Mapping[str, torch.Tensor]) -> dict:
        metadata = super().onnx_metadata(params, state_dict)
        if params.use_adapters:
            metadata["adapter_positions"] = ",".join(ADAPTER_POSITIONS)
            metadata["num_adapters"] = str(sum(is_adapter_key(k) and k.endswith("in_proj.weight") for k in state_dict))
        return metadata
