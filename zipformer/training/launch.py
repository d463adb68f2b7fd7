"""Starting the training processes: one, `--world-size N` ranks on this machine (mp.spawn), or a torchrun worker.

Each process runs `run`: it seeds, joins the process group (DDP), sets up its logger and its
Trainer, and trains; a Ctrl-C stops every rank after the same batch (see spawn_ranks).
"""
import argparse
import logging
import os
import signal
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from zipformer.core.errors import exit_on_user_error, fail
from zipformer.core.logs import setup_logger
from zipformer.training.flags import get_params
from zipformer.training.recipe import TrainingRecipe
from zipformer.training.setup import set_up_trainer
from zipformer.training.trainer import fix_random_seed

STOPPED_WITHOUT_SAVING = "interrupted: stopped without saving; resume from the newest checkpoint-N.pt or epoch-N.pt"


def run(
    rank: int, world_size: int, args: argparse.Namespace, recipe: TrainingRecipe, given: frozenset = frozenset()
) -> None:
    """One process: rank `rank` of `world_size` (0 of 1 without DDP), with the parsed flags `args`."""
    params = get_params()
    params.update(vars(args))
    params.exp_dir = Path(params.exp_dir)
    fix_random_seed(params.seed)
    if params.num_threads > 0:
        torch.set_num_threads(params.num_threads)
    if world_size > 1:
        init_distributed(rank, world_size, params.master_port)
    setup_logger(params.exp_dir / "log" / "log-train", rank=rank, world_size=world_size)
    logging.info("Training started")
    try:
        with exit_on_user_error():
            set_up_trainer(recipe, params, rank, world_size, given).fit()
    except KeyboardInterrupt:
        fail(STOPPED_WITHOUT_SAVING)
    finally:
        if world_size > 1 and dist.is_initialized():
            dist.destroy_process_group()


def spawn_ranks(args: argparse.Namespace, recipe: TrainingRecipe, given: frozenset) -> None:
    """--world-size N on this machine: N processes (mp.spawn), each running `run`.

    A Ctrl-C reaches every rank (they share the terminal's process group): they stop after the
    same batch, rank 0 saves, all exit 130, and so does this process, which waits for them. A
    second Ctrl-C stops everything at once.
    """

    def wait_for_ranks(signum: int, frame: object) -> None:
        signal.signal(signal.SIGINT, signal.default_int_handler)

    signal.signal(signal.SIGINT, wait_for_ranks)
    try:
        mp.spawn(run, args=(args.world_size, args, recipe, given), nprocs=args.world_size, join=True)
    except mp.ProcessExitedException as e:
        if e.exit_code != 130:
            raise
        raise SystemExit(130) from None
    except KeyboardInterrupt:
        fail(STOPPED_WITHOUT_SAVING)


def init_distributed(rank: int, world_size: int, master_port: int) -> None:
    """NCCL on GPUs, gloo on CPU. Under torchrun, the address and port come from the environment."""
    if "TORCHELASTIC_RUN_ID" not in os.environ:
        os.environ.setdefault("MASTER_ADDR", "localhost")
        os.environ["MASTER_PORT"] = str(master_port)
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    dist.init_process_group(backend, rank=rank, world_size=world_size)
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", rank)))

