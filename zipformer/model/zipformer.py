"""Zipformer2 encoder: stacks of Zipformer2EncoderLayers at several frame rates.

Tensors inside the encoder are time-major, (T, N, C). Parameter names and shapes follow icefall's
Zipformer2 so that its checkpoints load with strict=True, and the inference arithmetic follows it
so that they give the same outputs. A causal encoder (causal=True) masks attention and
convolutions chunk by chunk (zipformer/model/chunk_causal.py) and also runs one chunk at a time with
cached left context (the streaming_forward methods, icefall's names and state layout).
"""
import copy
import math
import random
from typing import List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn

from zipformer.model.chunk_causal import ChunkCausalDepthwiseConv1d, chunk_attention_mask, sample_chunk_config
from zipformer.model.scaling import (
    ActivationDropoutAndLinear,
    Balancer,
    BiasNorm,
    FloatLike,
    ScaledLinear,
    ScheduledFloat,
    Whiten,
    contiguous_grad_view,
    limit_param_value,
    penalize_abs_values_gt,
    regularisers_active,
    whitening_schedule,
)

IntOrTuple = Union[int, Sequence[int]]

# Masked attention scores are set to this (not -inf), as in the reference model.
MASKED_SCORE = -1000.0


def convert_num_channels(x: torch.Tensor, num_channels: int) -> torch.Tensor:
    """Truncate the last dim of x to `num_channels`, or zero-pad it at the end."""
    current = x.shape[-1]
    if num_channels <= current:
        return x[..., :num_channels]
    padding = torch.zeros(*x.shape[:-1], num_channels - current, dtype=x.dtype, device=x.device)
    return torch.cat((x, padding), dim=-1)


def sequence_dropout_mask(x: torch.Tensor, dropout_rate: float) -> Optional[torch.Tensor]:
    """A (N, 1) mask of 0/1 dropping whole sequences of x (T, N, C) at `dropout_rate`, or None."""
    if dropout_rate == 0.0:
        return None
    return (torch.rand(x.shape[1], 1, device=x.device) >= dropout_rate).to(x.dtype)


class BypassModule(nn.Module):
    """out = orig + (new - orig) ⊙ bypass_scale, a learned per-channel interpolation.

    Training only: bypass_scale is kept in [scale_min, scale_max] through its gradient, and for a
    random `skip_rate` fraction of sequences the scale is 0 (the wrapped computation is skipped).
    """

    def __init__(
        self,
        embed_dim: int,
        skip_rate: FloatLike = 0.0,
        scale_min: Optional[FloatLike] = None,
        scale_max: FloatLike = 1.0,
    ) -> None:
        super().__init__()
        self.bypass_scale = nn.Parameter(torch.full((embed_dim,), 0.5))
        self.skip_rate = skip_rate
        self.scale_min = (
            ScheduledFloat((0.0, 0.9), (20000.0, 0.2), default=0.0) if scale_min is None else scale_min
        )
        self.scale_max = scale_max

    def _scale(self, batch_size: int) -> torch.Tensor:
        """(embed_dim,) in eval; (N, embed_dim) or (embed_dim,) in training."""
        if not regularisers_active(self):
            return self.bypass_scale
        scale = limit_param_value(
            self.bypass_scale, min_value=float(self.scale_min), max_value=float(self.scale_max)
        )
        skip_rate = float(self.skip_rate)
        if skip_rate != 0.0:
            keep = torch.rand(batch_size, 1, device=scale.device) >= skip_rate
            scale = scale * keep.to(scale.dtype)
        return scale

    def forward(self, src_orig: torch.Tensor, src: torch.Tensor) -> torch.Tensor:
        """src_orig, src: (T, N, C) -> (T, N, C)."""
        return src_orig + (src - src_orig) * self._scale(src.shape[1])


