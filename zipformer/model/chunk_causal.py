"""Chunk-causal pieces of the streaming (causal) Zipformer2: the per-batch chunk configuration,
the chunk attention mask and the chunk-causal depthwise convolution.

Frames are grouped into chunks of C frames from frame 0: frame t is in chunk t // C. A frame sees
its whole chunk and `left_context_chunks` earlier chunks and nothing later, so decoding chunk by
chunk with cached left context (streaming) computes the same function as the full forward.
"""
import random
from typing import Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

# A left context of -1 chunks means "all of the past"; the mask then allows this many chunks.
UNLIMITED_LEFT_CHUNKS = 1_000_000


def sample_chunk_config(
    chunk_sizes: Sequence[int], left_context_frames: Sequence[int]
) -> Tuple[int, int]:
    """Draw (chunk_size, left_context_chunks) for one batch, both -1 for full context.

    chunk_size is a random choice from `chunk_sizes`; unless it is -1, a left context L is drawn
    from `left_context_frames` and converted to max(L // chunk_size, 1) chunks (-1 stays -1, as
    -1 // C == -1). With a single value in each list the draw is deterministic.
    """
    chunk_size = random.choice(chunk_sizes)
    if chunk_size == -1:
        return -1, -1
    left_chunks = random.choice(left_context_frames) // chunk_size
    return chunk_size, max(left_chunks, 1) if left_chunks != -1 else -1


def chunk_attention_mask(
    num_frames: int, chunk_size: int, left_context_chunks: int, device: torch.device
) -> Optional[torch.Tensor]:
    """(T, T) bool mask, (query, key), True where masked; None when chunk_size is -1.

    With c(t) = t // chunk_size, key s is masked for query t when c(s) > c(t) (a future chunk) or
    c(s) < c(t) - left_context_chunks (-1: no limit).
    """
    if chunk_size <= 0:
        return None
    if left_context_chunks < 0:
        left_context_chunks = UNLIMITED_LEFT_CHUNKS
    chunk = torch.arange(num_frames, device=device) // chunk_size
    query_chunk = chunk.unsqueeze(1)
    return (chunk > query_chunk) | (chunk < query_chunk - left_context_chunks)


def edge_scales(edges: torch.Tensor, position: torch.Tensor, chunk_len: torch.Tensor) -> torch.Tensor:
    """1 + left + right correction for frames at `position` inside chunks of `chunk_len` frames.

    Args:
      edges: (2, C, k) chunkwise_conv_scale: row 0 corrects the first k frames of a chunk, row 1
        its last k frames (right-aligned).
      position, chunk_len: integer tensors of one shape S (position < chunk_len).
    Returns:
      (C, *S): 1 + edges[0, :, p] (p < k, else 0) + edges[1, :, k - (chunk_len - p)]
      (chunk_len - p <= k, else 0).
    """
    kernel_size = edges.shape[-1]
    zero = torch.zeros(edges.shape[1], 1, dtype=edges.dtype, device=edges.device)
    left = torch.cat((edges[0], zero), dim=1)
    right = torch.cat((edges[1], zero), dim=1)
    from_right = chunk_len - position  # 1 for a chunk's last frame
    left_index = torch.where(position < kernel_size, position, kernel_size)
    right_index = torch.where(from_right <= kernel_size, kernel_size - from_right, kernel_size)
    return 1.0 + (left[:, left_index] + right[:, right_index])


