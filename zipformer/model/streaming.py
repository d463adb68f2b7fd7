"""Chunk-by-chunk inference of a causal transducer: the state list, one chunk's encoder forward,
and stacking per-stream states into a batch and back.

State list of a model with K encoder layers (icefall's order, which the streaming ONNX contract
and sherpa-onnx also use): 6 tensors per layer (see Zipformer2.get_init_states), then the
ConvNeXt cache `cached_embed_left_pad` (N, 128, 3, F') and `processed_lens` (N,) int32, the
50 Hz frames each stream has consumed. The batch axis is dim 1 for each layer's first four
tensors (key, nonlin_attn, val1, val2) and dim 0 for every other tensor.
"""
from typing import List, Tuple

import torch
from torch import nn

from zipformer.core.errors import UserError
from zipformer.core.params import AttributeDict
from zipformer.model.flags import parse_int_tuple
from zipformer.model.frontend import LOG_EPS
from zipformer.model.subsampling import make_pad_mask

STATES_PER_LAYER = 6
# Positions within a layer's six tensors whose batch axis is dim 1.
BATCH_DIM_1 = (0, 1, 2, 3)

# Frames past a chunk's own 2C that one chunk's features must carry: 7 for the convolutions of
# the embed, 2·3 for the ConvNeXt's look-ahead of 3 frames at 50 Hz.
EMBED_LOOK_AHEAD = 13

# Frames of LOG_EPS appended to every utterance of a causal model (icefall's decode.py and
# streaming_decode.py), so that its last real frames are followed by a full chunk.
TAIL_PAD_FRAMES = 30


def decoding_chunk_config(params: AttributeDict, use: str = "decoding a causal model") -> Tuple[int, int]:
    """The single (chunk size, left context) a causal model decodes with; UserError otherwise,
    which starts with `use` (what needs them)."""
    chunk_sizes = parse_int_tuple(params.chunk_size)
    left_contexts = parse_int_tuple(params.left_context_frames)
    if len(chunk_sizes) != 1 or len(left_contexts) != 1:
        raise UserError(
            f"{use} takes one --chunk-size and one --left-context-frames, e.g. "
            "--chunk-size 16 --left-context-frames 128"
        )
    return chunk_sizes[0], left_contexts[0]


FULL_CONTEXT_NOTE = "causal model without --chunk-size/--left-context-frames: decoding in full context"


def full_context_unless_given(params: AttributeDict, given: frozenset) -> bool:
    """Decode a causal model in full context when neither --chunk-size nor --left-context-frames
    was typed (their defaults are training's lists), so that one file decodes like a non-causal
    model by default and streams when given a latency; icefall's decode.py stops there instead.
    True when it did (the caller logs FULL_CONTEXT_NOTE once its log is set up)."""
    if params.causal and not given & {"chunk_size", "left_context_frames"}:
        params.chunk_size, params.left_context_frames = (-1,), (-1,)
        return True
    return False


def streaming_chunk_config(params: AttributeDict, use: str = "decoding a causal model") -> Tuple[int, int]:
    """decoding_chunk_config for real streaming, which needs a finite chunk and left context and
    whole chunks of left context; UserError naming the flag otherwise."""
    chunk_size, left_context = decoding_chunk_config(params, use)
    if chunk_size < 1 or left_context < 1:
        raise UserError("streaming needs a finite chunk and left context: --chunk-size and --left-context-frames > 0")
    if left_context % chunk_size != 0:
        # The full forward rounds the left context down to whole chunks, the cache does not.
        raise UserError(
            f"--left-context-frames {left_context} is not a multiple of --chunk-size {chunk_size}: "
            f"use e.g. {max(left_context // chunk_size, 1) * chunk_size}"
        )
    return chunk_size, left_context


def chunk_suffix(params: AttributeDict) -> str:
    """Result-file suffix words of a causal model: -chunk-{C}-left-context-{L}."""
    if not params.causal:
        return ""
    chunk_size, left_context = decoding_chunk_config(params)
    return f"-chunk-{chunk_size}-left-context-{left_context}"


def append_tail_padding(
    features: torch.Tensor, feature_lens: torch.Tensor, frames: int = TAIL_PAD_FRAMES
) -> Tuple[torch.Tensor, torch.Tensor]:
    """(N, T, F), (N,) -> (N, T + frames, F) with frames [len, len + frames) of each utterance
    set to LOG_EPS, and lengths + frames."""
    batch_size, num_frames, _ = features.shape
    padded = torch.cat((features, features.new_full((batch_size, frames, features.shape[2]), LOG_EPS)), dim=1)
    positions = torch.arange(num_frames + frames, device=features.device).unsqueeze(0)
    lens = feature_lens.unsqueeze(1)
    tail = (positions >= lens) & (positions < lens + frames)
    return padded.masked_fill(tail.unsqueeze(-1), LOG_EPS), feature_lens + frames


