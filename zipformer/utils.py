"""Small helpers shared by every script of the recipe: flag parsing, params, logging."""
import argparse
import logging
import os
from datetime import datetime
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, NoReturn

import torch


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


def positive_float(text: str) -> float:
    """argparse type: a finite number > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got '{text}'") from None
    if not (0 < value < float("inf")):
        raise argparse.ArgumentTypeError(f"must be a number > 0, got {text}")
    return value


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
    for handler in list(root.handlers):
        root.removeHandler(handler)
    root.setLevel(level)
    file_handler = logging.FileHandler(path, mode="w")
    file_handler.setFormatter(logging.Formatter(formatter))
    root.addHandler(file_handler)
    if rank == 0 or os.environ.get("ICEFALL_LOG_ALL_RANKS"):
        console = logging.StreamHandler()
        console.setFormatter(logging.Formatter(formatter))
        root.addHandler(console)
    return path


class UserError(Exception):
    """Bad input from the user (a missing file, a flag combination that cannot work, ...).

    Scripts turn it into a one-line `error: ...` message and exit code 1, never a traceback.
    Its message names the problem and the fix.
    """


def fail(message: str) -> NoReturn:
    """Stop a script with a one-line error that names the problem and the fix."""
    if logging.getLogger().handlers:
        logging.error(message)
    raise SystemExit(f"error: {message}")


@contextmanager
def exit_on_user_error() -> Iterator[None]:
    """The one CLI error path: a UserError raised inside becomes `fail(message)`, not a traceback."""
    try:
        yield
    except UserError as e:
        fail(str(e))


def count_parameters(model: torch.nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
