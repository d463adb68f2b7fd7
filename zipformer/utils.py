"""Small helpers shared by every script of the recipe: flag parsing, params, logging."""
import argparse
import logging
import os
from datetime import datetime
from pathlib import Path
from typing import Any, Callable

import torch

# Re-exported: the error path of every script (zipformer.errors needs no PyTorch).
from zipformer.errors import UserError, exit_on_user_error, fail  # noqa: F401


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


def str2bool(v: Any) -> bool:
    """argparse type accepting yes/true/t/y/1 and no/false/f/n/0, as icefall's flags do."""
    if isinstance(v, bool):
        return v
    s = str(v).strip().lower()
    if s in ("yes", "true", "t", "y", "1"):
        return True
    if s in ("no", "false", "f", "n", "0"):
        return False
    raise argparse.ArgumentTypeError(f"expected a boolean (1/0, true/false, yes/no), got '{v}'")


def flag_name(dest: str) -> str:
    """The command-line spelling of an argparse dest: "adapter_dim" -> "--adapter-dim"."""
    return "--" + dest.replace("_", "-")


def int_at_least(minimum: int) -> Callable[[str], int]:
    """argparse type: an integer >= minimum, so a bad value fails at parse time, naming the flag."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got '{text}'") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
        return value

    return parse


def _number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got '{text}'") from None
    return value


def positive_float(text: str) -> float:
    """argparse type: a finite number > 0."""
    value = _number(text)
    if not (0 < value < float("inf")):
        raise argparse.ArgumentTypeError(f"must be a number > 0, got {text}")
    return value


def non_negative_float(text: str) -> float:
    """argparse type: a finite number >= 0."""
    value = _number(text)
    if not (0 <= value < float("inf")):
        raise argparse.ArgumentTypeError(f"must be a number >= 0, got {text}")
    return value


def open_fraction(text: str) -> float:
    """argparse type: a number strictly between 0 and 1 (a share of something)."""
    value = _number(text)
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"must be a number between 0 and 1 (exclusive), got {text}")
    return value


def comma_list(item: Callable[[str], Any]) -> Callable[[str], list]:
    """argparse type: comma-separated values, each parsed by `item` (an argparse type)."""

    def parse(text: str) -> list:
        parts = [part.strip() for part in text.split(",")]
        if not all(parts):
            raise argparse.ArgumentTypeError(f"expected comma-separated values, got '{text}'")
        return [item(part) for part in parts]

    return parse


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
