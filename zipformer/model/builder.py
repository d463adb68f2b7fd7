"""The builders that turn the model flags (zipformer.model.flags) into the transducer's modules.

`params` is a zipformer.core.params.AttributeDict with the parsed flags plus feature_dim, vocab_size,
blank_id and context_size. The builders accept per-stack values as comma-separated strings or as
tuples of ints. `model_shape` validates them; a value that cannot work is a UserError naming its flag.
"""
import argparse
from typing import Any, Mapping, Optional, Tuple

import torch

from zipformer.core.errors import UserError
from zipformer.core.flag_types import flag_name
from zipformer.core.params import AttributeDict
from zipformer.model.decoder import Decoder
from zipformer.model.flags import DEFAULT_CHUNK_SIZE, DEFAULT_LEFT_CONTEXT_FRAMES, PER_STACK_FLAGS, parse_int_tuple
from zipformer.model.joiner import Joiner
from zipformer.model.model import AsrModel
from zipformer.model.scaling import ScheduledFloat
from zipformer.model.subsampling import Conv2dSubsampling
from zipformer.model.zipformer import Zipformer2


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


def count_parameters(model: torch.nn.Module, trainable_only: bool = False) -> int:
    """The number of parameters of `model` (only those with requires_grad when `trainable_only`)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
