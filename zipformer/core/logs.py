"""The log of every script: a file `{name}-{datetime}` (per rank under DDP) plus the console."""
import logging
import os
from datetime import datetime
from pathlib import Path

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
