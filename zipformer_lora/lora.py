"""LoRA for a Zipformer2 encoder: the LoRA tuner, which can also be merged into the base weights.

    y = W x + b  ->  y = W x + b + (alpha / r) · B A x,    A: (r, in), B: (out, r)

A starts as PyTorch's default Linear init and B at zero, so a fresh model computes the base's
function. The targets are icefall's zipformer_lora's: in every Zipformer2EncoderLayer the
attention-weights in_proj, the in_proj of both self-attention modules, and the in_proj and out_proj
of the three feed-forward modules (9 linear maps per layer). `lora_A` and `lora_B` are registered
on the target module itself (icefall's names, `...self_attn_weights.in_proj.lora_A`), so every base
key is unchanged; a forward hook adds the low-rank term. (icefall's feed-forward out_proj keeps a
second copy of its weight under `out_proj.l.*`; here there is one.)

Merging folds the term into the weights, W <- W + (alpha / r) · B A, and removes lora_A, lora_B
and the hook: the result is a plain Zipformer, the same function to float rounding, at no extra
cost, and every runtime loads it.
"""
import argparse
import math
from typing import Callable, Iterator, Mapping, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from zipformer.core.errors import UserError
from zipformer.core.flag_types import int_at_least, str2bool
from zipformer.core.params import AttributeDict
from zipformer.model.scaling import ActivationDropoutAndLinear
from zipformer.model.zipformer import Zipformer2EncoderLayer
from zipformer.tuners.stacking import DomainTensors, base_rows_kept, per_utterance, take_stacked
from zipformer.tuners.tuner import Tuner

# (module path inside a Zipformer2EncoderLayer) of every linear map LoRA adapts.
LORA_TARGETS = (
    "self_attn_weights.in_proj",
    "self_attn1.in_proj",
    "self_attn2.in_proj",
    "feed_forward1.in_proj",
    "feed_forward1.out_proj",
    "feed_forward2.in_proj",
    "feed_forward2.out_proj",
    "feed_forward3.in_proj",
    "feed_forward3.out_proj",
)
LORA_KEYS = ("lora_A", "lora_B")
# ScaledAdam's step floor for lora_A and lora_B: its steps are proportional to a tensor's RMS, so
# the zero-initialised B would never move from the default floor (1e-5). 0.05 is about the RMS of a
# default-initialised A for 128-256 inputs: both then start with steps of the same size.
LORA_MIN_RMS = 0.05


class _LoRAHook:
    """The forward hook of one target: output + scaling · B A x (x: what the linear map sees)."""

    def __init__(self, scaling: float, linear_input: Callable[[torch.Tensor], torch.Tensor]) -> None:
        self.scaling = scaling
        self.linear_input = linear_input
        self.enabled = True

    def __call__(self, module: nn.Module, inputs: Tuple[torch.Tensor, ...], output: torch.Tensor) -> torch.Tensor:
        if not self.enabled:
            return output
        x = self.linear_input(inputs[0])
        return output + self.scaling * F.linear(F.linear(x, module.lora_A), module.lora_B)


class _StackedLoRAHook:
    """The forward hook of one target in a model of K domains (unmerged): lora_A (K, r, in),
    lora_B (K, out, r), lora_scaling (K,), smaller ranks zero-padded to the largest r. Adds
    each utterance's own domain's term; rows with index -1 are the base output unchanged."""

    def __init__(self, linear_input: Callable[[torch.Tensor], torch.Tensor]) -> None:
        self.linear_input = linear_input
        self.domain_index: Optional[torch.Tensor] = None

    def __call__(self, module: nn.Module, inputs: Tuple[torch.Tensor, ...], output: torch.Tensor) -> torch.Tensor:
        index = self.domain_index
        if index is None:
            raise RuntimeError(
                "a LoRA model of several domains needs each utterance's domain: run it inside domains_selected()"
            )
        x = self.linear_input(inputs[0])  # (T, N, in)
        low_rank = torch.einsum("tni,nri->tnr", x, per_utterance(module.lora_A, index))
        delta = torch.einsum("tnr,nor->tno", low_rank, per_utterance(module.lora_B, index))
        scaling = per_utterance(module.lora_scaling, index).view(1, -1, 1)
        return base_rows_kept(index, output, output + scaling * delta)


def lora_targets(model: nn.Module) -> Iterator[nn.Module]:
    for layer in model.modules():
        if isinstance(layer, Zipformer2EncoderLayer):
            for path in LORA_TARGETS:
                yield layer.get_submodule(path)


def _weight_shape(module: nn.Module) -> Tuple[int, int]:
    out_features, in_features = module.weight.shape
    return out_features, in_features


