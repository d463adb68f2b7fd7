"""The batch counts that drive the schedules: the adjusted batch count and the loss warm-up length."""
from zipformer.core.params import AttributeDict
from zipformer.training.state import TrainingState


def get_adjusted_batch_count(params: AttributeDict, state: TrainingState) -> float:
    """Batch count for the schedules, normalised to a reference batch duration."""
    count = state.batch_idx_train * (params.max_duration * params.world_size) / params.ref_duration
    return count + state.batch_count_offset


def loss_warm_step(params: AttributeDict, state: TrainingState) -> int:
    """--warm-step for training from scratch; 0 (final loss scales) when fine-tuning."""
    return 0 if state.batch_count_offset else params.warm_step
