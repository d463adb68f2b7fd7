"""Small helpers shared by every script of the recipe: flag parsing, params, logging."""
import logging
import os
from datetime import datetime
from pathlib import Path
from typing import Any

import torch

# Re-exported: the error path of every script (zipformer.errors needs no PyTorch).
from zipformer.errors import UserError, exit_on_user_error, fail  # noqa: F401
# Re-exported: the flag types (zipformer.flag_types needs no PyTorch either).
from zipformer.flag_types import (  # noqa: F401
    comma_list,
    flag_name,
    int_at_least,
    non_negative_float,
    open_fraction,
    positive_float,
    str2bool,
)


class AttributeDict(dict):
    """A dict whose keys can also be read and written as attributes (icefall's `params`)."""

    def __getattr__(self, key: str) -> Any:
        try:
            return self[key]
        except KeyError:
            raise AttributeError(f"no attribute '{key}'") from None

    def __setattr__(self, key: str, value: Any) -> None:
        self[key] = value

    def __delattr__(self, key: str) -> None:
        try:
            del self[key]
        except KeyError:
            raise AttributeError(f"no attribute '{key}'") from None


class FrozenAttributeDict(AttributeDict):
    """An AttributeDict that refuses changes: the configuration of a run once it is set up."""

    def _refuse(self, *args: Any, **kwargs: Any) -> None:
        raise TypeError("the run's configuration is frozen once set up; loop state lives in TrainingState")

    __setitem__ = __delitem__ = __setattr__ = __delattr__ = _refuse
    update = setdefault = pop = popitem = clear = _refuse

    def __deepcopy__(self, memo: dict) -> "FrozenAttributeDict":
        return self

    def __reduce__(self) -> tuple:
        # Pickling (data-loader workers, mp.spawn) would otherwise rebuild it item by item.
        return (FrozenAttributeDict, (dict(self),))


# Marks the handlers setup_logger added, so that a later call replaces those and no others.
_OWN_HANDLER = "_zipformer_recipe_handler"


def setup_logger(
    log_filename: Path,
    log_level: str = "info",
    rank: int = 0,
    world_size: int = 1,
) -> Path:
    """Log to `{log_filename}-{datetime}` (and `-{rank}` under DDP) and to the console.

    Returns the path of the log file.
    """
    now = datetime.now().strftime("%Y-%m-%d-%H-%M-%S")
    if world_size > 1:
        path = Path(f"{log_filename}-{now}-{rank}")
        formatter = (
            f"%(asctime)s %(levelname)s [%(filename)s:%(lineno)d] ({rank}/{world_size}) %(message)s"
        )
    else:
        path = Path(f"{log_filename}-{now}")
        formatter = "%(asctime)s %(levelname)s [%(filename)s:%(lineno)d] %(message)s"
    path.parent.mkdir(parents=True, exist_ok=True)

    level = getattr(logging, log_level.upper())
    root = logging.getLogger()
    # Replace only the handlers an earlier call added (a second decode in one process), never a caller's.
    for handler in [h for h in root.handlers if getattr(h, _OWN_HANDLER, False)]:
        root.removeHandler(handler)
        handler.close()
    root.setLevel(level)
    handlers: list[logging.Handler] = [logging.FileHandler(path, mode="w")]
    if rank == 0 or os.environ.get("ICEFALL_LOG_ALL_RANKS"):
        handlers.append(logging.StreamHandler())
    for handler in handlers:
        handler.setFormatter(logging.Formatter(formatter))
        setattr(handler, _OWN_HANDLER, True)
        root.addHandler(handler)
    return path


def count_parameters(model: torch.nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
