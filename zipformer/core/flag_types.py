"""argparse types of the numeric and boolean flags, so that a bad value fails at parse time
with argparse's one-line message naming the flag.

No PyTorch import, so that the onnxruntime-only scripts can use them.
"""
import argparse
from typing import Any, Callable


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
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got '{text}'") from None


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