def num_chunks(num_frames: int, chunk_size: int) -> int:
    """Chunks a stream of `num_frames` feature frames (tail padding included) takes, as in
    icefall's streaming_decode.py: the input gets 13 more frames (the last chunk's look-ahead),
    and windows start every 2·chunk_size frames until all of it has been consumed."""
    return -(-(num_frames + EMBED_LOOK_AHEAD) // (2 * chunk_size))


def pad_for_chunks(features: torch.Tensor, chunk_size: int) -> torch.Tensor:
    """(T, F) -> (n·2C + 13, F), n = num_chunks(T, C), padded with LOG_EPS, so that chunk k's
    window features[2Ck : 2Ck + 2C + 13] is complete for every k < n."""
    length = num_chunks(features.shape[0], chunk_size) * 2 * chunk_size + EMBED_LOOK_AHEAD
    padding = features.new_full((length - features.shape[0], features.shape[1]), LOG_EPS)
    return torch.cat((features, padding), dim=0)


def get_init_states(model: nn.Module, batch_size: int, device: torch.device) -> List[torch.Tensor]:
    """Zero states of `batch_size` fresh streams (encoder caches, embed cache, processed_lens)."""
    states = model.encoder.get_init_states(batch_size, device)
    states.append(model.encoder_embed.get_init_states(batch_size, device))
    states.append(torch.zeros(batch_size, dtype=torch.int32, device=device))
    return states


def batch_dim(index: int, num_states: int) -> int:
    """The batch axis of state `index` in a list of `num_states`."""
    in_layers = index < num_states - 2
    return 1 if in_layers and index % STATES_PER_LAYER in BATCH_DIM_1 else 0


def stack_states(streams: List[List[torch.Tensor]]) -> List[torch.Tensor]:
    """Per-stream state lists (each of batch 1 or more) -> one list for the concatenated batch."""
    num_states = len(streams[0])
    return [
        torch.cat([s[i] for s in streams], dim=batch_dim(i, num_states)) for i in range(num_states)
    ]


def unstack_states(states: List[torch.Tensor]) -> List[List[torch.Tensor]]:
    """A batch's state list -> one state list of batch 1 per stream (inverse of stack_states)."""
    num_states = len(states)
    pieces = [state.split(1, dim=batch_dim(i, num_states)) for i, state in enumerate(states)]
    return [list(stream) for stream in zip(*pieces)]


def cache_padding_mask(processed_lens: torch.Tensor, left_context: int) -> torch.Tensor:
    """(N, L) bool, True at cache slots not filled yet: slot j (0 oldest, L - 1 newest) holds a
    real frame only when j >= L - processed_lens."""
    slots = torch.arange(left_context, device=processed_lens.device).unsqueeze(0)
    return slots < left_context - processed_lens.unsqueeze(1)


def streaming_forward(
    model: nn.Module,
    features: torch.Tensor,
    feature_lens: torch.Tensor,
    states: List[torch.Tensor],
) -> Tuple[torch.Tensor, torch.Tensor, List[torch.Tensor]]:
    """Encode one chunk of each stream.

    Args:
      model: a causal AsrModel in eval mode; its encoder's chunk size C and left context L are
        its single chunk_size / left_context_frames values.
      features: (N, 2C + 13, feature_dim), the chunk plus its look-ahead.
      feature_lens: (N,) valid frames of `features`.
      states: the streams' stacked states.
    Returns:
      encoder_out (N, C / 2, encoder_dim), its lengths, and the new states.
    """
    x, x_lens, embed_cache = model.encoder_embed.streaming_forward(features, feature_lens, states[-2])
    processed_lens = states[-1]
    left_context = model.encoder.left_context_frames[0]
    padding_mask = torch.cat(
        (cache_padding_mask(processed_lens, left_context), make_pad_mask(x_lens, x.shape[1])), dim=1
    )
    encoder_out, out_lens, encoder_states = model.encoder.streaming_forward(
        x.permute(1, 0, 2), x_lens, states[:-2], padding_mask
    )
    new_processed = processed_lens + x_lens.to(processed_lens.dtype)
    return encoder_out.permute(1, 0, 2), out_lens, encoder_states + [embed_cache, new_processed]
