"""Transducer joiner: logits = output_linear(tanh(encoder_proj(enc) + decoder_proj(dec)))."""
import torch
from torch import nn

from zipformer.model.scaling import ScaledLinear


class Joiner(nn.Module):
    def __init__(self, encoder_dim: int, decoder_dim: int, joiner_dim: int, vocab_size: int) -> None:
        super().__init__()
        self.encoder_proj = ScaledLinear(encoder_dim, joiner_dim, initial_scale=0.25)
        self.decoder_proj = ScaledLinear(decoder_dim, joiner_dim, initial_scale=0.25)
        self.output_linear = nn.Linear(joiner_dim, vocab_size)

    def forward(
        self, encoder_out: torch.Tensor, decoder_out: torch.Tensor, project_input: bool = True
    ) -> torch.Tensor:
        """
        Args:
          encoder_out, decoder_out: broadcastable tensors whose last dim is encoder_dim and
            decoder_dim, or joiner_dim for both when `project_input` is False (the inputs were
            projected once up front, as the pruned loss and the searches do).
        Returns:
          logits with last dim vocab_size.
        """
        if project_input:
            encoder_out = self.encoder_proj(encoder_out)
            decoder_out = self.decoder_proj(decoder_out)
        return self.output_linear(torch.tanh(encoder_out + decoder_out))
