"""The one error path of the scripts: a UserError becomes a one-line `error: ...` and exit code 1.

No PyTorch import, so that the onnxruntime-only scripts can use it.
"""
import logging
from contextlib import contextmanager
from typing import Iterator, NoReturn


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
