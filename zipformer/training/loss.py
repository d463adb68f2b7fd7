"""The training loss of a batch (compute_loss) and over a validation set (compute_validation_loss)."""
from typing import Tuple

import sentencepiece as spm
import torch
from torch import nn

from zipformer.core.params import AttributeDict
from zipformer.model.model import warmup_loss_scales
from zipformer.training.metrics import MetricsTracker
from zipformer.training.schedule import loss_warm_step
from zipformer.training.state import TrainingState


def compute_loss(
    params: AttributeDict,
    model: nn.Module,
    sp: spm.SentencePieceProcessor,
    batch: dict,
    is_training: bool,
    state: TrainingState,
) -> Tuple[torch.Tensor, MetricsTracker]:
    """The transducer loss of one batch (summed over utterances) and its metrics.

    loss = s * simple_loss + p * pruned_loss, with (s, p) warming up over --warm-step batches
    (zipformer.model.model.warmup_loss_scales) when training from scratch.
    """
    device = next(model.parameters()).device
    feature = batch["inputs"].to(device)
    feature_lens = batch["supervisions"]["num_frames"].to(device)
    y = sp.encode(batch["supervisions"]["text"], out_type=int)

    with torch.set_grad_enabled(is_training):
        simple_loss, pruned_loss = model(
            x=feature,
            x_lens=feature_lens,
            y=y,
            prune_range=params.prune_range,
            am_scale=params.am_scale,
            lm_scale=params.lm_scale,
            rnnt_backend=params.rnnt_backend,
        )
        simple_scale, pruned_scale = warmup_loss_scales(
            state.batch_idx_train, loss_warm_step(params, state), params.simple_loss_scale
        )
        loss = simple_scale * simple_loss + pruned_scale * pruned_loss

    info = MetricsTracker()
    info["frames"] = (feature_lens // params.subsampling_factor).sum().item()
    info["loss"] = loss.detach().cpu().item()
    info["simple_loss"] = simple_loss.detach().cpu().item()
    info["pruned_loss"] = pruned_loss.detach().cpu().item()
    return loss, info


def compute_validation_loss(
    params: AttributeDict,
    model: nn.Module,
    sp: spm.SentencePieceProcessor,
    valid_dl: torch.utils.data.DataLoader,
    state: TrainingState,
) -> MetricsTracker:
    model.eval()
    tot = MetricsTracker()
    with torch.no_grad():
        for batch in valid_dl:
            _, info = compute_loss(params, model, sp, batch, is_training=False, state=state)
            tot = tot + info
    tot.reduce(next(model.parameters()).device)
    return tot
