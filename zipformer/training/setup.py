"""Setting up one process's training run: the Trainer, built from the flags.

A run starts from scratch, resumes (--start-epoch > 1 or --start-batch > 0: the checkpoint's
weights, optimizer, scheduler, grad scaler, loop state and, mid-epoch, its sampler) or starts a
fine-tune (--finetune-ckpt). A resumed or fine-tuned file's stored model configuration builds the
model, and its vocabulary must be the BPE model's.
"""
import copy
import logging
import os
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import sentencepiece as spm
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader

from zipformer.checkpoints.checkpoint import load_checkpoint, read_checkpoint_metadata, to_plain
from zipformer.checkpoints.config import apply_model_config, model_config
from zipformer.checkpoints.vocabulary import bpe_vocabulary, check_vocabulary, load_bpe_model
from zipformer.core.errors import UserError
from zipformer.core.params import AttributeDict, FrozenAttributeDict
from zipformer.data.asr_datamodule import AsrDataModule
from zipformer.data.mux import MuxedCuts
from zipformer.model.builder import count_parameters
from zipformer.training.grad_scale import create_grad_scaler
from zipformer.training.optim import Eden, ScaledAdam, get_parameter_groups_with_lrs
from zipformer.training.recipe import TrainingRecipe
from zipformer.training.state import FINETUNE_BATCH_COUNT_OFFSET, TrainingState
from zipformer.training.trainer import Trainer


def set_up_trainer(
    recipe: TrainingRecipe,
    params: AttributeDict,
    rank: int,
    world_size: int,
    given: frozenset = frozenset(),
) -> Trainer:
    """The Trainer of this process (`params` are the flags; they are frozen in the Trainer).

    `given`: the flags typed on the command line (zipformer.checkpoints.config.flags_given).
    """
    # Under torchrun on several machines, the GPU index is the local rank, not the global one.
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    device = torch.device("cuda", local_rank) if torch.cuda.is_available() else torch.device("cpu")
    amp_dtype = _amp_dtype(params, device)

    tb_writer = None
    if params.tensorboard and rank == 0:
        from torch.utils.tensorboard import SummaryWriter

        tb_writer = SummaryWriter(log_dir=str(params.exp_dir / "tensorboard"))

    sp = load_bpe_model(params.bpe_model)
    params.blank_id = sp.piece_to_id("<blk>")
    params.vocab_size = sp.get_piece_size()
    vocabulary = bpe_vocabulary(sp)
    resume_file = _resume_file(params)
    finetuning = recipe.is_finetuning(params)
    if resume_file is not None:
        _take_configuration_of(resume_file, recipe, params, given, vocabulary)
    elif finetuning:
        missing = f"--finetune-ckpt {params.finetune_ckpt} not found: pass the pretrained model to start from"
        _take_configuration_of(Path(params.finetune_ckpt), recipe, params, given, vocabulary, missing)
    logging.info(f"Device: {device}")
    logging.info(params)

    state = TrainingState()
    model, model_avg, checkpoint = _set_up_model(recipe, params, state, rank, resume_file, finetuning)
    model.to(device)
    model_unwrapped = model
    if world_size > 1:
        logging.info("Using DDP")
        device_ids = [device.index] if device.type == "cuda" else None
        model = DDP(model, device_ids=device_ids, find_unused_parameters=True)

    optimizer = ScaledAdam(
        get_parameter_groups_with_lrs(model, lr=params.base_lr, include_names=True),
        lr=params.base_lr,
        clipping_scale=2.0,
    )
    scheduler = Eden(optimizer, params.lr_batches, params.lr_epochs)
    scaler = create_grad_scaler(enabled=params.use_fp16, device_type=device.type)
    if checkpoint is not None:
        for key, obj in (("optimizer", optimizer), ("scheduler", scheduler), ("grad_scaler", scaler)):
            if checkpoint.get(key) is not None:
                logging.info(f"Loading {key} state dict")
                obj.load_state_dict(checkpoint[key])
    sampler_state = checkpoint.get("sampler") if checkpoint is not None and params.start_batch > 0 else None

    train_dl, valid_dls, mux, train_hours = _set_up_data(recipe, params, sp, sampler_state, rank, world_size)
    metadata = {
        "model_config": model_config(params, recipe.config_keys),
        "vocabulary": vocabulary,
        "train_config": to_plain(params),
    }
    return Trainer(
        recipe=recipe,
        params=FrozenAttributeDict(params),
        state=state,
        rank=rank,
        world_size=world_size,
        device=device,
        amp_dtype=amp_dtype,
        tb_writer=tb_writer,
        sp=sp,
        model=model,
        model_unwrapped=model_unwrapped,
        model_avg=model_avg,
        optimizer=optimizer,
        scheduler=scheduler,
        scaler=scaler,
        train_dl=train_dl,
        valid_dls=valid_dls,
        mux=mux,
        train_hours=train_hours,
        metadata=metadata,
    )


def _amp_dtype(params: AttributeDict, device: torch.device) -> Optional[torch.dtype]:
    """The autocast dtype of --use-fp16/--use-bf16 (None: float32); both are switched off without a GPU."""
    if params.use_fp16 and params.use_bf16:
        raise UserError("--use-fp16 and --use-bf16 exclude each other: pass only one")
    if (params.use_fp16 or params.use_bf16) and device.type != "cuda":
        logging.warning(
            "--use-fp16/--use-bf16 need a CUDA GPU; this machine has none, so training runs in float32"
        )
        params.use_fp16 = params.use_bf16 = False
    return torch.float16 if params.use_fp16 else (torch.bfloat16 if params.use_bf16 else None)


