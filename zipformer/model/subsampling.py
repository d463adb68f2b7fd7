"""Conv2dSubsampling: the convolutional front end that turns 100 Hz fbank into 50 Hz embeddings."""
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from zipformer.model.scaling import (
    Balancer,
    BiasNorm,
    Dropout3,
    FloatLike,
    ScaleGrad,
    ScheduledFloat,
    SwooshL,
    SwooshR,
    Whiten,
    contiguous_grad_view,
    regularisers_active,
    scale_initial_params,
    whitening_schedule,
)

# The smallest input that leaves one frame after the (T - 7) // 2 of the convolutions.
MIN_INPUT_FRAMES = 9


def make_pad_mask(lengths: torch.Tensor, max_len: int) -> torch.Tensor:
    """(N,) lengths -> (N, max_len) bool mask, True at padded positions (t >= length)."""
    frames = torch.arange(max_len, device=lengths.device).unsqueeze(0)
    return frames >= lengths.unsqueeze(1)


def conv1x1_as_linear(x: torch.Tensor, conv: nn.Conv2d) -> torch.Tensor:
    """Apply a 1×1 nn.Conv2d to channels-last input: (..., C_in) -> (..., C_out), one matmul.

    On CPU a 1×1 convolution runs through a slow generic kernel; over channels it is just a
    matmul with the (C_out, C_in, 1, 1) weight viewed as (C_out, C_in).
    """
    weight = conv.weight
    return F.linear(x, weight.view(weight.shape[0], weight.shape[1]), conv.bias)


