"""The flags of training (add_training_arguments, get_parser) and the constants that join them (get_params)."""
import argparse
from pathlib import Path

from zipformer.core.flag_types import int_at_least, positive_float, str2bool
from zipformer.core.params import AttributeDict
from zipformer.data.asr_datamodule import AsrDataModule
from zipformer.loss.rnnt_loss import BACKENDS
from zipformer.model.flags import add_context_size_argument, add_model_arguments
from zipformer.model.frontend import frontend_params
from zipformer.training.recipe import TrainingRecipe


def add_training_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("Training options")
    group.add_argument("--world-size", type=int_at_least(1), default=1, help="Number of processes (GPUs) for DDP.")
    group.add_argument("--master-port", type=int, default=12354, help="Master port for DDP.")
    group.add_argument("--tensorboard", type=str2bool, default=True, help="Write tensorboard logs.")
    group.add_argument("--num-epochs", type=int_at_least(1), default=30)
    group.add_argument(
        "--start-epoch",
        type=int_at_least(1),
        default=1,
        help="Resume from epoch-{start_epoch-1}.pt when > 1.",
    )
    group.add_argument(
        "--start-batch",
        type=int_at_least(0),
        default=0,
        help="Resume from checkpoint-{start_batch}.pt (and its sampler state) when > 0.",
    )
    group.add_argument("--exp-dir", type=Path, default=Path("zipformer/exp"))
    group.add_argument("--bpe-model", type=str, default="data/lang_bpe_500/bpe.model")
    group.add_argument("--base-lr", type=positive_float, default=0.045)
    group.add_argument("--lr-batches", type=positive_float, default=7500)
    group.add_argument("--lr-epochs", type=positive_float, default=3.5)
    group.add_argument(
        "--ref-duration",
        type=positive_float,
        default=600,
        help="Reference batch duration (s) for the batch count that drives the schedules.",
    )
    add_context_size_argument(group)
    group.add_argument("--prune-range", type=int_at_least(1), default=5, help="s_range of the pruned RNN-T loss.")
    group.add_argument("--lm-scale", type=float, default=0.25, help="lm_only_scale of the smoothed simple loss.")
    group.add_argument("--am-scale", type=float, default=0.0, help="am_only_scale of the smoothed simple loss.")
    group.add_argument("--simple-loss-scale", type=float, default=0.5, help="Simple-loss weight after warm-up.")
    group.add_argument(
        "--rnnt-backend",
        choices=BACKENDS,
        default="torch",
        help="The loss's lattice recursion: this recipe's pure PyTorch one, or k2's / fast_rnnt's (installed by you).",
    )
    group.add_argument("--seed", type=int, default=42)
    group.add_argument("--inf-check", type=str2bool, default=False, help="Check every module output for inf/nan.")
    group.add_argument("--save-every-n", type=int_at_least(0), default=4000, help="Write checkpoint-N.pt every N batches (0: never).")
    group.add_argument("--keep-last-k", type=int_at_least(1), default=30, help="Keep only the newest k checkpoint-N.pt files.")
    group.add_argument(
        "--average-period",
        type=int_at_least(1),
        default=200,
        help="Update the averaged model (model_avg) every this many batches.",
    )
    group.add_argument("--use-fp16", type=str2bool, default=False, help="Mixed precision (fp16, CUDA only).")
    group.add_argument("--use-bf16", type=str2bool, default=False, help="Mixed precision (bf16, CUDA only).")
    group.add_argument(
        "--num-threads",
        type=int_at_least(0),
        default=0,
        help="CPU threads per process (0: PyTorch's default). On a busy machine 1 avoids oversubscription.",
    )
    group.add_argument("--log-interval", type=int_at_least(1), default=50, help="Log the loss every N batches.")
    group.add_argument("--valid-interval", type=int_at_least(1), default=3000, help="Validate every N batches of an epoch.")
    group.add_argument(
        "--warm-step",
        type=int_at_least(0),
        default=2000,
        help="Batches of simple/pruned loss warm-up when training from scratch (a fine-tune starts at the final scales).",
    )
    group.add_argument(
        "--max-bad-batches",
        type=int_at_least(1),
        default=20,
        help="Stop after this many batches in a row with a non-finite loss.",
    )
    group.add_argument(
        "--finetune-ckpt",
        type=str,
        default=None,
        help="Start from the weights of this checkpoint ({'model': state_dict}): fine-tuning.",
    )
    group.add_argument(
        "--init-modules",
        type=str,
        default=None,
        help="With --finetune-ckpt: comma-separated module prefixes to initialise (default: all).",
    )


def get_parser(recipe: TrainingRecipe) -> argparse.ArgumentParser:
    """The training flags; `recipe.add_arguments` adds the recipe's own."""
    parser = argparse.ArgumentParser(formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_training_arguments(parser)
    add_model_arguments(parser)
    AsrDataModule.add_arguments(parser)
    AsrDataModule.add_mux_arguments(parser)
    recipe.add_arguments(parser)
    return parser


def get_params() -> AttributeDict:
    """Constants that are not flags (icefall's names); updated with the parsed flags.

    Unlike icefall's, it holds no loop state (batch_idx_train, best losses): see TrainingState.
    """
    return AttributeDict({"reset_interval": 200, **frontend_params()})
