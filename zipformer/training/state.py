"""The training loop's state, kept apart from the frozen configuration (the flags).

What changes while training (batch count, epoch, best losses, the schedules' fine-tuning offset)
lives here; the configuration (`params`) is frozen once the run is set up. The state is saved in
every checkpoint under icefall's key names (batch_idx_train, best_valid_loss, ...), flattened in at
top level, and restored from it on resume.
"""
import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Mapping

# Schedules (dropout, layer skip, ...) of a model that is being fine-tuned start at their final
# values: the pretrained model is past every warm-up. So do the loss scales (see
# zipformer.training.schedule.loss_warm_step): the warm-up that lets the simple loss find alignments before
# the pruned loss is trusted is for a model that cannot align yet. A fine-tune of a few hundred
# steps that kept it would train mostly the simple loss (weight 1.0, pruned 0.1-0.2), not the
# joiner that decodes.
FINETUNE_BATCH_COUNT_OFFSET = 1_000_000


@dataclass
class TrainingState:
    batch_idx_train: int = 0
    cur_epoch: int = 1
    # Audio this process has trained on in the current epoch; saved, so a mid-epoch resume reports
    # its progress and ETA against what is left.
    epoch_audio_done: float = 0.0
    # Batches of the current epoch trained so far and the running loss over them: a mid-epoch resume
    # continues the log's batch numbers and its tot_loss.
    epoch_batches_done: int = 0
    epoch_tot_loss: dict = field(default_factory=dict)
    best_train_loss: float = math.inf
    best_valid_loss: float = math.inf
    best_train_epoch: int = -1
    best_valid_epoch: int = -1
    train_loss: float = math.inf
    # Added to the batch count that drives the schedules: FINETUNE_BATCH_COUNT_OFFSET when fine-tuning.
    batch_count_offset: int = 0

    def to_checkpoint(self) -> dict[str, Any]:
        return asdict(self)

    def restore(self, saved: Mapping[str, Any]) -> None:
        """Take every field a checkpoint saved (older files may lack some: those keep their value).

        batch_count_offset is not restored: it follows from how this run was started.
        """
        for item in fields(self):
            if item.name in saved and item.name != "batch_count_offset":
                setattr(self, item.name, type(getattr(self, item.name))(saved[item.name]))