def add_lora(model: nn.Module, r: int, alpha: float) -> int:
    """Give every target a zero-initialised low-rank term; return the number of LoRA parameters."""
    if r < 1:
        raise UserError(f"--lora-r must be a positive integer, got {r}")
    targets = list(lora_targets(model))
    if not targets:
        raise ValueError("the model has no Zipformer2EncoderLayer to put LoRA into")
    for module in targets:
        if hasattr(module, "lora_A"):
            raise ValueError("the model already has LoRA")
        out_features, in_features = _weight_shape(module)
        lora_a = nn.Parameter(torch.empty(r, in_features, dtype=module.weight.dtype))
        nn.init.kaiming_uniform_(lora_a, a=math.sqrt(5))  # nn.Linear's default init
        module.register_parameter("lora_A", lora_a)
        module.register_parameter("lora_B", nn.Parameter(torch.zeros(out_features, r, dtype=module.weight.dtype)))
        module.param_min_rms = LORA_MIN_RMS
        linear_input = module.activate if isinstance(module, ActivationDropoutAndLinear) else _identity
        module._lora_hook = _LoRAHook(alpha / r, linear_input)
        module._lora_handle = module.register_forward_hook(module._lora_hook)
    return sum(m.lora_A.numel() + m.lora_B.numel() for m in targets)


def stack_lora(model: nn.Module, domains: Sequence[DomainTensors]) -> int:
    """Give every target the stacked LoRA terms of `domains` (domain k at index k), each scaled by
    its own lora_alpha / lora_r; return the number of LoRA parameters."""
    names = {module: name for name, module in model.named_modules()}
    targets = list(lora_targets(model))
    if not targets:
        raise ValueError("the model has no Zipformer2EncoderLayer to put LoRA into")
    scaling = torch.tensor([float(d.config["lora_alpha"]) / int(d.config["lora_r"]) for d in domains])
    for module in targets:
        prefix = names[module]
        for key in LORA_KEYS:
            module.register_parameter(key, nn.Parameter(take_stacked(domains, f"{prefix}.{key}"), requires_grad=False))
        module.register_buffer("lora_scaling", scaling.to(module.weight.dtype), persistent=False)
        linear_input = module.activate if isinstance(module, ActivationDropoutAndLinear) else _identity
        module._lora_hook = _StackedLoRAHook(linear_input)
        module._lora_handle = module.register_forward_hook(module._lora_hook)
    return sum(m.lora_A.numel() + m.lora_B.numel() for m in targets)


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


def is_lora_key(name: str) -> bool:
    return name.rsplit(".", 1)[-1] in LORA_KEYS


@torch.no_grad()
def merge_lora(model: nn.Module) -> int:
    """Fold every LoRA term into its weight and remove it; return how many weights changed."""
    merged = 0
    for module in lora_targets(model):
        if not hasattr(module, "lora_A"):
            continue
        delta = module._lora_hook.scaling * (module.lora_B.double() @ module.lora_A.double())
        module.weight += delta.to(module.weight.dtype)
        module._lora_handle.remove()
        for name in LORA_KEYS + ("_lora_hook", "_lora_handle", "param_min_rms"):
            delattr(module, name)
        merged += 1
    return merged


class LoraTuner(Tuner):
    """icefall's flags: --use-lora, --lora-r; plus --lora-alpha (icefall fixes it at 4)."""

    name = "lora"
    file_prefix = "lora-"
    switch = "use_lora"
    size = "lora_r"
    size_default = 8
    mergeable = True

    @property
    def config_keys(self) -> tuple:
        return (self.switch, self.size, "lora_alpha")

    def add_arguments(self, group: argparse._ArgumentGroup, for_training: bool) -> None:
        group.add_argument(
            "--use-lora",
            type=str2bool,
            default=True,
            help="Add LoRA to the attention and feed-forward projections of every encoder layer. With 0, "
            "training is full fine-tuning and decoding runs the original model (LoRA weights are ignored).",
        )
        group.add_argument(
            "--lora-r",
            type=int_at_least(1),
            default=self.size_default,
            help="The rank r of the low-rank terms B A (ignored, with a warning, under --use-lora 0).",
        )
        group.add_argument(
            "--lora-alpha", type=float, default=4.0, help="The terms are scaled by alpha / r (icefall: 4)."
        )

    def inject(self, model: nn.Module, params: AttributeDict) -> int:
        return add_lora(model, params.lora_r, params.lora_alpha)

    def is_tuner_key(self, name: str) -> bool:
        return is_lora_key(name)

    def size_of(self, state_dict: Mapping[str, torch.Tensor]) -> Optional[int]:
        for key, value in state_dict.items():
            if key.endswith(".lora_A"):
                return int(value.shape[0])
        return None

    def set_enabled(self, model: nn.Module, enabled: bool) -> None:
        for module in lora_targets(model):
            if hasattr(module, "_lora_hook"):
                module._lora_hook.enabled = enabled

    def stack_domains(self, model: nn.Module, domains: Sequence[DomainTensors]) -> int:
        return stack_lora(model, domains)

    def set_domain_index(self, model: nn.Module, index: Optional[torch.Tensor]) -> None:
        for module in lora_targets(model):
            module._lora_hook.domain_index = index

    def merge(self, model: nn.Module) -> None:
        if not merge_lora(model):
            raise UserError("the model has no LoRA to merge: pass a checkpoint trained with --use-lora 1")