class ChunkCausalDepthwiseConv1d(nn.Module):
    """A depthwise convolution over time that never looks past the end of the current chunk.

    out = causal_conv(x) + chunkwise_conv(x within its chunk) · scale(position in chunk), where
    causal_conv (kernel (k+1)/2) sees frames t - k//2 .. t across chunk boundaries, chunkwise_conv
    (kernel k, zero padded at every chunk edge) sees only its own chunk, and the learned scale
    1 + chunkwise_conv_scale corrects the frames near a chunk's edges. Parameter names and
    initialisation are icefall's.
    """

    def __init__(self, channels: int, kernel_size: int, initial_scale: float = 1.0) -> None:
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError(f"the convolution kernel size must be odd, got {kernel_size}")
        self.kernel_size = kernel_size
        self.left_pad = kernel_size // 2
        # Registered first, as in icefall: a module's own parameters precede its children's keys.
        self.chunkwise_conv_scale = nn.Parameter(torch.zeros(2, channels, kernel_size))
        self.causal_conv = nn.Conv1d(
            channels, channels, (kernel_size + 1) // 2, groups=channels, padding=0
        )
        self.chunkwise_conv = nn.Conv1d(
            channels, channels, kernel_size, groups=channels, padding=kernel_size // 2
        )
        with torch.no_grad():
            self.causal_conv.weight.mul_(initial_scale)
            self.chunkwise_conv.weight.mul_(initial_scale)
            nn.init.uniform_(self.causal_conv.bias, -0.1 * initial_scale, 0.1 * initial_scale)

    def forward(
        self, x: torch.Tensor, chunk_size: int = -1, lengths: Optional[torch.Tensor] = None
    ) -> torch.Tensor:
        """
        Args:
          x: (N, C, T), zero at padded frames.
          chunk_size: chunk length in frames; -1 (or more than a sequence's length) makes the
            whole sequence one chunk.
          lengths: (N,) valid frames, or None (all T). A sequence's own length decides when it
            is a single chunk, so that in a padded batch it gets the output it gets alone.
        Returns:
          (N, C, T)
        """
        batch_size, channels, num_frames = x.shape
        batch_chunk = num_frames if chunk_size < 0 or chunk_size > num_frames else chunk_size
        right_pad = -num_frames % batch_chunk
        padded = F.pad(x, (self.left_pad, right_pad))
        causal = self.causal_conv(padded[..., : self.left_pad + num_frames])

        num_chunks = (num_frames + right_pad) // batch_chunk
        chunks = padded[..., self.left_pad :].reshape(batch_size, channels, num_chunks, batch_chunk)
        chunks = chunks.permute(0, 2, 1, 3).reshape(batch_size * num_chunks, channels, batch_chunk)
        chunks = self.chunkwise_conv(chunks)
        chunks = chunks.reshape(batch_size, num_chunks, channels, batch_chunk).permute(0, 2, 1, 3)
        chunks = chunks.reshape(batch_size, channels, num_chunks * batch_chunk)[..., :num_frames]
        return chunks * self._scale(num_frames, chunk_size, batch_chunk, lengths) + causal

    def _scale(
        self, num_frames: int, chunk_size: int, batch_chunk: int, lengths: Optional[torch.Tensor]
    ) -> torch.Tensor:
        """(C, T), or (N, C, T) when some sequence's own chunk length is not `batch_chunk`."""
        device = self.chunkwise_conv_scale.device
        frames = torch.arange(num_frames, device=device)
        if lengths is not None:
            # Alone, a sequence shorter than the chunk (or unchunked) is one chunk of its length.
            lengths = lengths.to(device)
            single = (lengths < chunk_size) if chunk_size > 0 else torch.ones_like(lengths, dtype=torch.bool)
            own_chunk = torch.where(single, lengths, torch.full_like(lengths, batch_chunk)).clamp(min=1)
            # A traced graph must hold the general case: its batches come with any lengths.
            if torch.jit.is_tracing() or not bool((own_chunk == batch_chunk).all()):
                own_chunk = own_chunk.unsqueeze(1)
                position = frames.unsqueeze(0) % own_chunk
                scale = edge_scales(self.chunkwise_conv_scale, position, own_chunk.expand_as(position))
                return scale.transpose(0, 1)
        chunk_len = torch.full_like(frames, batch_chunk)
        return edge_scales(self.chunkwise_conv_scale, frames % batch_chunk, chunk_len)

    def streaming_forward(
        self, x: torch.Tensor, cache: torch.Tensor
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """One chunk: x (N, C, T') is the whole chunk, cache (N, C, k//2) the inputs before it.

        Returns the output (N, C, T') and the new cache, the last k//2 frames of [cache ‖ x].
        """
        if cache.shape[-1] != self.left_pad:
            raise ValueError(f"conv cache has {cache.shape[-1]} frames, expected {self.left_pad}")
        extended = torch.cat((cache, x), dim=2)
        causal = self.causal_conv(extended)
        chunk = self.chunkwise_conv(x)
        frames = torch.arange(x.shape[2], device=x.device)
        scale = edge_scales(self.chunkwise_conv_scale, frames, torch.full_like(frames, x.shape[2]))
        return chunk * scale + causal, extended[..., -self.left_pad :]