class CompactRelPositionalEncoding(nn.Module):
    """Relative positional embeddings for offsets r = -(T-1) .. T-1 (key index - query index).

    With c = sqrt(dim): r' = c·sign(r)·(ln(|r| + c) - ln c), a = atan(r' / (length_factor·dim/2π)),
    pe[2k] = cos((k+1) a), pe[2k+1] = sin((k+1) a), and the last channel is a constant 1.
    Compression makes far offsets share nearly the same embedding. No parameters; the table is
    computed per call (so nothing is saved in the state_dict).
    """

    def __init__(self, embed_dim: int, dropout_rate: float, length_factor: float = 1.0) -> None:
        super().__init__()
        if embed_dim % 2 != 0:
            raise ValueError(f"positional embedding dim must be even, got {embed_dim}")
        self.embed_dim = embed_dim
        self.length_factor = length_factor
        self.dropout = nn.Dropout(dropout_rate)

    def forward(self, x: torch.Tensor, left_context_len: int = 0) -> torch.Tensor:
        """x: (T, N, C) (only T is used) -> (1, L + 2T - 1, embed_dim), L = left_context_len;
        column k is offset k - (L + T - 1), i.e. offsets -(L + T - 1) .. T - 1: the T queries
        follow L cached keys in streaming."""
        num_frames = x.shape[0]
        offsets = torch.arange(-(num_frames - 1 + left_context_len), num_frames, device=x.device)
        offsets = offsets.to(torch.float32).unsqueeze(1)
        compression = self.embed_dim**0.5
        compressed = (
            compression
            * offsets.sign()
            * ((offsets.abs() + compression).log() - math.log(compression))
        )
        length_scale = self.length_factor * self.embed_dim / (2.0 * math.pi)
        angles = (compressed / length_scale).atan()
        freqs = 1 + torch.arange(self.embed_dim // 2, device=x.device)
        phases = angles * freqs
        pe = torch.stack((phases.cos(), phases.sin()), dim=-1).reshape(-1, self.embed_dim)
        pe = torch.cat((pe[:, :-1], torch.ones_like(pe[:, -1:])), dim=1)
        pe = pe.to(x.dtype).unsqueeze(0)
        return self.dropout(pe)


def rel_shift_indices(
    num_frames: int, device: torch.device, left_context_len: int = 0
) -> torch.Tensor:
    """(T, L + T) indices into the L + 2T - 1 offset columns: entry (i, j) is T - 1 - i + j, the
    column of offset j - (L + i) (key j of L cached + T current keys, query i at key L + i)."""
    rows = torch.arange(num_frames - 1, -1, -1, device=device).unsqueeze(1)
    cols = torch.arange(num_frames + left_context_len, device=device).unsqueeze(0)
    return rows + cols


def rel_shift(pos_scores: torch.Tensor, num_keys: int) -> torch.Tensor:
    """(H, N, T, W) scores by offset column -> (H, N, T, num_keys): entry (i, j) is column T - 1 - i + j.

    The same entries as gathering with rel_shift_indices, as a strided view: row i starts
    W - 1 elements after row i - 1. Unlike gather, whose backward keeps its whole input (the
    (H, N, T, 2T - 1) scores, twice the attention weights, in the 50 Hz stacks the largest saved
    tensor), a view's backward keeps only the shape.
    """
    heads, batch, num_frames, width = pos_scores.shape
    pos_scores = pos_scores.contiguous()
    return pos_scores.as_strided(
        (heads, batch, num_frames, num_keys),
        (batch * num_frames * width, num_frames * width, width - 1, 1),
        storage_offset=pos_scores.storage_offset() + num_frames - 1,
    )


class RelPositionMultiheadAttentionWeights(nn.Module):
    """Attention weights (H, N, T, T) from content scores q·k plus relative-position scores.

    in_proj gives [query (q·H) | key (q·H) | positional query (p·H)], each head-major. The score
    is q_i·k_j + p_i·linear_pos(pe(j - i)), without 1/sqrt(d) (folded into the init); masked keys
    get -1000 before the softmax over keys.
    """

    def __init__(
        self,
        embed_dim: int,
        pos_dim: int,
        num_heads: int,
        query_head_dim: int,
        pos_head_dim: int,
        pos_emb_skip_rate: Optional[FloatLike] = None,
    ) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.query_head_dim = query_head_dim
        self.pos_head_dim = pos_head_dim
        self.pos_emb_skip_rate = (
            ScheduledFloat((0.0, 0.5), (4000.0, 0.0)) if pos_emb_skip_rate is None else pos_emb_skip_rate
        )
        in_proj_dim = (2 * query_head_dim + pos_head_dim) * num_heads
        self.in_proj = ScaledLinear(embed_dim, in_proj_dim, initial_scale=query_head_dim**-0.25)
        key_dim = query_head_dim * num_heads
        self.whiten_keys = Whiten(
            num_groups=num_heads, whitening_limit=whitening_schedule(3.0), prob=0.1,
            grad_scale=0.025,
        )
        self.balance_keys = Balancer(
            key_dim, channel_dim=-1, min_positive=0.4, max_positive=0.6, min_abs=0.0,
            max_abs=100.0, prob=0.025,
        )
        self.linear_pos = ScaledLinear(
            pos_dim, num_heads * pos_head_dim, bias=False, initial_scale=0.05
        )

    def forward(
        self,
        x: torch.Tensor,
        pos_emb: torch.Tensor,
        key_padding_mask: Optional[torch.Tensor] = None,
        attn_mask: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        """
        Args:
          x: (T, N, embed_dim)
          pos_emb: (1, 2T - 1, pos_dim), column k for offset k - (T - 1)
          key_padding_mask: (N, T) bool, True at padding, or None
          attn_mask: (T, T) bool, (query, key), True where masked (the chunk mask), or None
        Returns:
          attention weights (H, N, T, T), softmax over the last (key) dim.
        """
        num_frames, batch_size, _ = x.shape
        query, key, pos_query = self._project(x)
        key = self.whiten_keys(self.balance_keys(key))
        scores = self._content_scores(query, key, batch_size)

        if not (regularisers_active(self) and random.random() < float(self.pos_emb_skip_rate)):
            scores = scores + self._position_scores(pos_query, pos_emb, left_context_len=0)

        if regularisers_active(self) and random.random() < 0.1:
            scores = penalize_abs_values_gt(scores, limit=25.0, penalty=1.0e-04)
        if attn_mask is not None:
            scores = scores.masked_fill(attn_mask, MASKED_SCORE)
        if key_padding_mask is not None:
            scores = scores.masked_fill(key_padding_mask.unsqueeze(1), MASKED_SCORE)
        return scores.softmax(dim=-1)

    def streaming_forward(
        self,
        x: torch.Tensor,
        pos_emb: torch.Tensor,
        cached_key: torch.Tensor,
        left_context_len: int,
        key_padding_mask: torch.Tensor,
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """One chunk of T frames after L = left_context_len cached ones (inference only).

        Args:
          x: (T, N, embed_dim)
          pos_emb: (1, L + 2T - 1, pos_dim), offsets -(L + T - 1) .. T - 1
          cached_key: (L, N, H·query_head_dim), the keys of the previous L frames
          key_padding_mask: (N, L + T) bool, True at cache slots not yet filled and padding
        Returns:
          weights (H, N, T, L + T) and the new cached_key, the last L keys.
        """
        if cached_key.shape[0] != left_context_len:
            raise ValueError(
                f"cached_key has {cached_key.shape[0]} frames, expected {left_context_len}"
            )
        batch_size = x.shape[1]
        query, key, pos_query = self._project(x)
        key = torch.cat((cached_key, key), dim=0)
        scores = self._content_scores(query, key, batch_size)
        scores = scores + self._position_scores(pos_query, pos_emb, left_context_len)
        scores = scores.masked_fill(key_padding_mask.unsqueeze(1), MASKED_SCORE)
        return scores.softmax(dim=-1), key[key.shape[0] - left_context_len :]

    def _project(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x (T, N, embed_dim) -> query, key (T, N, H·q) and positional query (T, N, H·p)."""
        x = self.in_proj(x)
        key_dim = self.num_heads * self.query_head_dim
        return x[..., :key_dim], x[..., key_dim : 2 * key_dim], x[..., 2 * key_dim :]

    def _content_scores(
        self, query: torch.Tensor, key: torch.Tensor, batch_size: int
    ) -> torch.Tensor:
        """query (T, N, H·q), key (S, N, H·q) -> q·k scores (H, N, T, S)."""
        heads, query_dim = self.num_heads, self.query_head_dim
        query = query.reshape(query.shape[0], batch_size, heads, query_dim).permute(2, 1, 0, 3)
        key = key.reshape(key.shape[0], batch_size, heads, query_dim).permute(2, 1, 3, 0)
        return torch.matmul(query, key)

    def _position_scores(
        self, pos_query: torch.Tensor, pos_emb: torch.Tensor, left_context_len: int
    ) -> torch.Tensor:
        """p_i·linear_pos(pe(j - (L + i))) for queries i < T and keys j < L + T: (H, N, T, L + T).

        pos_query: (T, N, H·p); pos_emb: (1, L + 2T - 1, pos_dim), offsets -(L + T - 1) .. T - 1.
        """
        num_frames, batch_size, _ = pos_query.shape
        heads, pos_dim = self.num_heads, self.pos_head_dim
        pos_query = pos_query.reshape(num_frames, batch_size, heads, pos_dim).permute(2, 1, 0, 3)
        pos = self.linear_pos(pos_emb)  # (1, L + 2T - 1, H·p)
        pos = pos.reshape(-1, pos.shape[1], heads, pos_dim).permute(2, 0, 3, 1)  # (H, 1, p, ·)
        pos_scores = torch.matmul(pos_query, pos)  # (H, N, T, L + 2T - 1)
        if torch.jit.is_tracing():
            # ONNX has no strided view; Gather exports everywhere.
            index = rel_shift_indices(num_frames, pos_query.device, left_context_len)
            return torch.gather(pos_scores, dim=-1, index=index.expand(heads, batch_size, -1, -1))
        return rel_shift(pos_scores, num_frames + left_context_len)


class SelfAttention(nn.Module):
    """Applies precomputed attention weights to per-head values: out_proj(concat_h(W_h @ V_h))."""

    def __init__(self, embed_dim: int, num_heads: int, value_head_dim: int) -> None:
        super().__init__()
        self.in_proj = nn.Linear(embed_dim, num_heads * value_head_dim)
        self.out_proj = ScaledLinear(num_heads * value_head_dim, embed_dim, initial_scale=0.05)
        self.whiten = Whiten(
            num_groups=1, whitening_limit=whitening_schedule(7.5, ratio=3.0), prob=0.1,
            grad_scale=0.01,
        )

    def forward(self, x: torch.Tensor, attn_weights: torch.Tensor) -> torch.Tensor:
        """x: (T, N, C), attn_weights: (H, N, T, T) -> (T, N, C)."""
        return self.whiten(self._attend(self.in_proj(x), attn_weights))

    def streaming_forward(
        self,
        x: torch.Tensor,
        attn_weights: torch.Tensor,
        cached_val: torch.Tensor,
        left_context_len: int,
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """x: (T, N, C), attn_weights: (H, N, T, L + T), cached_val: (L, N, H·v), the values of
        the previous L frames -> (T, N, C) and the new cache, the last L values."""
        values = torch.cat((cached_val, self.in_proj(x)), dim=0)
        out = self._attend(values, attn_weights)
        return out, values[values.shape[0] - left_context_len :]

    def _attend(self, values: torch.Tensor, attn_weights: torch.Tensor) -> torch.Tensor:
        """values (S, N, H·v), weights (H, N, T, S) -> out_proj(head-major concat) (T, N, C)."""
        heads, batch_size, num_queries, _ = attn_weights.shape
        values = values.reshape(values.shape[0], batch_size, heads, -1).permute(2, 1, 0, 3)
        x = torch.matmul(attn_weights, values)  # (H, N, T, v)
        x = x.permute(2, 1, 0, 3).reshape(num_queries, batch_size, -1)  # head-major channels
        return self.out_proj(x)


class FeedforwardModule(nn.Module):
    """Linear up-projection, SwooshL, dropout shared over time, Linear down-projection."""

    def __init__(self, embed_dim: int, feedforward_dim: int, dropout: FloatLike) -> None:
        super().__init__()
        self.in_proj = nn.Linear(embed_dim, feedforward_dim)
        self.hidden_balancer = Balancer(
            feedforward_dim, channel_dim=-1, min_positive=0.3, max_positive=1.0, min_abs=0.75,
            max_abs=5.0,
        )
        self.out_proj = ActivationDropoutAndLinear(
            feedforward_dim, embed_dim, activation="SwooshL", dropout_p=dropout,
            dropout_shared_dim=0, initial_scale=0.1,
        )
        self.out_whiten = Whiten(
            num_groups=1, whitening_limit=whitening_schedule(7.5), prob=0.1, grad_scale=0.01
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (T, N, C) -> (T, N, C)."""
        x = self.in_proj(x)
        x = self.hidden_balancer(x)
        x = self.out_proj(x)
        return self.out_whiten(x)


class NonlinAttention(nn.Module):
    """in_proj -> (s, x, y); x ← x ⊙ tanh(s); x ← W_0 @ x with the first head's attention weights;
    x ← x ⊙ y; out_proj."""

    def __init__(self, channels: int, hidden_channels: int) -> None:
        super().__init__()
        self.hidden_channels = hidden_channels
        self.in_proj = nn.Linear(channels, hidden_channels * 3)
        self.balancer = Balancer(
            hidden_channels, channel_dim=-1,
            min_positive=ScheduledFloat((0.0, 0.25), (20000.0, 0.05)),
            max_positive=ScheduledFloat((0.0, 0.75), (20000.0, 0.95)),
            min_abs=0.5, max_abs=5.0,
        )
        self.out_proj = ScaledLinear(hidden_channels, channels, initial_scale=0.05)
        self.whiten1 = Whiten(
            num_groups=1, whitening_limit=whitening_schedule(5.0), prob=0.1, grad_scale=0.01
        )
        self.whiten2 = Whiten(
            num_groups=1, whitening_limit=whitening_schedule(5.0, ratio=3.0), prob=0.1,
            grad_scale=0.01,
        )

    def forward(self, x: torch.Tensor, attn_weights: torch.Tensor) -> torch.Tensor:
        """x: (T, N, C), attn_weights: (1, N, T, T) -> (T, N, C)."""
        s, x, y = self.in_proj(x).chunk(3, dim=-1)
        s = torch.tanh(self.balancer(s))
        x = self.whiten1(x * s)
        x = x.permute(1, 0, 2)  # (N, T, hidden)
        x = torch.matmul(attn_weights[0], x)
        x = x.permute(1, 0, 2)  # (T, N, hidden)
        x = x * y
        return self.whiten2(self.out_proj(x))

    def streaming_forward(
        self,
        x: torch.Tensor,
        attn_weights: torch.Tensor,
        cached_x: torch.Tensor,
        left_context_len: int,
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """
        Args:
          x: (T, N, C)
          attn_weights: (1, N, T, L + T)
          cached_x: (1, N, L, hidden), the gated x ⊙ tanh(s) of the previous L frames
        Returns:
          (T, N, C) and the new cache, the last L gated frames.
        """
        s, x, y = self.in_proj(x).chunk(3, dim=-1)
        gated = (x * torch.tanh(s)).permute(1, 0, 2).unsqueeze(0)  # (1, N, T, hidden)
        gated = torch.cat((cached_x, gated), dim=2)
        x = torch.matmul(attn_weights, gated)[0].permute(1, 0, 2)  # (T, N, hidden)
        new_cache = gated[:, :, gated.shape[2] - left_context_len :]
        return self.out_proj(x * y), new_cache


class ConvolutionModule(nn.Module):
    """Gated linear unit, depthwise Conv1d over time (padded frames zeroed first), SwooshR + Linear.

    With causal=True the depthwise conv is a ChunkCausalDepthwiseConv1d, which sees nothing past
    the end of the current chunk.
    """

    def __init__(self, channels: int, kernel_size: int, causal: bool = False) -> None:
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError(f"the convolution kernel size must be odd, got {kernel_size}")
        self.in_proj = nn.Linear(channels, 2 * channels)
        self.balancer1 = Balancer(
            channels, channel_dim=-1, min_positive=ScheduledFloat((0.0, 0.05), (8000.0, 0.025)),
            max_positive=1.0, min_abs=ScheduledFloat((0.0, 0.2), (20000.0, 0.5)), max_abs=10.0,
        )
        self.causal = causal
        if causal:
            self.depthwise_conv = ChunkCausalDepthwiseConv1d(channels, kernel_size)
        else:
            self.depthwise_conv = nn.Conv1d(
                channels, channels, kernel_size, padding=kernel_size // 2, groups=channels
            )
        self.balancer2 = Balancer(
            channels, channel_dim=1, min_positive=ScheduledFloat((0.0, 0.1), (8000.0, 0.05)),
            max_positive=1.0, min_abs=ScheduledFloat((0.0, 0.2), (20000.0, 0.5)), max_abs=10.0,
        )
        self.whiten = Whiten(
            num_groups=1, whitening_limit=whitening_schedule(7.5), prob=0.1, grad_scale=0.01
        )
        self.out_proj = ActivationDropoutAndLinear(
            channels, channels, activation="SwooshR", dropout_p=0.0, initial_scale=0.05
        )

    def forward(
        self,
        x: torch.Tensor,
        src_key_padding_mask: Optional[torch.Tensor] = None,
        chunk_size: int = -1,
    ) -> torch.Tensor:
        """x: (T, N, C); src_key_padding_mask: (N, T) bool, True at padding; chunk_size: frames
        per chunk of a causal module (-1: the whole sequence) -> (T, N, C)."""
        x, gate = self.in_proj(x).chunk(2, dim=-1)
        x = x * torch.sigmoid(self.balancer1(gate))
        x = x.permute(1, 2, 0)  # (N, C, T)
        if src_key_padding_mask is not None:
            x = x.masked_fill(src_key_padding_mask.unsqueeze(1), 0.0)
        if self.causal:
            lengths = None if src_key_padding_mask is None else (~src_key_padding_mask).sum(dim=1)
            x = self.depthwise_conv(x, chunk_size=chunk_size, lengths=lengths)
        else:
            x = self._depthwise_conv_channels_last(x)
        x = self.balancer2(x)
        x = x.permute(2, 0, 1)  # (T, N, C)
        x = self.whiten(x)
        return self.out_proj(x)

    def streaming_forward(
        self, x: torch.Tensor, cache: torch.Tensor, src_key_padding_mask: torch.Tensor
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """One chunk of a causal module: x (T, N, C), cache (N, C, k//2) the depthwise conv's
        inputs before it, src_key_padding_mask (N, T) -> (T, N, C) and the new cache."""
        x, gate = self.in_proj(x).chunk(2, dim=-1)
        x = (x * torch.sigmoid(gate)).permute(1, 2, 0)  # (N, C, T)
        x = x.masked_fill(src_key_padding_mask.unsqueeze(1), 0.0)
        x, cache = self.depthwise_conv.streaming_forward(x, cache)
        return self.out_proj(x.permute(2, 0, 1)), cache

    def _depthwise_conv_channels_last(self, x: torch.Tensor) -> torch.Tensor:
        """self.depthwise_conv on x: (N, C, T) -> (N, C, T), run as a 2-D conv on channels-last
        (N, C, 1, T) input: on CPU that is mkldnn's depthwise kernel, forward and backward 2-4x
        faster than Conv1d's, with the same result."""
        conv = self.depthwise_conv
        channels, _, kernel_size = conv.weight.shape
        weight = contiguous_grad_view(conv.weight, (channels, 1, 1, kernel_size))
        x = x.unsqueeze(2).contiguous(memory_format=torch.channels_last)
        x = F.conv2d(x, weight, conv.bias, padding=(0, conv.padding[0]), groups=conv.groups)
        return x.squeeze(2)


class Zipformer2EncoderLayer(nn.Module):
    """One Zipformer block: ff1, nonlinear attention, self-attention 1, conv 1, ff2, bypass_mid,
    self-attention 2, conv 2, ff3, norm, bypass (the order of the Zipformer paper, Yao et al. 2023,
    and of icefall's Zipformer2EncoderLayer).

    Adapter insertion points: `post_sa_adapter`, `mid_adapter`, `post_conv_adapter` and `adapter`
    are None by default (no parameters, no state_dict keys). Assigning a module to one of them
    (`layer.mid_adapter = module`) registers it as a submodule, and forward then applies it as
    `src = module(src)` on (T, N, D) at its position.
    """

    def __init__(
        self,
        embed_dim: int,
        pos_dim: int,
        num_heads: int,
        query_head_dim: int,
        pos_head_dim: int,
        value_head_dim: int,
        feedforward_dim: int,
        dropout: FloatLike = 0.1,
        cnn_module_kernel: int = 31,
        attention_skip_rate: Optional[FloatLike] = None,
        conv_skip_rate: Optional[FloatLike] = None,
        const_attention_rate: Optional[FloatLike] = None,
        ff2_skip_rate: Optional[FloatLike] = None,
        ff3_skip_rate: Optional[FloatLike] = None,
        bypass_skip_rate: Optional[FloatLike] = None,
        causal: bool = False,
    ) -> None:
        super().__init__()
        self.embed_dim = embed_dim

        def schedule(value: Optional[FloatLike], *points: Tuple[float, float]) -> FloatLike:
            return ScheduledFloat(*points, default=0.0) if value is None else value

        # Unused in forward, but part of icefall's checkpoints: kept for strict loading.
        self.bypass_scale = nn.Parameter(torch.full((embed_dim,), 0.5))

        self.bypass = BypassModule(
            embed_dim, skip_rate=schedule(bypass_skip_rate, (0.0, 0.5), (4000.0, 0.02))
        )
        self.bypass_mid = BypassModule(embed_dim)

        self.attention_skip_rate = schedule(
            attention_skip_rate, (0.0, 0.2), (4000.0, 0.05), (16000.0, 0.0)
        )
        self.conv_skip_rate = schedule(conv_skip_rate, (0.0, 0.2), (4000.0, 0.05), (16000.0, 0.0))
        self.const_attention_rate = schedule(const_attention_rate, (0.0, 0.25), (4000.0, 0.025))
        self.ff2_skip_rate = schedule(ff2_skip_rate, (0.0, 0.1), (4000.0, 0.01), (50000.0, 0.0))
        self.ff3_skip_rate = schedule(ff3_skip_rate, (0.0, 0.1), (4000.0, 0.01), (50000.0, 0.0))

        self.self_attn_weights = RelPositionMultiheadAttentionWeights(
            embed_dim, pos_dim=pos_dim, num_heads=num_heads, query_head_dim=query_head_dim,
            pos_head_dim=pos_head_dim,
        )
        self.self_attn1 = SelfAttention(embed_dim, num_heads, value_head_dim)
        self.self_attn2 = SelfAttention(embed_dim, num_heads, value_head_dim)
        self.feed_forward1 = FeedforwardModule(embed_dim, (feedforward_dim * 3) // 4, dropout)
        self.feed_forward2 = FeedforwardModule(embed_dim, feedforward_dim, dropout)
        self.feed_forward3 = FeedforwardModule(embed_dim, (feedforward_dim * 5) // 4, dropout)
        self.nonlin_attention = NonlinAttention(embed_dim, hidden_channels=3 * embed_dim // 4)
        self.conv_module1 = ConvolutionModule(embed_dim, cnn_module_kernel, causal=causal)
        self.conv_module2 = ConvolutionModule(embed_dim, cnn_module_kernel, causal=causal)
        self.norm = BiasNorm(embed_dim)

        self.balancer_na = Balancer(
            embed_dim, channel_dim=-1,
            min_positive=ScheduledFloat((0.0, 0.05), (4000.0, 0.025)), max_positive=1.0,
            min_abs=0.2, max_abs=4.0,
        )
        self.balancer_ff2 = Balancer(
            embed_dim, channel_dim=-1, min_positive=0.05, max_positive=0.95,
            min_abs=ScheduledFloat((0.0, 0.0), (4000.0, 0.1), default=0.0), max_abs=2.0,
        )
        self.balancer_ff3 = Balancer(
            embed_dim, channel_dim=-1, min_positive=0.05, max_positive=0.95,
            min_abs=ScheduledFloat((0.0, 0.0), (4000.0, 0.2), default=0.0), max_abs=4.0,
        )
        self.balancer1 = Balancer(
            embed_dim, channel_dim=-1, min_positive=0.45, max_positive=0.55, min_abs=0.2,
            max_abs=4.0,
        )
        self.balancer2 = Balancer(
            embed_dim, channel_dim=-1, min_positive=0.45, max_positive=0.55, min_abs=0.1,
            max_abs=4.0, prob=0.0125,
        )
        self.whiten = Whiten(
            num_groups=1, whitening_limit=whitening_schedule(4.0, ratio=3.0), prob=0.1,
            grad_scale=0.01,
        )

        # Adapter insertion points: plain instance attributes (not submodules) until a module
        # is assigned. Assignment order mid, post_sa, post_conv, adapter gives icefall's key order.
        self.post_sa_adapter: Optional[nn.Module] = None
        self.mid_adapter: Optional[nn.Module] = None
        self.post_conv_adapter: Optional[nn.Module] = None
        self.adapter: Optional[nn.Module] = None

    def forward(
        self,
        src: torch.Tensor,
        pos_emb: torch.Tensor,
        src_key_padding_mask: Optional[torch.Tensor] = None,
        chunk_size: int = -1,
        attn_mask: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        """
        Args:
          src: (T, N, D)
          pos_emb: (1, 2T - 1, pos_dim)
          src_key_padding_mask: (N, T) bool, True at padding, or None
          chunk_size: frames per chunk of the causal convolutions (-1: no chunking)
          attn_mask: (T, T) bool chunk mask, True where a query must not see a key, or None
        Returns:
          (T, N, D)
        """
        src_orig = src
        active = regularisers_active(self)

        attn_weights = self.self_attn_weights(
            src, pos_emb, key_padding_mask=src_key_padding_mask, attn_mask=attn_mask
        )
        src = src + self.feed_forward1(src)

        attention_mask = sequence_dropout_mask(
            src, float(self.attention_skip_rate) if active else 0.0
        )
        head0_weights = attn_weights[0:1]
        if active and random.random() < float(self.const_attention_rate):
            # Uniform attention over the unmasked keys, so nonlin_attention learns to work with it.
            head0_weights = (head0_weights > 0.0).to(head0_weights.dtype)
            head0_weights = head0_weights / head0_weights.sum(dim=-1, keepdim=True)
        src = src + self._maybe_drop(
            self.balancer_na(self.nonlin_attention(src, head0_weights)), attention_mask
        )
        src = src + self._maybe_drop(self.self_attn1(src, attn_weights), attention_mask)
        if self.post_sa_adapter is not None:
            src = self.post_sa_adapter(src)

        conv_mask = sequence_dropout_mask(src, float(self.conv_skip_rate) if active else 0.0)
        src = src + self._maybe_drop(
            self.conv_module1(src, src_key_padding_mask, chunk_size), conv_mask
        )
        ff2_mask = sequence_dropout_mask(src, float(self.ff2_skip_rate) if active else 0.0)
        src = src + self._maybe_drop(self.balancer_ff2(self.feed_forward2(src)), ff2_mask)

        src = self.bypass_mid(src_orig, src)
        if self.mid_adapter is not None:
            src = self.mid_adapter(src)

        src = src + self._maybe_drop(self.self_attn2(src, attn_weights), attention_mask)
        conv_mask = sequence_dropout_mask(src, float(self.conv_skip_rate) if active else 0.0)
        src = src + self._maybe_drop(
            self.conv_module2(src, src_key_padding_mask, chunk_size), conv_mask
        )
        if self.post_conv_adapter is not None:
            src = self.post_conv_adapter(src)

        ff3_mask = sequence_dropout_mask(src, float(self.ff3_skip_rate) if active else 0.0)
        src = src + self._maybe_drop(self.balancer_ff3(self.feed_forward3(src)), ff3_mask)

        src = self.norm(self.balancer1(src))
        src = self.bypass(src_orig, src)
        src = self.whiten(self.balancer2(src))
        if self.adapter is not None:
            src = self.adapter(src)
        return src

    def streaming_forward(
        self,
        src: torch.Tensor,
        pos_emb: torch.Tensor,
        cached_key: torch.Tensor,
        cached_nonlin_attn: torch.Tensor,
        cached_val1: torch.Tensor,
        cached_val2: torch.Tensor,
        cached_conv1: torch.Tensor,
        cached_conv2: torch.Tensor,
        left_context_len: int,
        src_key_padding_mask: torch.Tensor,
    ) -> Tuple[torch.Tensor, ...]:
        """One chunk of a causal layer, in eval (the regularisers are the identity there).

        Args:
          src: (T, N, D), the chunk.
          pos_emb: (1, L + 2T - 1, pos_dim), L = left_context_len.
          cached_*: the six caches of the previous chunks, shapes as in Zipformer2.get_init_states.
          src_key_padding_mask: (N, L + T) bool, True at empty cache slots and padded frames.
        Returns:
          (T, N, D) and the six updated caches, in the same order.
        """
        src_orig = src
        chunk_mask = src_key_padding_mask[:, left_context_len:]
        attn_weights, cached_key = self.self_attn_weights.streaming_forward(
            src, pos_emb, cached_key, left_context_len, src_key_padding_mask
        )
        src = src + self.feed_forward1(src)
        na, cached_nonlin_attn = self.nonlin_attention.streaming_forward(
            src, attn_weights[0:1], cached_nonlin_attn, left_context_len
        )
        src = src + na
        attended, cached_val1 = self.self_attn1.streaming_forward(
            src, attn_weights, cached_val1, left_context_len
        )
        src = src + attended
        if self.post_sa_adapter is not None:
            src = self.post_sa_adapter(src)

        conv, cached_conv1 = self.conv_module1.streaming_forward(src, cached_conv1, chunk_mask)
        src = src + conv
        src = src + self.feed_forward2(src)

        src = self.bypass_mid(src_orig, src)
        if self.mid_adapter is not None:
            src = self.mid_adapter(src)

        attended, cached_val2 = self.self_attn2.streaming_forward(
            src, attn_weights, cached_val2, left_context_len
        )
        src = src + attended
        conv, cached_conv2 = self.conv_module2.streaming_forward(src, cached_conv2, chunk_mask)
        src = src + conv
        if self.post_conv_adapter is not None:
            src = self.post_conv_adapter(src)

        src = src + self.feed_forward3(src)
        src = self.bypass(src_orig, self.norm(src))
        if self.adapter is not None:
            src = self.adapter(src)
        return (
            src, cached_key, cached_nonlin_attn, cached_val1, cached_val2, cached_conv1,
            cached_conv2,
        )

    @staticmethod
    def _maybe_drop(x: torch.Tensor, mask: Optional[torch.Tensor]) -> torch.Tensor:
        return x if mask is None else x * mask


class Zipformer2Encoder(nn.Module):
    """A stack of `num_layers` copies of one layer, sharing one relative positional encoding.

    Each layer's `bypass.skip_rate` is replaced by a layer-drop warm-up that ramps from
    `initial_layerdrop_rate` to `final_layerdrop_rate`, layer j over its own slice of
    [warmup_begin, warmup_end]. In training, `feature_mask` multiplies the input and every
    layer's output.
    """

    def __init__(
        self,
        encoder_layer: Zipformer2EncoderLayer,
        num_layers: int,
        pos_dim: int,
        warmup_begin: float,
        warmup_end: float,
        initial_layerdrop_rate: float = 0.5,
        final_layerdrop_rate: float = 0.05,
    ) -> None:
        super().__init__()
        self.encoder_pos = CompactRelPositionalEncoding(pos_dim, dropout_rate=0.15)
        self.layers = nn.ModuleList([copy.deepcopy(encoder_layer) for _ in range(num_layers)])
        self.num_layers = num_layers
        step = (warmup_end - warmup_begin) / num_layers
        for j, layer in enumerate(self.layers):
            begin = warmup_begin + j * step
            layer.bypass.skip_rate = ScheduledFloat(
                (begin, initial_layerdrop_rate), (begin + step, final_layerdrop_rate), default=0.0
            )

    def forward(
        self,
        src: torch.Tensor,
        feature_mask: Union[torch.Tensor, float] = 1.0,
        src_key_padding_mask: Optional[torch.Tensor] = None,
        chunk_size: int = -1,
        attn_mask: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        """src: (T, N, D); feature_mask: (1, N, D) or 1.0; mask: (N, T) or None; chunk_size and
        attn_mask (T, T) of a causal model (see Zipformer2EncoderLayer) -> (T, N, D)."""
        pos_emb = self.encoder_pos(src)
        output = src * feature_mask
        for layer in self.layers:
            output = layer(
                output, pos_emb, src_key_padding_mask=src_key_padding_mask,
                chunk_size=chunk_size, attn_mask=attn_mask,
            )
            output = output * feature_mask
        return output

    def streaming_forward(
        self,
        src: torch.Tensor,
        states: List[torch.Tensor],
        left_context_len: int,
        src_key_padding_mask: torch.Tensor,
    ) -> Tuple[torch.Tensor, List[torch.Tensor]]:
        """One chunk: src (T, N, D), states the 6 caches of each layer in turn, mask (N, L + T)
        -> (T, N, D) and the updated states in the same order."""
        pos_emb = self.encoder_pos(src, left_context_len)
        new_states: List[torch.Tensor] = []
        for i, layer in enumerate(self.layers):
            src, *layer_states = layer.streaming_forward(
                src, pos_emb, *states[6 * i : 6 * i + 6], left_context_len=left_context_len,
                src_key_padding_mask=src_key_padding_mask,
            )
            new_states.extend(layer_states)
        return src, new_states


def repeat_last_valid_frame(src: torch.Tensor, src_lens: torch.Tensor) -> torch.Tensor:
    """src: (T, N, C), src_lens: (N,) -> (T, N, C) with every frame t >= src_lens[n] of sequence n
    replaced by its last valid frame (frame max(src_lens[n] - 1, 0))."""
    num_frames, _, channels = src.shape
    frames = torch.arange(num_frames, device=src.device).unsqueeze(1)
    last_valid = (src_lens.to(torch.int64) - 1).clamp(min=0).unsqueeze(0)
    index = torch.minimum(frames, last_valid)  # (T, N)
    return torch.gather(src, 0, index.unsqueeze(-1).expand(-1, -1, channels))


class SimpleDownsample(nn.Module):
    """Downsample time by `downsample`: right-pad by repeating the last frame to a multiple of it,
    then take the weighted sum of each group with weights softmax(bias).

    Given the valid lengths, each sequence is first padded past its own end with its own last
    valid frame, so in a padded batch it is downsampled as it would be alone (icefall repeats
    the batch's last frame, i.e. padding, instead).
    """

    def __init__(self, channels: int, downsample: int) -> None:
        super().__init__()
        self.downsample = downsample
        self.bias = nn.Parameter(torch.zeros(downsample))

    def forward(self, src: torch.Tensor, src_lens: Optional[torch.Tensor] = None) -> torch.Tensor:
        """src: (T, N, C); src_lens: (N,) valid frames, or None (no padding) -> (ceil(T / ds), N, C)."""
        if src_lens is not None:
            src = repeat_last_valid_frame(src, src_lens)
        num_frames, batch_size, channels = src.shape
        ds = self.downsample
        out_frames = (num_frames + ds - 1) // ds
        pad = out_frames * ds - num_frames
        src = torch.cat((src, src[-1:].expand(pad, batch_size, channels)), dim=0)
        src = src.reshape(out_frames, ds, batch_size, channels)
        weights = self.bias.softmax(dim=0).reshape(1, ds, 1, 1)
        return (src * weights).sum(dim=1)


class SimpleUpsample(nn.Module):
    """Repeat every frame `upsample` times: (T, N, C) -> (T·upsample, N, C)."""

    def __init__(self, upsample: int) -> None:
        super().__init__()
        self.upsample = upsample

    def forward(self, src: torch.Tensor) -> torch.Tensor:
        num_frames, batch_size, channels = src.shape
        src = src.unsqueeze(1).expand(num_frames, self.upsample, batch_size, channels)
        return src.reshape(num_frames * self.upsample, batch_size, channels)


class DownsampledZipformer2Encoder(nn.Module):
    """Runs a Zipformer2Encoder at 1/ds of the input frame rate: downsample, encode, upsample
    (truncated to the input length), then a learned bypass with the input.

    It takes the padding mask at its input rate: the valid lengths it gives make the downsampling
    independent of the padding, and the inner encoder gets the mask subsampled by [..., ::ds].
    """

    def __init__(self, encoder: Zipformer2Encoder, dim: int, downsample: int) -> None:
        super().__init__()
        self.downsample_factor = downsample
        self.downsample = SimpleDownsample(dim, downsample)
        self.num_layers = encoder.num_layers
        self.encoder = encoder
        self.upsample = SimpleUpsample(downsample)
        self.out_combiner = BypassModule(dim)

    def forward(
        self,
        src: torch.Tensor,
        feature_mask: Union[torch.Tensor, float] = 1.0,
        src_key_padding_mask: Optional[torch.Tensor] = None,
        chunk_size: int = -1,
        attn_mask: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        """src: (T, N, D); src_key_padding_mask: (N, T) bool, True at padding, or None;
        chunk_size and the (T, T) attn_mask at the input rate (subsampled here) -> (T, N, D)."""
        src_orig = src
        ds = self.downsample_factor
        if src_key_padding_mask is None:
            src = self.downsample(src)
        else:
            src = self.downsample(src, src_lens=(~src_key_padding_mask).sum(dim=1))
            src_key_padding_mask = src_key_padding_mask[..., ::ds]
        if attn_mask is not None:
            attn_mask = attn_mask[::ds, ::ds]
        src = self.encoder(
            src, feature_mask=feature_mask, src_key_padding_mask=src_key_padding_mask,
            chunk_size=chunk_size // ds, attn_mask=attn_mask,  # -1 // ds == -1
        )
        src = self.upsample(src)[: src_orig.shape[0]]
        return self.out_combiner(src_orig, src)

    def streaming_forward(
        self,
        src: torch.Tensor,
        states: List[torch.Tensor],
        left_context_len: int,
        src_key_padding_mask: torch.Tensor,
    ) -> Tuple[torch.Tensor, List[torch.Tensor]]:
        """One chunk of T frames (a multiple of ds) at the input rate; left_context_len and the
        (N, L + T) mask are already at this stack's rate -> (T, N, D) and the new states."""
        src_orig = src
        src, new_states = self.encoder.streaming_forward(
            self.downsample(src), states, left_context_len, src_key_padding_mask
        )
        src = self.upsample(src)[: src_orig.shape[0]]
        return self.out_combiner(src_orig, src), new_states


def _to_tuple(value: IntOrTuple, length: int, name: str) -> Tuple[int, ...]:
    """Broadcast an int or 1-tuple to `length` entries; reject other lengths."""
    values = (value,) if isinstance(value, int) else tuple(value)
    if len(values) == 1:
        values = values * length
    if len(values) != length:
        raise ValueError(f"{name} needs 1 or {length} values (one per stack), got {len(values)}")
    return tuple(int(v) for v in values)


class Zipformer2(nn.Module):
    """The Zipformer2 encoder: stacks at frame-rate factors `downsampling_factor`, each converting
    the running tensor to its own width, and a final 2× downsampling of the full-width output.

    The per-stack arguments are an int (same for every stack) or one value per stack. The output
    has max(encoder_dim) channels, assembled from the last stack plus the extra channels of the
    most recent wider stacks.
    """

    def __init__(
        self,
        output_downsampling_factor: int = 2,
        downsampling_factor: Sequence[int] = (2, 4),
        encoder_dim: IntOrTuple = 384,
        num_encoder_layers: IntOrTuple = 4,
        encoder_unmasked_dim: IntOrTuple = 256,
        query_head_dim: IntOrTuple = 24,
        pos_head_dim: IntOrTuple = 4,
        value_head_dim: IntOrTuple = 12,
        num_heads: IntOrTuple = 8,
        feedforward_dim: IntOrTuple = 1536,
        cnn_module_kernel: IntOrTuple = 31,
        pos_dim: int = 192,
        dropout: Optional[FloatLike] = None,
        warmup_batches: float = 4000.0,
        causal: bool = False,
        chunk_size: Sequence[int] = (-1,),
        left_context_frames: Sequence[int] = (-1,),
    ) -> None:
        super().__init__()
        if not causal and (tuple(chunk_size) != (-1,) or tuple(left_context_frames) != (-1,)):
            raise ValueError("chunk_size and left_context_frames need causal=True")
        self.causal = causal
        self.chunk_size = tuple(int(c) for c in chunk_size)
        self.left_context_frames = tuple(int(c) for c in left_context_frames)
        self.downsampling_factor = tuple(int(d) for d in downsampling_factor)
        num_stacks = len(self.downsampling_factor)

        def per_stack(value: IntOrTuple, name: str) -> Tuple[int, ...]:
            return _to_tuple(value, num_stacks, name)

        self.output_downsampling_factor = output_downsampling_factor
        self.encoder_dim = encoder_dim = per_stack(encoder_dim, "encoder_dim")
        self.encoder_unmasked_dim = per_stack(encoder_unmasked_dim, "encoder_unmasked_dim")
        num_encoder_layers = per_stack(num_encoder_layers, "num_encoder_layers")
        query_head_dim = per_stack(query_head_dim, "query_head_dim")
        pos_head_dim = per_stack(pos_head_dim, "pos_head_dim")
        value_head_dim = per_stack(value_head_dim, "value_head_dim")
        num_heads = per_stack(num_heads, "num_heads")
        feedforward_dim = per_stack(feedforward_dim, "feedforward_dim")
        cnn_module_kernel = per_stack(cnn_module_kernel, "cnn_module_kernel")
        self.num_heads, self.query_head_dim = num_heads, query_head_dim
        self.value_head_dim, self.cnn_module_kernel = value_head_dim, cnn_module_kernel
        for unmasked, dim in zip(self.encoder_unmasked_dim, encoder_dim):
            if unmasked > dim:
                raise ValueError(
                    f"encoder_unmasked_dim {self.encoder_unmasked_dim} exceeds encoder_dim "
                    f"{encoder_dim} in some stack"
                )
        if dropout is None:
            dropout = ScheduledFloat((0.0, 0.3), (20000.0, 0.1))

        stacks = []
        for i in range(num_stacks):
            layer = Zipformer2EncoderLayer(
                embed_dim=encoder_dim[i],
                pos_dim=pos_dim,
                num_heads=num_heads[i],
                query_head_dim=query_head_dim[i],
                pos_head_dim=pos_head_dim[i],
                value_head_dim=value_head_dim[i],
                feedforward_dim=feedforward_dim[i],
                dropout=dropout,
                cnn_module_kernel=cnn_module_kernel[i],
                causal=causal,
            )
            # Stack i's layer drop warms up over its own slice of the warm-up period.
            stack = Zipformer2Encoder(
                layer,
                num_encoder_layers[i],
                pos_dim=pos_dim,
                warmup_begin=warmup_batches * (i + 1) / (num_stacks + 1),
                warmup_end=warmup_batches * (i + 2) / (num_stacks + 1),
                final_layerdrop_rate=0.035 * (self.downsampling_factor[i] ** 0.5),
            )
            if self.downsampling_factor[i] != 1:
                stack = DownsampledZipformer2Encoder(
                    stack, dim=encoder_dim[i], downsample=self.downsampling_factor[i]
                )
            stacks.append(stack)
        self.encoders = nn.ModuleList(stacks)
        self.downsample_output = SimpleDownsample(
            max(encoder_dim), downsample=output_downsampling_factor
        )

    def feature_masks(self, x: torch.Tensor) -> List[Union[torch.Tensor, float]]:
        """Per-stack masks (1, N, D_i), or 1.0 each outside training.

        Per sequence: with probability 0.125 zero channels [u, u + (D - u)//2); those sequences and
        another independent 0.125 also zero channels [u + (D - u)//2, D), u = encoder_unmasked_dim.
        """
        if not regularisers_active(self):
            return [1.0] * len(self.encoder_dim)
        batch_size = x.shape[1]
        drop_prob = 0.125
        keep1 = (torch.rand(1, batch_size, 1, device=x.device) > drop_prob).to(x.dtype)
        keep2 = keep1 * (torch.rand(1, batch_size, 1, device=x.device) > drop_prob).to(x.dtype)
        masks = []
        for dim, unmasked in zip(self.encoder_dim, self.encoder_unmasked_dim):
            mask = torch.ones(1, batch_size, dim, dtype=x.dtype, device=x.device)
            middle = unmasked + (dim - unmasked) // 2
            mask[:, :, unmasked:middle] *= keep1
            mask[:, :, middle:] *= keep2
            masks.append(mask)
        return masks

    def _full_dim_output(self, outputs: List[torch.Tensor]) -> torch.Tensor:
        """Last stack's output, widened with channels [cur:D] of the most recent wider stacks."""
        pieces = [outputs[-1]]
        current_dim = self.encoder_dim[-1]
        for i in range(len(self.encoder_dim) - 2, -1, -1):
            dim = self.encoder_dim[i]
            if dim > current_dim:
                pieces.append(outputs[i][..., current_dim:dim])
                current_dim = dim
        return torch.cat(pieces, dim=-1)

    def forward(
        self,
        x: torch.Tensor,
        x_lens: torch.Tensor,
        src_key_padding_mask: Optional[torch.Tensor] = None,
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """
        Args:
          x: (T, N, encoder_dim[0]) embeddings.
          x_lens: (N,) valid lengths.
          src_key_padding_mask: (N, T) bool, True at padding, or None.
        Returns:
          (ceil(T / ods), N, max(encoder_dim)) and the lengths ceil(x_lens / ods), with
          ods = output_downsampling_factor (2: (T + 1) // 2).
        """
        if x.shape[-1] != self.encoder_dim[0]:
            raise ValueError(
                f"Zipformer2 expects {self.encoder_dim[0]} input channels, got {x.shape[-1]}"
            )
        masks = self.feature_masks(x)
        chunk_size, left_context_chunks = self.chunk_config()
        attn_mask = chunk_attention_mask(x.shape[0], chunk_size, left_context_chunks, x.device)
        outputs = []
        for i, stack in enumerate(self.encoders):
            x = convert_num_channels(x, self.encoder_dim[i])
            # Every stack takes the full-rate masks; a downsampled one subsamples them by ::ds.
            x = stack(
                x, feature_mask=masks[i], src_key_padding_mask=src_key_padding_mask,
                chunk_size=chunk_size, attn_mask=attn_mask,
            )
            outputs.append(x)
        x = self._full_dim_output(outputs)
        x = self.downsample_output(x, src_lens=x_lens)
        return x, self._output_lengths(x_lens)

    def _output_lengths(self, x_lens: torch.Tensor) -> torch.Tensor:
        ds = self.output_downsampling_factor
        return torch.div(x_lens + ds - 1, ds, rounding_mode="floor")

    def chunk_config(self) -> Tuple[int, int]:
        """(chunk_size, left_context_chunks) for this forward: (-1, -1) for a non-causal model
        and while tracing (an exported full forward has full context, as icefall's), else drawn
        from self.chunk_size / self.left_context_frames (see sample_chunk_config)."""
        if not self.causal or torch.jit.is_tracing():
            return -1, -1
        return sample_chunk_config(self.chunk_size, self.left_context_frames)

    def streaming_forward(
        self,
        x: torch.Tensor,
        x_lens: torch.Tensor,
        states: List[torch.Tensor],
        src_key_padding_mask: torch.Tensor,
    ) -> Tuple[torch.Tensor, torch.Tensor, List[torch.Tensor]]:
        """One chunk of a causal model with L = left_context_frames[0] frames of left context.

        Args:
          x: (C, N, encoder_dim[0]), C a multiple of every downsampling factor and of 2.
          x_lens: (N,) valid frames of the chunk.
          states: 6 caches per layer, layers in order (see get_init_states).
          src_key_padding_mask: (N, L + C) bool, True at cache slots not filled yet and at padding.
        Returns:
          (C / 2, N, max(encoder_dim)), lengths (x_lens + 1) // 2, and the updated states.
        """
        left_context = self.left_context_frames[0]
        outputs = []
        new_states: List[torch.Tensor] = []
        first_layer = 0
        for i, stack in enumerate(self.encoders):
            ds = self.downsampling_factor[i]
            layers = slice(6 * first_layer, 6 * (first_layer + stack.num_layers))
            x, stack_states = stack.streaming_forward(
                convert_num_channels(x, self.encoder_dim[i]), states[layers],
                left_context_len=left_context // ds,
                src_key_padding_mask=src_key_padding_mask[..., ::ds],
            )
            first_layer += stack.num_layers
            outputs.append(x)
            new_states.extend(stack_states)
        x = self.downsample_output(self._full_dim_output(outputs))
        return x, self._output_lengths(x_lens), new_states

    def get_init_states(
        self, batch_size: int = 1, device: torch.device = torch.device("cpu")
    ) -> List[torch.Tensor]:
        """Zero caches for streaming_forward, 6 per layer, layers stack by stack.

        Layer of stack i with L_i = left_context_frames[0] // ds_i, H = num_heads[i] and
        D = encoder_dim[i]: cached_key (L_i, N, H·query_head_dim), cached_nonlin_attn
        (1, N, L_i, 3D/4), cached_val1 and cached_val2 (L_i, N, H·value_head_dim),
        cached_conv1 and cached_conv2 (N, D, cnn_module_kernel // 2).
        """
        if not self.causal:
            raise ValueError("streaming needs a causal model (causal=True)")
        states = []
        for i, stack in enumerate(self.encoders):
            left = self.left_context_frames[0] // self.downsampling_factor[i]
            dim, heads = self.encoder_dim[i], self.num_heads[i]
            for _ in range(stack.num_layers):
                value = torch.zeros(left, batch_size, heads * self.value_head_dim[i], device=device)
                conv = torch.zeros(batch_size, dim, self.cnn_module_kernel[i] // 2, device=device)
                states += [
                    torch.zeros(left, batch_size, heads * self.query_head_dim[i], device=device),
                    torch.zeros(1, batch_size, left, 3 * dim // 4, device=device),
                    value, value.clone(), conv, conv.clone(),
                ]
        return states
