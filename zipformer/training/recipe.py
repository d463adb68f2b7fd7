"""The hooks a training recipe overrides (TrainingRecipe): which parameters train, how a fine-tune starts.

The shared training (zipformer.training.main) calls them, so a tuner recipe (zipformer.tuners)
overrides a few of them instead of copying the training loop.
"""
from pathlib import Path
from typing import Any, Mapping, Optional, Tuple

from torch import nn

from zipformer.core.params import AttributeDict
from zipformer.model.recipe import ModelRecipe
from zipformer.training.pretrained_weights import load_pretrained_weights


class TrainingRecipe(ModelRecipe):
    """Hooks a recipe may override. The base recipe trains every parameter of a plain model."""

    def is_finetuning(self, params: AttributeDict) -> bool:
        return bool(params.finetune_ckpt)

    def init_from_pretrained(self, model: nn.Module, params: AttributeDict) -> None:
        """Load `--finetune-ckpt` into a model that starts a fine-tune (not a resumed one)."""
        load_pretrained_weights(model, params.finetune_ckpt, params.init_modules)

    def select_trainable(self, model: nn.Module, params: AttributeDict) -> None:
        """Set requires_grad on the parameters that train; the optimizer gets only those."""
        model.requires_grad_(True)

    def choose_data(self, params: AttributeDict) -> None:
        """Fill in cut-file flags left unset; the base recipe keeps AsrDataModule's (source domain)."""

    def set_train_mode(self, model: nn.Module, params: AttributeDict) -> None:
        """Called at the start of every epoch and after every validation."""
        model.train()

    def on_checkpoint_saved(
        self, filename: Path, info: Mapping[str, Any], model: nn.Module, model_avg: Optional[nn.Module]
    ) -> None:
        """Write companion files next to a saved checkpoint (rank 0 only).

        `info`: the checkpoint's plain entries (loop state, average_period, model_config, vocabulary).
        """

    def companion_prefixes(self, params: AttributeDict) -> Tuple[str, ...]:
        """Name prefixes of the companion files of on_checkpoint_saved ("x-" for x-checkpoint-N.pt).

        --keep-last-k prunes them with their checkpoint-N.pt.
        """
        return ()
