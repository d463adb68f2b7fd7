"""Model-shape flags with icefall's names and defaults, and the flags every script that builds a
decoder shares (--context-size, the search flags).

Per-stack flags are comma-separated strings on the command line and tuples of ints after parsing.
`MODEL_CONFIG_KEYS` are the flags stored in every checkpoint ("model_config").
"""
import argparse
from typing import Callable, Sequence, Tuple, Union

from zipformer.core.flag_types import int_at_least, str2bool

# icefall's training lists; without --causal only these (or -1, no chunking) are accepted.
DEFAULT_CHUNK_SIZE = "16,32,64,-1"
DEFAULT_LEFT_CONTEXT_FRAMES = "64,128,256,-1"

# Flags with one value per encoder stack (or a single value shared by all stacks).
PER_STACK_FLAGS = (
    "num_encoder_layers",
    "feedforward_dim",
    "num_heads",
    "encoder_dim",
    "query_head_dim",
    "value_head_dim",
    "pos_head_dim",
    "encoder_unmasked_dim",
    "cnn_module_kernel",
)


def parse_int_tuple(value: Union[str, int, Sequence[int]]) -> Tuple[int, ...]:
    """'2,2,3' -> (2, 2, 3); an int or a sequence of ints is accepted as is."""
    if isinstance(value, int):
        return (value,)
    if isinstance(value, str):
        try:
            return tuple(int(v) for v in value.split(","))
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected comma-separated integers such as '2,2,3', got '{value}'"
            ) from None
    return tuple(int(v) for v in value)


def int_tuple_of(check: Callable[[int], bool], requirement: str) -> Callable[[str], Tuple[int, ...]]:
    """argparse type: comma-separated integers each passing `check`, else a parse-time error
    saying `requirement` ("positive or -1")."""

    def parse(value: str) -> Tuple[int, ...]:
        values = parse_int_tuple(value)
        bad = [v for v in values if not check(v)]
        if bad:
            raise argparse.ArgumentTypeError(f"values must be {requirement}, got {bad[0]}")
        return values

    return parse


def add_context_size_argument(group: Union[argparse.ArgumentParser, argparse._ArgumentGroup]) -> None:
    """--context-size, for every script that builds a decoder (training, decoding, export, merge)."""
    group.add_argument("--context-size", type=int_at_least(1), default=2, help="Decoder left context: 1 bigram, 2 trigram.")


def add_search_arguments(group: Union[argparse.ArgumentParser, argparse._ArgumentGroup]) -> None:
    """The search flags of decode.py and pretrained.py: --beam-size, --context-size, --max-sym-per-frame."""
    group.add_argument("--beam-size", type=int_at_least(1), default=4, help="Beam of beam_search and modified_beam_search.")
    add_context_size_argument(group)
    group.add_argument("--max-sym-per-frame", type=int_at_least(1), default=1, help="Symbols per frame in greedy_search.")


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the Zipformer2 transducer shape flags with the defaults of icefall's 'normal' model."""
    group = parser.add_argument_group("model shape")
    int_list = dict(type=parse_int_tuple)
    group.add_argument(
        "--num-encoder-layers", default="2,2,3,4,3,2", **int_list,
        help="Number of Zipformer layers per encoder stack, comma separated.",
    )
    group.add_argument(
        "--downsampling-factor", default="1,2,4,8,4,2", **int_list,
        help="Frame-rate reduction of each stack relative to the 50 Hz embeddings.",
    )
    group.add_argument(
        "--feedforward-dim", default="512,768,1024,1536,1024,768", **int_list,
        help="Hidden dim of feed_forward2 per stack (feed_forward1/3 use 3/4 and 5/4 of it).",
    )
    group.add_argument(
        "--num-heads", default="4,4,4,8,4,4", **int_list,
        help="Attention heads per stack.",
    )
    group.add_argument(
        "--encoder-dim", default="192,256,384,512,384,256", **int_list,
        help="Embedding dim per stack; the encoder output has the largest of them.",
    )
    group.add_argument(
        "--query-head-dim", default="32", **int_list,
        help="Query/key dim per head, one value or one per stack.",
    )
    group.add_argument(
        "--value-head-dim", default="12", **int_list,
        help="Value dim per head, one value or one per stack.",
    )
    group.add_argument(
        "--pos-head-dim", default="4", **int_list,
        help="Positional-query dim per head, one value or one per stack.",
    )
    group.add_argument(
        "--pos-dim", type=int, default=48,
        help="Dim of the relative positional embeddings before projection.",
    )
    group.add_argument(
        "--encoder-unmasked-dim", default="192,192,256,256,256,192", **int_list,
        help="Per stack, channels never zeroed by the training-time feature masks.",
    )
    group.add_argument(
        "--cnn-module-kernel", default="31,31,15,15,15,31", **int_list,
        help="Depthwise convolution kernel size per stack (odd).",
    )
    group.add_argument("--decoder-dim", type=int, default=512, help="Decoder embedding dim.")
    group.add_argument("--joiner-dim", type=int, default=512, help="Joiner hidden dim.")
    group.add_argument(
        "--causal", type=str2bool, default=False,
        help="Streaming (chunk-causal) model: chunked attention masks and convolutions.",
    )
    group.add_argument(
        "--chunk-size", default=DEFAULT_CHUNK_SIZE, type=int_tuple_of(lambda v: v > 0 or v == -1, "positive or -1"),
        help="Causal mode only: chunk sizes (50 Hz embedding frames), one drawn per training "
        "batch; -1 = full context. Decoding takes a single value.",
    )
    group.add_argument(
        "--left-context-frames", default=DEFAULT_LEFT_CONTEXT_FRAMES, type=int_tuple_of(lambda v: v >= -1, ">= -1"),
        help="Causal mode only: left contexts (50 Hz frames), one drawn per training batch and "
        "rounded down to whole chunks (at least one); -1 = all. Decoding takes a single value.",
    )
    group.add_argument(
        "--use-transducer", type=str2bool, default=True, help="Train the transducer head."
    )
    group.add_argument(
        "--use-ctc", type=str2bool, default=False,
        help="Add a CTC head. Not implemented yet: only 0 is accepted.",
    )


def _model_flag_dests() -> Tuple[str, ...]:
    parser = argparse.ArgumentParser(add_help=False)
    add_model_arguments(parser)
    return tuple(action.dest for action in parser._actions)


# Flags of the model-shape group that do not change the weights: in a causal model the chunk sizes
# and left contexts are sampled in training and chosen anew for decoding (one value each).
_RUN_TIME_FLAGS = ("chunk_size", "left_context_frames")
# The flags that build the model, stored in every checkpoint ("model_config"). context_size (the
# decoder's left context) is one of them, although it is parsed with the training/decoding options.
MODEL_CONFIG_KEYS = tuple(k for k in _model_flag_dests() if k not in _RUN_TIME_FLAGS) + ("context_size",)

