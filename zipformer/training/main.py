"""The entry point of every train.py (main): parse the flags, claim --exp-dir, start the training processes."""
import os
from contextlib import nullcontext
from pathlib import Path

from zipformer.checkpoints.config import flags_given
from zipformer.core.errors import exit_on_user_error
from zipformer.core.exp_dir import claim_exp_dir
from zipformer.data.asr_datamodule import AsrDataModule
from zipformer.training.flags import get_parser
from zipformer.training.launch import run, spawn_ranks
from zipformer.training.recipe import TrainingRecipe


def main(recipe: TrainingRecipe) -> None:
    """Entry point of a train.py: parse flags, then one process, mp.spawn, or a torchrun worker.

    The process that starts the run (rank 0 under torchrun) claims --exp-dir first: it must be
    writable and not in use by another training.
    """
    parser = get_parser(recipe)
    args = parser.parse_args()
    given = flags_given(parser)
    args.exp_dir = Path(args.exp_dir)
    torchrun = "TORCHELASTIC_RUN_ID" in os.environ
    claims = not torchrun or int(os.environ["RANK"]) == 0
    with exit_on_user_error():
        AsrDataModule.check_mux_arguments(args)
    with exit_on_user_error(), claim_exp_dir(args.exp_dir) if claims else nullcontext():
        if torchrun:
            # torchrun (possibly several machines): it started this process and set rank and world size.
            world_size = int(os.environ["WORLD_SIZE"])
            args.world_size = world_size
            run(int(os.environ["RANK"]), world_size, args, recipe, given)
        elif args.world_size > 1:
            spawn_ranks(args, recipe, given)
        else:
            run(0, 1, args, recipe, given)
