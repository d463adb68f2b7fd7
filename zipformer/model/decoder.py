"""Stateless transducer decoder: an embedding of the last `context_size` tokens and a grouped Conv1d."""
import torch
import torch.nn.functional as F
from torch import nn


class Decoder(nn.Module):
    """Prediction network with a fixed left context instead of a recurrence.

    Negative token ids (used as "no token yet" at utterance start, and by sherpa-onnx) give a zero
    embedding.
    """

    def __init__(self, vocab_size: int, decoder_dim: int, blank_id: int, context_size: int) -> None:
        super().__init__()
        if context_size < 1:
            raise ValueError(f"context_size must be >= 1, got {context_size}")
        self.vocab_size = vocab_size
        self.decoder_dim = decoder_dim
        self.blank_id = blank_id
        self.context_size = context_size
        self.embedding = nn.Embedding(vocab_size, decoder_dim)
        if context_size > 1:
            # groups = decoder_dim // 4, no bias: the layout of icefall's checkpoints.
            self.conv = nn.Conv1d(
                decoder_dim,
                decoder_dim,
                kernel_size=context_size,
                padding=0,
                groups=decoder_dim // 4,
                bias=False,
            )

    def forward(self, y: torch.Tensor, need_pad: bool = True) -> torch.Tensor:
        """
        Args:
          y: (N, U) token ids; negative ids mean "no token".
          need_pad: True in training (left-pad by context_size - 1 so that output u sees tokens
            up to u); False in decoding, where y holds exactly `context_size` ids per row.
        Returns:
          (N, U, decoder_dim) in training, (N, 1, decoder_dim) in decoding.
        """
        y = y.to(torch.int64)
        valid = (y >= 0).unsqueeze(-1)
        embedding = self.embedding(y.clamp(min=0)) * valid
        if self.context_size > 1:
            embedding = embedding.permute(0, 2, 1)
            if need_pad:
                embedding = F.pad(embedding, pad=(self.context_size - 1, 0))
            else:
                assert embedding.size(-1) == self.context_size, (embedding.shape, self.context_size)
            embedding = self.conv(embedding).permute(0, 2, 1)
        return F.relu(embedding)
