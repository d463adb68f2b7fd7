"""Model-shape flags (icefall's names and defaults) and the builders that turn them into modules.

`params` is a zipformer.utils.AttributeDict with the parsed flags plus feature_dim, vocab_size,
blank_id and context_size. Per-stack flags are comma-separated strings on the command line and
tuples of ints after parsing; the builders accept either form.
"""
import argparse
from typing import Any, Callable, Mapping, Optional, Sequence, Tuple, Union

from zipformer.decoder import Decoder
from zipformer.joiner import Joiner
from zipformer.model import AsrModel
from zipformer.scaling import ScheduledFloat
from zipformer.subsampling import Conv2dSubsampling
from zipformer.utils import AttributeDict, UserError, flag_name, int_at_least, str2bool
from zipformer.zipformer import Zipformer2

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



def model_shape(params: AttributeDict) -> AttributeDict:
    """Validated per-stack shape values from `params`, each a tuple with one entry per stack.

    Raises UserError naming the flag when a value cannot work.
    """
    if not params.use_transducer:
        raise UserError("only the transducer head is implemented: use --use-transducer 1")
    if params.use_ctc:
        raise UserError("the CTC head is not implemented yet: use --use-ctc 0")

    shape = AttributeDict()
    try:
        shape.downsampling_factor = parse_int_tuple(params.downsampling_factor)
        num_stacks = len(shape.downsampling_factor)
        for name in PER_STACK_FLAGS:
            values = parse_int_tuple(params[name])
            if len(values) == 1:
                values = values * num_stacks
            if len(values) != num_stacks:
                raise UserError(
                    f"{flag_name(name)} has {len(values)} values but --downsampling-factor has "
                    f"{num_stacks} stacks: give 1 or {num_stacks} comma-separated values"
                )
            shape[name] = values
    except argparse.ArgumentTypeError as e:
        raise UserError(str(e)) from None

    for name in PER_STACK_FLAGS + ("downsampling_factor",):
        if min(shape[name]) < 1:
            raise UserError(f"{flag_name(name)} values must be positive, got {shape[name]}")
    if any(k % 2 == 0 for k in shape.cnn_module_kernel):
        raise UserError(f"--cnn-module-kernel values must be odd, got {shape.cnn_module_kernel}")
    if any(u > d for u, d in zip(shape.encoder_unmasked_dim, shape.encoder_dim)):
        raise UserError(
            f"--encoder-unmasked-dim {shape.encoder_unmasked_dim} must not exceed "
            f"--encoder-dim {shape.encoder_dim} in any stack"
        )
    if params.pos_dim < 2 or params.pos_dim % 2 != 0:
        raise UserError(f"--pos-dim must be a positive even number, got {params.pos_dim}")
    shape.chunk_size, shape.left_context_frames = chunk_flags(params, shape)
    return shape


