"""Residual bottleneck adapters for a Zipformer2 encoder, added by composition.

`add_adapters(model, dim)` puts four `AdapterModule`s into every `Zipformer2EncoderLayer`, at the
insertion points the base layer exposes (the reference's positions and parameter names, so
checkpoints interoperate with icefall's adapter recipe). The base model's code is not copied.
"""
import logging
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Dict, Iterator, List, Mapping, Optional

import torch
from torch import nn

from zipformer.atomic import write_atomically
from zipformer.checkpoint import read_checkpoint_file, tensors_fingerprint
from zipformer.scaling import SwooshL
from zipformer.utils import UserError
from zipformer.zipformer import Zipformer2EncoderLayer

# Assignment order gives icefall's state_dict order (mid, post_sa, post_conv, adapter).
ADAPTER_POSITIONS = ("mid_adapter", "post_sa_adapter", "post_conv_adapter", "adapter")
ADAPTER_INITS = ("zero", "icefall")
ADAPTER_FILE_FORMAT = 2
# The flags of the adapter recipe that a checkpoint's model_config stores (see zipformer.model_config).
ADAPTER_CONFIG_KEYS = ("use_adapters", "adapter_dim")


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


def freeze_all_but_adapters(model: nn.Module) -> None:
    for name, param in model.named_parameters():
        param.requires_grad_(is_adapter_key(name))


def set_adapter_train_mode(model: nn.Module) -> None:
    """Adapters in train mode, every other module in eval mode.

    The frozen body then computes exactly its inference function (no dropout, layer skip or
    feature masks, and the training-only gradient regularisers are off), so fine-tuning sees
    the same network that decoding and the exported model run.
    """
    model.eval()
    for module in model.modules():
        if isinstance(module, AdapterModule):
            module.train()


@contextmanager
def adapters_disabled(model: nn.Module) -> Iterator[None]:
    """Temporarily run the base model: every adapter becomes the identity."""
    adapters = [m for m in model.modules() if isinstance(m, AdapterModule)]
    previous = [m.enabled for m in adapters]
    for m in adapters:
        m.enabled = False
    try:
        yield
    finally:
        for m, state in zip(adapters, previous):
            m.enabled = state


def adapter_state_dict(state_dict: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    return {k: v for k, v in state_dict.items() if is_adapter_key(k)}


def base_state_dict(state_dict: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    return {k: v for k, v in state_dict.items() if not is_adapter_key(k)}


def base_fingerprint(state_dict: Dict[str, torch.Tensor]) -> str:
    """A short hash of the base (non-adapter) weights: tells which base model adapters belong to."""
    return tensors_fingerprint(base_state_dict(state_dict))


def adapter_fingerprint(state_dict: Dict[str, torch.Tensor]) -> str:
    return tensors_fingerprint(adapter_state_dict(state_dict))


def adapter_dim_of(state_dict: Dict[str, torch.Tensor]) -> Optional[int]:
    """The bottleneck dim of the adapters in a state_dict, or None if it has none."""
    for key, value in state_dict.items():
        if is_adapter_key(key) and key.endswith("in_proj.weight"):
            return int(value.shape[0])
    return None


def save_adapter_checkpoint(
    filename: Path,
    model: nn.Module,
    model_avg: Optional[nn.Module],
    info: Mapping[str, Any],
    init: str,
) -> None:
    """Write only the adapters (a few MB): their tensors, averaged tensors, config and base fingerprint.

    The keys "model" and "model_avg" hold adapter tensors only, so the same averaging code as for
    full checkpoints works on these files. `info` is the full checkpoint's plain part: its
    batch_idx_train, average_period, model_config and vocabulary are stored too, so an adapter
    file alone says which model and tokens it fits.
    """
    state = model.state_dict()
    config = info["model_config"]
    checkpoint = {
        "format": ADAPTER_FILE_FORMAT,
        "model": {k: v.detach().cpu().clone() for k, v in adapter_state_dict(state).items()},
        "adapter_config": {"dim": config["adapter_dim"], "positions": list(ADAPTER_POSITIONS), "init": init},
        "base_fingerprint": base_fingerprint(state),
        **{key: info[key] for key in ("batch_idx_train", "average_period", "model_config", "vocabulary")},
    }
    if model_avg is not None:
        avg = model_avg.state_dict()
        checkpoint["model_avg"] = {k: v.detach().to("cpu", torch.float32).clone() for k, v in adapter_state_dict(avg).items()}
    write_atomically(Path(filename), lambda tmp: torch.save(checkpoint, tmp))


def load_adapter_checkpoint(filename: Path) -> dict:
    path = Path(filename)
    checkpoint = read_checkpoint_file(
        path, missing=f"adapter checkpoint {path} not found: pass an adapter-epoch-N.pt written by zipformer_adapter/train.py"
    )
    if not isinstance(checkpoint, dict) or "adapter_config" not in checkpoint:
        raise UserError(f"{path} is not an adapter-only checkpoint (no 'adapter_config'): pass an adapter-epoch-N.pt")
    return checkpoint


def check_adapter_dim(state_dict: Dict[str, torch.Tensor], expected_dim: int, source: str) -> None:
    found = adapter_dim_of(state_dict)
    if found is None:
        raise UserError(f"{source} has no adapter weights: pass --use-adapters 0, or a checkpoint from zipformer_adapter/train.py")
    if found != expected_dim:
        raise UserError(f"{source} has adapters of dim {found} but --adapter-dim is {expected_dim}: pass --adapter-dim {found}")


def log_adapter_summary(model: nn.Module, bottleneck_dim: int) -> None:
    count = sum(p.numel() for n, p in model.named_parameters() if is_adapter_key(n))
    logging.info(
        f"Adapters: dim {bottleneck_dim}, {len(ADAPTER_POSITIONS)} per encoder layer "
        f"({', '.join(ADAPTER_POSITIONS)}), {count} parameters"
    )
