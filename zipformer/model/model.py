"""The transducer: Conv2dSubsampling + Zipformer2 encoder, stateless decoder, joiner, and the
pruned RNN-T training loss (simple smoothed loss, then the pruned loss inside its ranges)."""
from typing import List, Sequence, Tuple

import torch
from torch import nn

from zipformer.loss.rnnt_loss import do_rnnt_pruning, get_rnnt_prune_ranges, rnnt_loss_pruned, rnnt_loss_smoothed
from zipformer.model.scaling import ScaledLinear
from zipformer.model.subsampling import make_pad_mask


def warmup_loss_scales(
    batch_idx_train: int, warm_step: int, simple_loss_scale: float
) -> Tuple[float, float]:
    """Weights of (simple_loss, pruned_loss) during and after the warm-up.

    During the first `warm_step` batches the simple loss weight falls linearly from 1 to
    `simple_loss_scale` and the pruned loss weight rises from 0.1 to 1; afterwards they are
    `simple_loss_scale` and 1.
    """
    if batch_idx_train >= warm_step:
        return simple_loss_scale, 1.0
    progress = batch_idx_train / warm_step
    return 1.0 - progress * (1.0 - simple_loss_scale), 0.1 + 0.9 * progress


def pad_token_ids(y: Sequence[Sequence[int]], padding_value: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """Token id lists -> (N, S) int64 padded with `padding_value` and their (N,) lengths."""
    lengths = torch.tensor([len(ids) for ids in y], dtype=torch.int64)
    max_len = max((len(ids) for ids in y), default=0)
    padded = torch.full((len(y), max_len), padding_value, dtype=torch.int64)
    for i, ids in enumerate(y):
        padded[i, : len(ids)] = torch.as_tensor(ids, dtype=torch.int64)
    return padded, lengths


class AsrModel(nn.Module):
    """Transducer ASR model with icefall's submodule names (state_dict compatible).

    `simple_am_proj` / `simple_lm_proj` project encoder/decoder outputs to the vocabulary for the
    simple (smoothed, trivial-joiner) loss that selects the pruning ranges; they are used only in
    training.
    """

    def __init__(
        self,
        encoder_embed: nn.Module,
        encoder: nn.Module,
        decoder: nn.Module,
        joiner: nn.Module,
        encoder_dim: int,
        decoder_dim: int,
        vocab_size: int,
        use_transducer: bool = True,
        use_ctc: bool = False,
    ) -> None:
        super().__init__()
        if not use_transducer:
            raise ValueError("only the transducer is implemented: use_transducer must be True")
        if use_ctc:
            raise ValueError("the CTC branch is not implemented: use use_ctc=False")
        self.encoder_embed = encoder_embed
        self.encoder = encoder
        self.decoder = decoder
        self.joiner = joiner
        self.simple_am_proj = ScaledLinear(encoder_dim, vocab_size, initial_scale=0.25)
        self.simple_lm_proj = ScaledLinear(decoder_dim, vocab_size, initial_scale=0.25)

    def forward_encoder(
        self, x: torch.Tensor, x_lens: torch.Tensor
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """
        Args:
          x: (N, T, feature_dim) fbank, T >= 9.
          x_lens: (N,) valid frames per utterance.
        Returns:
          encoder_out (N, ((T - 7) // 2 + 1) // 2, encoder_dim) and its (N,) lengths.
        """
        x, x_lens = self.encoder_embed(x, x_lens)
        src_key_padding_mask = make_pad_mask(x_lens, x.shape[1])
        x = x.permute(1, 0, 2)  # (T, N, C)
        encoder_out, encoder_out_lens = self.encoder(x, x_lens, src_key_padding_mask)
        return encoder_out.permute(1, 0, 2), encoder_out_lens

    def forward(
        self,
        x: torch.Tensor,
        x_lens: torch.Tensor,
        y: List[List[int]],
        prune_range: int = 5,
        am_scale: float = 0.0,
        lm_scale: float = 0.0,
        rnnt_backend: str = "torch",
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """
        Args:
          x: (N, T, feature_dim) fbank; x_lens: (N,) valid frames.
          y: N lists of token ids (no blank).
          prune_range: number of symbol positions kept per frame by the pruning.
          am_scale, lm_scale: weights of the acoustic-only / LM-only terms of the smoothed loss.
          rnnt_backend: the lattice recursion: "torch", or "k2" / "fast_rnnt" (zipformer.loss.rnnt_loss).
        Returns:
          (simple_loss, pruned_loss), each summed over the batch (0-dim tensors).
        """
        if x.ndim != 3 or x_lens.ndim != 1 or x.shape[0] != x_lens.shape[0]:
            raise ValueError(
                f"expected x (N, T, C) and x_lens (N,), got {tuple(x.shape)} and {tuple(x_lens.shape)}"
            )
        if len(y) != x.shape[0]:
            raise ValueError(f"got {len(y)} transcripts for a batch of {x.shape[0]} utterances")
        if not bool(torch.all(x_lens > 0)):
            raise ValueError("every utterance needs at least one frame (x_lens > 0)")

        encoder_out, encoder_out_lens = self.forward_encoder(x, x_lens)
        blank_id = self.decoder.blank_id
        device = x.device

        # Labels are padded with 0, the decoder input (blank-prefixed) with blank.
        y_padded, y_lens = pad_token_ids(y, padding_value=0)
        sos_y_padded, _ = pad_token_ids([[blank_id] + list(ids) for ids in y], padding_value=blank_id)
        y_padded, y_lens, sos_y_padded = y_padded.to(device), y_lens.to(device), sos_y_padded.to(device)
        decoder_out = self.decoder(sos_y_padded)  # (N, S + 1, decoder_dim)

        boundary = torch.zeros(x.shape[0], 4, dtype=torch.int64, device=device)
        boundary[:, 2] = y_lens
        boundary[:, 3] = encoder_out_lens

        lm = self.simple_lm_proj(decoder_out)
        am = self.simple_am_proj(encoder_out)
        with torch.autocast(device_type=device.type, enabled=False):
            simple_loss, (px_grad, py_grad) = rnnt_loss_smoothed(
                lm=lm.float(),
                am=am.float(),
                symbols=y_padded,
                termination_symbol=blank_id,
                lm_only_scale=lm_scale,
                am_only_scale=am_scale,
                boundary=boundary,
                reduction="sum",
                return_grad=True,
                backend=rnnt_backend,
            )

        ranges = get_rnnt_prune_ranges(
            px_grad=px_grad, py_grad=py_grad, boundary=boundary, s_range=prune_range
        )
        am_pruned, lm_pruned = do_rnnt_pruning(
            am=self.joiner.encoder_proj(encoder_out),
            lm=self.joiner.decoder_proj(decoder_out),
            ranges=ranges,
        )
        logits = self.joiner(am_pruned, lm_pruned, project_input=False)  # (N, T, R, V)

        with torch.autocast(device_type=device.type, enabled=False):
            pruned_loss = rnnt_loss_pruned(
                logits=logits.float(),
                symbols=y_padded,
                ranges=ranges,
                termination_symbol=blank_id,
                boundary=boundary,
                reduction="sum",
                backend=rnnt_backend,
            )
        return simple_loss, pruned_loss