def chunk_flags(params: AttributeDict, shape: AttributeDict) -> Tuple[Tuple[int, ...], Tuple[int, ...]]:
    """Validated (chunk sizes, left contexts) for the encoder: (-1,), (-1,) without --causal.

    A chunk must be a whole number of frames in every stack, and a finite left context must
    cover each stack's convolution context, (kernel // 2) · ds frames, as icefall requires.
    """
    try:
        chunk_sizes = parse_int_tuple(params.chunk_size)
        left_contexts = parse_int_tuple(params.left_context_frames)
    except argparse.ArgumentTypeError as e:
        raise UserError(str(e)) from None
    if not params.causal:
        for flag, values, default in (
            ("--chunk-size", chunk_sizes, DEFAULT_CHUNK_SIZE),
            ("--left-context-frames", left_contexts, DEFAULT_LEFT_CONTEXT_FRAMES),
        ):
            if values not in (parse_int_tuple(default), (-1,)):
                given = ",".join(str(v) for v in values)
                raise UserError(f"{flag} {given} needs --causal 1 (a streaming model); drop it or add --causal 1")
        return (-1,), (-1,)
    if any(c == 0 or c < -1 for c in chunk_sizes) or any(v < -1 for v in left_contexts):
        raise UserError("--chunk-size values must be positive or -1, --left-context-frames >= -1")
    conv_context = max((k // 2) * ds for k, ds in zip(shape.cnn_module_kernel, shape.downsampling_factor))
    for chunk in chunk_sizes:
        if chunk == -1:
            continue
        bad = [ds for ds in shape.downsampling_factor if chunk % ds != 0]
        if bad:
            raise UserError(
                f"--chunk-size {chunk} is not a multiple of the downsampling factor {bad[0]}: use "
                f"a multiple of {max(shape.downsampling_factor)}"
            )
        for left in left_contexts:
            if left != -1 and chunk * max(left // chunk, 1) < conv_context:
                raise UserError(
                    f"--left-context-frames {left} with --chunk-size {chunk} is less than the "
                    f"convolutions' context of {conv_context} frames: use at least {conv_context}"
                )
    return chunk_sizes, left_contexts


def is_causal_state_dict(state_dict: Mapping[str, Any]) -> Optional[bool]:
    """Whether a checkpoint's encoder is causal (chunk-causal convolutions), or None if it has no
    convolution modules to tell by."""
    for key in state_dict:
        if key.endswith("depthwise_conv.chunkwise_conv_scale"):
            return True
        if ".conv_module1.depthwise_conv.weight" in key:
            return False
    return None


def check_causal(state_dict: Mapping[str, Any], causal: bool, source: str = "the checkpoint") -> None:
    """A one-line UserError when `--causal` does not match the checkpoint's encoder."""
    found = is_causal_state_dict(state_dict)
    if found is not None and found != bool(causal):
        kind = "a causal (streaming) model" if found else "a non-causal model"
        raise UserError(f"{source} is {kind}: pass --causal {int(found)}")


def _dropout_schedule() -> ScheduledFloat:
    return ScheduledFloat((0.0, 0.3), (20000.0, 0.1))


def get_encoder_embed(params: AttributeDict) -> Conv2dSubsampling:
    shape = model_shape(params)
    return Conv2dSubsampling(
        in_channels=params.feature_dim,
        out_channels=shape.encoder_dim[0],
        dropout=_dropout_schedule(),
    )


def get_encoder_model(params: AttributeDict) -> Zipformer2:
    shape = model_shape(params)
    return Zipformer2(
        output_downsampling_factor=2,
        downsampling_factor=shape.downsampling_factor,
        num_encoder_layers=shape.num_encoder_layers,
        encoder_dim=shape.encoder_dim,
        encoder_unmasked_dim=shape.encoder_unmasked_dim,
        query_head_dim=shape.query_head_dim,
        pos_head_dim=shape.pos_head_dim,
        value_head_dim=shape.value_head_dim,
        pos_dim=params.pos_dim,
        num_heads=shape.num_heads,
        feedforward_dim=shape.feedforward_dim,
        cnn_module_kernel=shape.cnn_module_kernel,
        dropout=_dropout_schedule(),
        warmup_batches=4000.0,
        causal=params.causal,
        chunk_size=shape.chunk_size,
        left_context_frames=shape.left_context_frames,
    )


def get_decoder_model(params: AttributeDict) -> Decoder:
    return Decoder(
        vocab_size=params.vocab_size,
        decoder_dim=params.decoder_dim,
        blank_id=params.blank_id,
        context_size=params.context_size,
    )


def get_joiner_model(params: AttributeDict) -> Joiner:
    return Joiner(
        encoder_dim=max(model_shape(params).encoder_dim),
        decoder_dim=params.decoder_dim,
        joiner_dim=params.joiner_dim,
        vocab_size=params.vocab_size,
    )


def get_model(params: AttributeDict) -> AsrModel:
    """The full transducer described by `params` (flags + feature_dim, vocab_size, blank_id,
    context_size)."""
    shape = model_shape(params)
    return AsrModel(
        encoder_embed=get_encoder_embed(params),
        encoder=get_encoder_model(params),
        decoder=get_decoder_model(params),
        joiner=get_joiner_model(params),
        encoder_dim=max(shape.encoder_dim),
        decoder_dim=params.decoder_dim,
        vocab_size=params.vocab_size,
        use_transducer=params.use_transducer,
        use_ctc=params.use_ctc,
    )