class ConvNeXt(nn.Module):
    """Residual ConvNeXt block on (N, C, T, F): depthwise k×k conv, 1×1 up-projection, SwooshL,
    1×1 down-projection, added to the input. In training the whole branch is dropped for a random
    `layerdrop_rate` fraction of the sequences.

    Given the valid lengths, frames past each sequence's end are zeroed before the depthwise conv,
    so in a padded batch its kernel sees the same zeros as the conv's own padding does for an
    unpadded sequence (icefall lets the padding leak in here).
    """

    def __init__(
        self,
        channels: int,
        hidden_ratio: int = 3,
        kernel_size: Tuple[int, int] = (7, 7),
        layerdrop_rate: Optional[FloatLike] = None,
    ) -> None:
        super().__init__()
        hidden_channels = channels * hidden_ratio
        padding = (kernel_size[0] // 2, kernel_size[1] // 2)
        self.layerdrop_rate = (
            ScheduledFloat((0.0, 0.2), (20000.0, 0.015)) if layerdrop_rate is None else layerdrop_rate
        )
        self.depthwise_conv = nn.Conv2d(
            channels, channels, kernel_size, groups=channels, padding=padding
        )
        self.pointwise_conv1 = nn.Conv2d(channels, hidden_channels, kernel_size=1)
        self.hidden_balancer = Balancer(
            hidden_channels, channel_dim=-1, min_positive=0.3, max_positive=1.0, min_abs=0.75,
            max_abs=5.0,
        )
        self.activation = SwooshL()
        self.pointwise_conv2 = scale_initial_params(
            nn.Conv2d(hidden_channels, channels, kernel_size=1), 0.01
        )
        self.out_balancer = Balancer(
            channels, channel_dim=1, min_positive=0.4, max_positive=0.6, min_abs=1.0, max_abs=6.0
        )
        self.out_whiten = Whiten(
            num_groups=1, whitening_limit=5.0, prob=0.1, grad_scale=0.01, channel_dim=1
        )

    def forward(self, x: torch.Tensor, x_lens: Optional[torch.Tensor] = None) -> torch.Tensor:
        """x: (N, C, T, F); x_lens: (N,) valid frames along T, or None (no padding) -> (N, C, T, F)."""
        bypass = x
        if x_lens is not None:
            padding = make_pad_mask(x_lens, x.shape[2])
            x = x.masked_fill(padding.unsqueeze(1).unsqueeze(-1), 0.0)
        # In channels-last layout the depthwise conv runs through mkldnn (its backward several
        # times faster), and its output viewed as (N, T, F, C) is contiguous for the 1×1 convs.
        conv = self.depthwise_conv
        x = F.conv2d(
            x.contiguous(memory_format=torch.channels_last),
            contiguous_grad_view(conv.weight, conv.weight.shape),
            conv.bias,
            padding=conv.padding,
            groups=conv.groups,
        )
        if torch.jit.is_tracing():
            # Export keeps the Conv2d ops, which the int8 quantizer leaves in float as before.
            x = self.pointwise_conv2(self.activation(self.pointwise_conv1(x)))
        else:
            x = x.permute(0, 2, 3, 1)  # (N, T, F, C)
            x = conv1x1_as_linear(x, self.pointwise_conv1)
            x = self.hidden_balancer(x)
            x = self.activation(x)
            x = conv1x1_as_linear(x, self.pointwise_conv2)
            x = x.permute(0, 3, 1, 2)  # (N, C, T, F)
        if regularisers_active(self):
            layerdrop_rate = float(self.layerdrop_rate)
            if layerdrop_rate > 0.0:
                keep = torch.rand(x.shape[0], 1, 1, 1, device=x.device) >= layerdrop_rate
                x = x * keep.to(x.dtype)
        x = bypass + x
        x = self.out_balancer(x)
        return self.out_whiten(x)

    def streaming_forward(
        self, x: torch.Tensor, cached_left_pad: torch.Tensor
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """One chunk (eval): x (N, C, T + P, F) is T frames plus P = kernel // 2 frames of
        look-ahead; cached_left_pad (N, C, P, F) the P frames before them.

        Returns (N, C, T, F), the depthwise conv run without time padding over
        [cache ‖ x], and the new cache: the last P of the T frames (the look-ahead frames are
        recomputed with the next chunk).
        """
        pad = self.depthwise_conv.padding[0]
        num_frames = x.shape[2] - pad
        bypass = x[:, :, :num_frames]
        x = torch.cat((cached_left_pad, x), dim=2)
        new_cache = x[:, :, num_frames : num_frames + pad]
        conv = self.depthwise_conv
        x = F.conv2d(x, conv.weight, conv.bias, padding=(0, conv.padding[1]), groups=conv.groups)
        x = x.permute(0, 2, 3, 1)  # (N, T, F, C)
        x = conv1x1_as_linear(self.activation(conv1x1_as_linear(x, self.pointwise_conv1)), self.pointwise_conv2)
        return bypass + x.permute(0, 3, 1, 2), new_cache


class Conv2dSubsampling(nn.Module):
    """(N, T, in_channels) fbank -> (N, (T - 7) // 2, out_channels) embeddings.

    conv: Conv2d 1→8 (k3, freq padding 1) · ScaleGrad · Balancer · SwooshR ·
          Conv2d 8→32 (k3, stride 2) · Balancer · SwooshR ·
          Conv2d 32→128 (k3, stride (1, 2)) · Balancer · SwooshR
    then a ConvNeXt block, flattening (channel, freq) as c·F' + f, a Linear to out_channels,
    BiasNorm, and (training only) dropout shared over time. The parameter-free modules keep
    the Sequential indices 0/4/7 of the checkpoints' conv weights.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        layer1_channels: int = 8,
        layer2_channels: int = 32,
        layer3_channels: int = 128,
        dropout: FloatLike = 0.1,
    ) -> None:
        super().__init__()
        if in_channels < 7:
            raise ValueError(f"Conv2dSubsampling needs at least 7 input features, got {in_channels}")
        self.conv = nn.Sequential(
            nn.Conv2d(1, layer1_channels, kernel_size=3, padding=(0, 1)),
            ScaleGrad(0.2),
            Balancer(layer1_channels, channel_dim=1, max_abs=1.0),
            SwooshR(),
            nn.Conv2d(layer1_channels, layer2_channels, kernel_size=3, stride=2, padding=0),
            Balancer(layer2_channels, channel_dim=1, max_abs=4.0),
            SwooshR(),
            nn.Conv2d(layer2_channels, layer3_channels, kernel_size=3, stride=(1, 2)),
            Balancer(layer3_channels, channel_dim=1, max_abs=4.0),
            SwooshR(),
        )
        self.convnext = ConvNeXt(layer3_channels, kernel_size=(7, 7))
        # Frequency: 3x3 "same" conv, then two stride-2 convs without padding.
        self.out_width = (((in_channels - 1) // 2) - 1) // 2
        self.layer3_channels = layer3_channels
        self.out = nn.Linear(self.out_width * layer3_channels, out_channels)
        self.out_whiten = Whiten(
            num_groups=1, whitening_limit=whitening_schedule(4.0, ratio=2.0), prob=0.1,
            grad_scale=0.02,
        )
        self.out_norm = BiasNorm(out_channels)
        self.dropout = Dropout3(dropout, shared_dim=1)

    def forward(
        self, x: torch.Tensor, x_lens: torch.Tensor
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """
        Args:
          x: (N, T, in_channels) features, T >= 9.
          x_lens: (N,) number of valid frames per utterance.
        Returns:
          (N, (T - 7) // 2, out_channels) embeddings and their lengths (x_lens - 7) // 2.
        """
        if x.shape[1] < MIN_INPUT_FRAMES:
            raise ValueError(
                f"need at least {MIN_INPUT_FRAMES} feature frames, got {x.shape[1]}: "
                "drop or pad utterances this short"
            )
        # Frame t of self.conv's output depends on input frames 2t .. 2t + 8, so its first
        # (x_lens - 7) // 2 frames come from valid input only and the later ones from padding.
        x_lens = torch.div(x_lens - 7, 2, rounding_mode="floor")
        x = self.conv(x.unsqueeze(1))
        x = self.convnext(x, x_lens)
        batch_size, channels, num_frames, width = x.shape
        x = x.transpose(1, 2).reshape(batch_size, num_frames, channels * width)
        x = self.out(x)
        x = self.out_whiten(x)
        x = self.out_norm(x)
        x = self.dropout(x)
        return x, x_lens

    def streaming_forward(
        self, x: torch.Tensor, x_lens: torch.Tensor, cached_left_pad: torch.Tensor
    ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One chunk (eval): x (N, T, in_channels) is the chunk's features plus 13 frames of
        look-ahead (7 for the convolutions, 2·3 for the ConvNeXt).

        Returns (N, (T - 7) // 2 - 3, out_channels), lengths (x_lens - 7) // 2 - 3, and the new
        ConvNeXt cache (see get_init_states).
        """
        x = self.conv(x.unsqueeze(1))
        x, cached_left_pad = self.convnext.streaming_forward(x, cached_left_pad)
        batch_size, channels, num_frames, width = x.shape
        x = x.transpose(1, 2).reshape(batch_size, num_frames, channels * width)
        x = self.out_norm(self.out(x))
        look_ahead = self.convnext.depthwise_conv.padding[0]
        x_lens = torch.div(x_lens - 7, 2, rounding_mode="floor") - look_ahead
        return x, x_lens, cached_left_pad

    def get_init_states(
        self, batch_size: int = 1, device: torch.device = torch.device("cpu")
    ) -> torch.Tensor:
        """Zero ConvNeXt cache (N, layer3_channels, 3, out_width): the 3 frames before a chunk."""
        look_ahead = self.convnext.depthwise_conv.padding[0]
        return torch.zeros(batch_size, self.layer3_channels, look_ahead, self.out_width, device=device)