def _resume_file(params: AttributeDict) -> Optional[Path]:
    if params.start_batch > 0:
        return params.exp_dir / f"checkpoint-{params.start_batch}.pt"
    if params.start_epoch > 1:
        return params.exp_dir / f"epoch-{params.start_epoch - 1}.pt"
    return None


def _take_configuration_of(
    filename: Path,
    recipe: TrainingRecipe,
    params: AttributeDict,
    given: frozenset,
    vocabulary: Dict[str, Any],
    missing: Optional[str] = None,
) -> None:
    """Build the model the resumed or fine-tuned file was trained as; it must share our vocabulary."""
    metadata = read_checkpoint_metadata(filename, missing)
    apply_model_config(
        params,
        metadata.get("model_config"),
        given,
        str(filename),
        recipe.config_keys,
        recipe.off_switches,
    )
    check_vocabulary(metadata.get("vocabulary"), vocabulary, str(filename), f"--bpe-model {params.bpe_model}")


def _set_up_model(
    recipe: TrainingRecipe,
    params: AttributeDict,
    state: TrainingState,
    rank: int,
    resume_file: Optional[Path],
    finetuning: bool,
) -> Tuple[nn.Module, Optional[nn.Module], Optional[dict]]:
    """(model, model_avg (rank 0 only), the resumed checkpoint's other entries or None).

    The model has the resumed weights, or the pretrained ones when a fine-tune starts, and only the
    recipe's trainable parameters require grad. Resuming restores `state`.
    """
    model = recipe.get_model(params)
    logging.info(f"Number of model parameters: {count_parameters(model)}")

    checkpoint = _load_resume_checkpoint(model, resume_file, params, state) if resume_file else None
    if checkpoint is None and finetuning:
        recipe.init_from_pretrained(model, params)
    elif checkpoint is not None and finetuning:
        logging.info("Resuming: the weights come from the resumed checkpoint, not from --finetune-ckpt")
    state.batch_count_offset = FINETUNE_BATCH_COUNT_OFFSET if finetuning else 0

    recipe.select_trainable(model, params)
    num_trainable = count_parameters(model, trainable_only=True)
    total = count_parameters(model)
    logging.info(
        f"A total of {num_trainable} trainable parameters ({100 * num_trainable / total:.3f}% of the whole model)"
    )

    model_avg = None
    if rank == 0:
        model_avg = copy.deepcopy(model).to(torch.float64)
        if checkpoint is not None and "model_avg" in checkpoint:
            model_avg.load_state_dict(checkpoint["model_avg"], strict=True)

    if params.inf_check:
        register_inf_check_hooks(model)
    return model, model_avg, checkpoint


def _load_resume_checkpoint(model: nn.Module, filename: Path, params: AttributeDict, state: TrainingState) -> dict:
    logging.info(f"Resuming from {filename}")
    saved = load_checkpoint(filename, model=model, strict=True)
    state.restore(saved)
    if params.start_batch == 0:
        # epoch-N.pt: epoch N is complete, the run goes on with --start-epoch.
        state.cur_epoch = params.start_epoch
        state.epoch_audio_done = 0.0
    return saved


def _set_up_data(
    recipe: TrainingRecipe,
    params: AttributeDict,
    sp: spm.SentencePieceProcessor,
    sampler_state: Optional[dict],
    rank: int,
    world_size: int,
) -> Tuple[DataLoader, Dict[str, DataLoader], Optional[MuxedCuts], float]:
    """(train dataloader, validation dataloaders by name, the source-cut mux if any, hours of training audio)."""
    recipe.choose_data(params)
    data = AsrDataModule(params)
    train_cuts = data.filter_cuts(data.load_train_cuts(seed=params.seed), sp)
    train_hours = sum(c.duration for c in train_cuts) / 3600
    if train_hours == 0:
        raise UserError(f"no training cuts left in {params.train_cuts} after filtering: check the cut files")
    logging.info(f"Training data: {train_hours:.2f} hours")
    data.check_storage(train_cuts, "--train-cuts")
    valid_cuts = data.load_valid_cuts()
    for name, cuts in valid_cuts.items():
        data.check_storage(cuts, f"--valid-cuts {name}")
    train_dl = data.train_dataloaders(train_cuts, sampler_state_dict=sampler_state, world_size=world_size, rank=rank)
    valid_dls = {name: data.valid_dataloaders(cuts) for name, cuts in valid_cuts.items()}
    return train_dl, valid_dls, data.mux, train_hours


def register_inf_check_hooks(model: nn.Module) -> None:
    """Log the name of the first module whose output is not finite (--inf-check)."""

    def hook(module: nn.Module, _inputs, output) -> None:
        outputs = output if isinstance(output, tuple) else (output,)
        for out in outputs:
            if torch.is_tensor(out) and out.is_floating_point() and not torch.isfinite(out).all():
                logging.warning(f"--inf-check: non-finite output of module '{module._inf_check_name}'")

    for name, module in model.named_modules():
        module._inf_check_name = name or "<model>"
        module.register_forward_hook(hook)
