"""A checkpoint's model configuration against the command line: stored values win, contradictions stop.

Every checkpoint stores the flags that build its model ("model_config": shape, causal settings,
tuner settings). A script reading such a file takes those values, so decoding and export need no
shape flags. A flag typed on the command line that says otherwise is a one-line error, except an
"off switch" (a tuner's --use-* flag), which may turn a stored True into False: decoding an adapted
checkpoint with its adapters off is a feature. Files without a configuration (icefall's
pretrained.pt) leave the flags and their defaults in charge, as before.
"""
import argparse
from collections.abc import Iterable, Mapping
from typing import Any, Optional, Sequence

from zipformer.checkpoints.checkpoint import to_plain
from zipformer.core.errors import UserError
from zipformer.core.flag_types import flag_name
from zipformer.core.params import AttributeDict


def flags_given(parser: argparse.ArgumentParser, argv: Optional[Sequence[str]] = None) -> frozenset[str]:
    """The dests of the options typed in `argv` (default: sys.argv[1:]), defaults left out.

    Parses `argv` once more with every default suppressed: what is left was typed.
    """
    saved = [(action, action.default) for action in parser._actions]
    try:
        for action, _ in saved:
            action.default = argparse.SUPPRESS
        typed, _ = parser.parse_known_args(argv)
    finally:
        for action, default in saved:
            action.default = default
    return frozenset(vars(typed))


def model_config(params: Mapping[str, Any], keys: Iterable[str]) -> dict[str, Any]:
    """The values of `keys` in params, as plain data to store in a checkpoint."""
    return {key: to_plain(params[key]) for key in keys if key in params}



def _shown(value: Any) -> str:
    if isinstance(value, list):
        return ",".join(map(str, value))
    return str(int(value)) if isinstance(value, bool) else str(value)


def apply_model_config(
    params: AttributeDict,
    stored: Optional[Mapping[str, Any]],
    given: frozenset[str],
    source: str,
    keys: Iterable[str],
    off_switches: Iterable[str] = (),
) -> None:
    """Set params[key] = stored[key] for every recipe key the file stores.

    A key typed on the command line (`given`) must agree with the stored value, or be an off
    switch set to False; anything else raises UserError naming the flag, both values and the fix.
    """
    if not stored:
        return
    off_switches = set(off_switches)
    for key in keys:
        if key not in stored:
            continue
        value = stored[key]
        if key in given:
            typed = to_plain(params[key])
            if typed == value or (key in off_switches and not typed):
                continue
            raise UserError(
                f"{flag_name(key)} {_shown(typed)} contradicts {source}, which was trained with "
                f"{flag_name(key)} {_shown(value)}: drop the flag (the checkpoint's configuration is used)"
            )
        params[key] = tuple(value) if isinstance(value, list) else value
