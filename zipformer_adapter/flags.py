"""Flags of the adapter recipe (the reference's fine-tune flags), shared by its scripts."""
import argparse

from zipformer.utils import int_at_least, str2bool
from zipformer_adapter.adapter import ADAPTER_INITS

ADAPTER_DIM_DEFAULT = 16


def add_adapter_arguments(parser: argparse.ArgumentParser, for_training: bool) -> None:
    group = parser.add_argument_group("Adapter options")
    group.add_argument(
        "--use-adapters",
        type=str2bool,
        default=True,
        help="Put four residual bottleneck adapters into every encoder layer. With 0, training is "
        "full fine-tuning and decoding runs the original model (adapter weights are ignored).",
    )
    group.add_argument(
        "--adapter-dim",
        type=int_at_least(1),
        default=ADAPTER_DIM_DEFAULT,
        help="Bottleneck dimension of the adapters (ignored, with a warning, under --use-adapters 0).",
    )
    if for_training:
        group.add_argument(
            "--do-finetune",
            type=str2bool,
            default=True,
            help="Start from --finetune-ckpt. A resumed run (--start-epoch > 1 or --start-batch > 0) "
            "takes its weights from the resumed checkpoint whatever this flag says.",
        )
        group.add_argument(
            "--adapter-init",
            type=str,
            default="zero",
            choices=ADAPTER_INITS,
            help="zero: out_proj starts at 0, so fresh adapters leave the model unchanged; "
            "icefall: PyTorch's default init, as the reference recipe does.",
        )
    else:
        group.add_argument(
            "--adapter-ckpt",
            type=str,
            default=None,
            help="An adapter-only file (adapter-epoch-N.pt) to put on top of --base-ckpt, instead of "
            "the full checkpoints of --exp-dir.",
        )
        group.add_argument(
            "--base-ckpt",
            type=str,
            default=None,
            help="The base model ({'model': state_dict}) the adapter-only files were trained on; "
            "with it, --epoch/--avg average adapter-epoch-N.pt files of --exp-dir.",
        )
