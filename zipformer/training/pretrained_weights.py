"""Loading a pretrained model's weights into the model a fine-tune starts from (--finetune-ckpt, --init-modules)."""
import logging
from pathlib import Path
from typing import Optional

from torch import nn

from zipformer.checkpoints.checkpoint import check_same_keys, read_model_file
from zipformer.model.builder import check_causal, is_causal_state_dict

_FIX = "check the model-shape flags"


def load_pretrained_weights(model: nn.Module, filename: str, init_modules: Optional[str] = None) -> None:
    """Copy a pretrained state_dict into `model`, strictly for the selected modules.

    With `init_modules` ("encoder,decoder"), only keys under those prefixes are copied, and each
    prefix must match exactly between the checkpoint and the model.
    """
    path = Path(filename)
    src = read_model_file(path, flag="--finetune-ckpt").state_dict
    check_causal(src, is_causal_state_dict(model.state_dict()), str(path))
    dst = model.state_dict()
    mismatch = f"{path} does not fit the model"
    if init_modules:
        prefixes = [p.strip() + "." for p in init_modules.split(",") if p.strip()]
        selected = {k: v for k, v in src.items() if k.startswith(tuple(prefixes))}
        wanted = {k for k in dst if k.startswith(tuple(prefixes))}
        check_same_keys(selected.keys(), wanted, mismatch, _FIX)
        dst.update(selected)
        model.load_state_dict(dst, strict=True)
    else:
        check_same_keys(src.keys(), dst.keys(), mismatch, _FIX)
        model.load_state_dict(src, strict=True)
    logging.info(f"Initialised the model from {path}" + (f" (modules: {init_modules})" if init_modules else ""))
