"""The training loop shared by every recipe: flags, loss, epochs, validation, checkpoints, DDP.

A recipe customises it through the hooks of `TrainingRecipe` (how the model is built, which
parameters train, which modules run in train mode, what extra files a checkpoint writes), so a
tuner recipe reuses all of this instead of copying it.

The configuration (`params`: the flags plus a few constants) is frozen once a run is set up; what
changes while training lives in `zipformer.training.state.TrainingState`.
"""
import argparse
import copy
import logging
import os
import random
import resource
import signal
import time
import uuid
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Mapping, Optional, Tuple

import numpy as np
import sentencepiece as spm
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP

from zipformer.checkpoints.averaging import update_averaged_model
from zipformer.checkpoints.checkpoint import (
    copy_checkpoint,
    load_checkpoint,
    read_checkpoint_metadata,
    read_model_file,
    remove_checkpoints,
    save_checkpoint,
    to_plain,
)
from zipformer.checkpoints.config import apply_model_config, flags_given, model_config
from zipformer.checkpoints.vocabulary import bpe_vocabulary, check_vocabulary, load_bpe_model
from zipformer.core.errors import UserError, exit_on_user_error, fail
from zipformer.core.exp_dir import claim_exp_dir
from zipformer.core.flag_types import int_at_least, positive_float, str2bool
from zipformer.core.logs import setup_logger
from zipformer.core.params import AttributeDict, FrozenAttributeDict
from zipformer.data.asr_datamodule import AsrDataModule
from zipformer.data.mux import MuxedCuts
from zipformer.loss.rnnt_loss import BACKENDS
from zipformer.model.builder import check_causal, count_parameters, is_causal_state_dict
from zipformer.model.flags import add_context_size_argument, add_model_arguments
from zipformer.model.model import warmup_loss_scales
from zipformer.model.recipe import ModelRecipe
from zipformer.model.scaling import set_batch_count
from zipformer.training.grad_scale import adjust_grad_scale, create_grad_scaler
from zipformer.training.memory import peak_resident_mb, release_freed_memory, reset_peak_resident, resident_memory_mb
from zipformer.training.metrics import MetricsTracker
from zipformer.training.optim import Eden, ScaledAdam, get_parameter_groups_with_lrs
from zipformer.training.state import FINETUNE_BATCH_COUNT_OFFSET, TrainingState

STOPPED_WITHOUT_SAVING = "interrupted: stopped without saving; resume from the newest checkpoint-N.pt or epoch-N.pt"


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


def add_training_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("Training options")
    group.add_argument("--world-size", type=int_at_least(1), default=1, help="Number of processes (GPUs) for DDP.")
    group.add_argument("--master-port", type=int, default=12354, help="Master port for DDP.")
    group.add_argument("--tensorboard", type=str2bool, default=True, help="Write tensorboard logs.")
    group.add_argument("--num-epochs", type=int_at_least(1), default=30)
    group.add_argument(
        "--start-epoch",
        type=int_at_least(1),
        default=1,
        help="Resume from epoch-{start_epoch-1}.pt when > 1.",
    )
    group.add_argument(
        "--start-batch",
        type=int_at_least(0),
        default=0,
        help="Resume from checkpoint-{start_batch}.pt (and its sampler state) when > 0.",
    )
    group.add_argument("--exp-dir", type=Path, default=Path("zipformer/exp"))
    group.add_argument("--bpe-model", type=str, default="data/lang_bpe_500/bpe.model")
    group.add_argument("--base-lr", type=positive_float, default=0.045)
    group.add_argument("--lr-batches", type=positive_float, default=7500)
    group.add_argument("--lr-epochs", type=positive_float, default=3.5)
    group.add_argument(
        "--ref-duration",
        type=positive_float,
        default=600,
        help="Reference batch duration (s) for the batch count that drives the schedules.",
    )
    add_context_size_argument(group)
    group.add_argument("--prune-range", type=int_at_least(1), default=5, help="s_range of the pruned RNN-T loss.")
    group.add_argument("--lm-scale", type=float, default=0.25, help="lm_only_scale of the smoothed simple loss.")
    group.add_argument("--am-scale", type=float, default=0.0, help="am_only_scale of the smoothed simple loss.")
    group.add_argument("--simple-loss-scale", type=float, default=0.5, help="Simple-loss weight after warm-up.")
    group.add_argument(
        "--rnnt-backend",
        choices=BACKENDS,
        default="torch",
        help="The loss's lattice recursion: this recipe's pure PyTorch one, or k2's / fast_rnnt's (installed by you).",
    )
    group.add_argument("--seed", type=int, default=42)
    group.add_argument("--inf-check", type=str2bool, default=False, help="Check every module output for inf/nan.")
    group.add_argument("--save-every-n", type=int_at_least(0), default=4000, help="Write checkpoint-N.pt every N batches (0: never).")
    group.add_argument("--keep-last-k", type=int_at_least(1), default=30, help="Keep only the newest k checkpoint-N.pt files.")
    group.add_argument(
        "--average-period",
        type=int_at_least(1),
        default=200,
        help="Update the averaged model (model_avg) every this many batches.",
    )
    group.add_argument("--use-fp16", type=str2bool, default=False, help="Mixed precision (fp16, CUDA only).")
    group.add_argument("--use-bf16", type=str2bool, default=False, help="Mixed precision (bf16, CUDA only).")
    group.add_argument(
        "--num-threads",
        type=int_at_least(0),
        default=0,
        help="CPU threads per process (0: PyTorch's default). On a busy machine 1 avoids oversubscription.",
    )
    group.add_argument("--log-interval", type=int_at_least(1), default=50, help="Log the loss every N batches.")
    group.add_argument("--valid-interval", type=int_at_least(1), default=3000, help="Validate every N batches of an epoch.")
    group.add_argument(
        "--warm-step",
        type=int_at_least(0),
        default=2000,
        help="Batches of simple/pruned loss warm-up when training from scratch (a fine-tune starts at the final scales).",
    )
    group.add_argument(
        "--max-bad-batches",
        type=int_at_least(1),
        default=20,
        help="Stop after this many batches in a row with a non-finite loss.",
    )
    group.add_argument(
        "--finetune-ckpt",
        type=str,
        default=None,
        help="Start from the weights of this checkpoint ({'model': state_dict}): fine-tuning.",
    )
    group.add_argument(
        "--init-modules",
        type=str,
        default=None,
        help="With --finetune-ckpt: comma-separated module prefixes to initialise (default: all).",
    )


def get_parser(recipe: TrainingRecipe) -> argparse.ArgumentParser:
    """The training flags; `recipe.add_arguments` adds the recipe's own."""
    parser = argparse.ArgumentParser(formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_training_arguments(parser)
    add_model_arguments(parser)
    AsrDataModule.add_arguments(parser)
    AsrDataModule.add_mux_arguments(parser)
    recipe.add_arguments(parser)
    return parser


def get_params() -> AttributeDict:
    """Constants that are not flags (icefall's names); updated with the parsed flags.

    Unlike icefall's, it holds no loop state (batch_idx_train, best losses): see TrainingState.
    """
    return AttributeDict({"reset_interval": 200, "feature_dim": 80, "subsampling_factor": 4})


def load_pretrained_weights(model: nn.Module, filename: str, init_modules: Optional[str] = None) -> None:
    """Copy a pretrained state_dict into `model`, strictly for the selected modules.

    With `init_modules` ("encoder,decoder"), only keys under those prefixes are copied, and each
    prefix must match exactly between the checkpoint and the model.
    """
    path = Path(filename)
    src = read_model_file(path, flag="--finetune-ckpt").state_dict
    check_causal(src, is_causal_state_dict(model.state_dict()), str(path))
    dst = model.state_dict()
    if init_modules:
        prefixes = [p.strip() + "." for p in init_modules.split(",") if p.strip()]
        selected = {k: v for k, v in src.items() if k.startswith(tuple(prefixes))}
        wanted = {k for k in dst if k.startswith(tuple(prefixes))}
        _check_same_keys(selected.keys(), wanted, path)
        dst.update(selected)
        model.load_state_dict(dst, strict=True)
    else:
        _check_same_keys(src.keys(), dst.keys(), path)
        model.load_state_dict(src, strict=True)
    logging.info(f"Initialised the model from {path}" + (f" (modules: {init_modules})" if init_modules else ""))


def _check_same_keys(have, want, path: Path) -> None:
    missing = sorted(set(want) - set(have))
    unexpected = sorted(set(have) - set(want))
    if missing or unexpected:
        raise UserError(
            f"{path} does not fit the model: {len(missing)} missing keys {missing[:3]}, "
            f"{len(unexpected)} unexpected keys {unexpected[:3]}; check the model-shape flags"
        )


def fix_random_seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def get_adjusted_batch_count(params: AttributeDict, state: TrainingState) -> float:
    """Batch count for the schedules, normalised to a reference batch duration."""
    count = state.batch_idx_train * (params.max_duration * params.world_size) / params.ref_duration
    return count + state.batch_count_offset


def loss_warm_step(params: AttributeDict, state: TrainingState) -> int:
    """--warm-step for training from scratch; 0 (final loss scales) when fine-tuning."""
    return 0 if state.batch_count_offset else params.warm_step


def peak_memory_mb(device: torch.device) -> float:
    """The peak of this epoch (GPU memory allocated, or resident memory); the process's peak where not measurable."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    peak = peak_resident_mb()
    return peak if peak is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


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


class Trainer:
    """One process's training run: configuration, state, epochs and checkpoints."""

    def __init__(
        self,
        recipe: TrainingRecipe,
        params: AttributeDict,
        rank: int,
        world_size: int,
        given: frozenset = frozenset(),
    ) -> None:
        """`given`: the flags typed on the command line (zipformer.checkpoints.config.flags_given)."""
        self.recipe = recipe
        self.params = params
        self.given = given
        self.state = TrainingState()
        self.rank = rank
        self.world_size = world_size
        # Under torchrun on several machines, the GPU index is the local rank, not the global one.
        local_rank = int(os.environ.get("LOCAL_RANK", rank))
        self.device = torch.device("cuda", local_rank) if torch.cuda.is_available() else torch.device("cpu")
        self.tb_writer = None
        self.bad_batches_in_a_row = 0
        self.skipped_batches = 0
        self.interrupted = False
        self.unreadable_cuts = 0
        self.mux: Optional[MuxedCuts] = None

    # ---- setup -------------------------------------------------------------------------------
    def setup(self) -> None:
        params = self.params
        if params.use_fp16 and params.use_bf16:
            raise UserError("--use-fp16 and --use-bf16 exclude each other: pass only one")
        if (params.use_fp16 or params.use_bf16) and self.device.type != "cuda":
            logging.warning(
                "--use-fp16/--use-bf16 need a CUDA GPU; this machine has none, so training runs in float32"
            )
            params.use_fp16 = params.use_bf16 = False
        self.amp_dtype = torch.float16 if params.use_fp16 else (torch.bfloat16 if params.use_bf16 else None)

        if params.tensorboard and self.rank == 0:
            from torch.utils.tensorboard import SummaryWriter

            self.tb_writer = SummaryWriter(log_dir=str(params.exp_dir / "tensorboard"))

        self.sp = load_bpe_model(params.bpe_model)
        params.blank_id = self.sp.piece_to_id("<blk>")
        params.vocab_size = self.sp.get_piece_size()
        self.vocabulary = bpe_vocabulary(self.sp)
        resume_file = self.resume_file()
        finetuning = self.recipe.is_finetuning(params)
        if resume_file is not None:
            self.take_configuration_of(resume_file)
        elif finetuning:
            missing = f"--finetune-ckpt {params.finetune_ckpt} not found: pass the pretrained model to start from"
            self.take_configuration_of(Path(params.finetune_ckpt), missing)
        logging.info(f"Device: {self.device}")
        logging.info(params)

        model = self.recipe.get_model(params)
        logging.info(f"Number of model parameters: {count_parameters(model)}")

        checkpoint = self.load_resume_checkpoint(model, resume_file) if resume_file else None
        if checkpoint is None and finetuning:
            self.recipe.init_from_pretrained(model, params)
        elif checkpoint is not None and finetuning:
            logging.info("Resuming: the weights come from the resumed checkpoint, not from --finetune-ckpt")
        self.state.batch_count_offset = FINETUNE_BATCH_COUNT_OFFSET if finetuning else 0

        self.recipe.select_trainable(model, params)
        num_trainable = count_parameters(model, trainable_only=True)
        total = count_parameters(model)
        logging.info(
            f"A total of {num_trainable} trainable parameters ({100 * num_trainable / total:.3f}% of the whole model)"
        )

        self.model_avg = None
        if self.rank == 0:
            self.model_avg = copy.deepcopy(model).to(torch.float64)
            if checkpoint is not None and "model_avg" in checkpoint:
                self.model_avg.load_state_dict(checkpoint["model_avg"], strict=True)

        if params.inf_check:
            register_inf_check_hooks(model)
        model.to(self.device)
        self.model_unwrapped = model
        if self.world_size > 1:
            logging.info("Using DDP")
            device_ids = [self.device.index] if self.device.type == "cuda" else None
            model = DDP(model, device_ids=device_ids, find_unused_parameters=True)
        self.model = model

        self.optimizer = ScaledAdam(
            get_parameter_groups_with_lrs(model, lr=params.base_lr, include_names=True),
            lr=params.base_lr,
            clipping_scale=2.0,
        )
        self.scheduler = Eden(self.optimizer, params.lr_batches, params.lr_epochs)
        self.scaler = create_grad_scaler(enabled=params.use_fp16, device_type=self.device.type)
        if checkpoint is not None:
            for key, obj in (("optimizer", self.optimizer), ("scheduler", self.scheduler), ("grad_scaler", self.scaler)):
                if checkpoint.get(key) is not None:
                    logging.info(f"Loading {key} state dict")
                    obj.load_state_dict(checkpoint[key])
        self.sampler_state = checkpoint.get("sampler") if checkpoint is not None and params.start_batch > 0 else None

        self.setup_data()
        self.metadata = {
            "model_config": model_config(params, self.recipe.config_keys),
            "vocabulary": self.vocabulary,
            "train_config": to_plain(params),
        }
        self.params = FrozenAttributeDict(params)

    def resume_file(self) -> Optional[Path]:
        params = self.params
        if params.start_batch > 0:
            return params.exp_dir / f"checkpoint-{params.start_batch}.pt"
        if params.start_epoch > 1:
            return params.exp_dir / f"epoch-{params.start_epoch - 1}.pt"
        return None

    def take_configuration_of(self, filename: Path, missing: Optional[str] = None) -> None:
        """Build the model the resumed or fine-tuned file was trained as; it must share our vocabulary."""
        metadata = read_checkpoint_metadata(filename, missing)
        apply_model_config(
            self.params,
            metadata.get("model_config"),
            self.given,
            str(filename),
            self.recipe.config_keys,
            self.recipe.off_switches,
        )
        check_vocabulary(metadata.get("vocabulary"), self.vocabulary, str(filename), f"--bpe-model {self.params.bpe_model}")

    def load_resume_checkpoint(self, model: nn.Module, filename: Path) -> dict:
        logging.info(f"Resuming from {filename}")
        saved = load_checkpoint(filename, model=model, strict=True)
        self.state.restore(saved)
        if self.params.start_batch == 0:
            # epoch-N.pt: epoch N is complete, the run goes on with --start-epoch.
            self.state.cur_epoch = self.params.start_epoch
            self.state.epoch_audio_done = 0.0
        return saved

    def setup_data(self) -> None:
        params = self.params
        self.recipe.choose_data(params)
        data = AsrDataModule(params)
        train_cuts = data.filter_cuts(data.load_train_cuts(seed=params.seed), self.sp)
        self.mux = data.mux
        self.train_hours = sum(c.duration for c in train_cuts) / 3600
        if self.train_hours == 0:
            raise UserError(f"no training cuts left in {params.train_cuts} after filtering: check the cut files")
        logging.info(f"Training data: {self.train_hours:.2f} hours")
        data.check_storage(train_cuts, "--train-cuts")
        valid_cuts = data.load_valid_cuts()
        for name, cuts in valid_cuts.items():
            data.check_storage(cuts, f"--valid-cuts {name}")
        self.train_dl = data.train_dataloaders(
            train_cuts, sampler_state_dict=self.sampler_state, world_size=self.world_size, rank=self.rank
        )
        self.valid_dls = {name: data.valid_dataloaders(cuts) for name, cuts in valid_cuts.items()}

    # ---- the loop ----------------------------------------------------------------------------
    def fit(self) -> None:
        params, state = self.params, self.state
        if state.cur_epoch > params.num_epochs:
            raise UserError(
                f"nothing to train: the run starts at epoch {state.cur_epoch}, past --num-epochs "
                f"{params.num_epochs}; raise --num-epochs to train more epochs"
            )
        signal.signal(signal.SIGINT, self.on_first_interrupt)
        for epoch in range(state.cur_epoch, params.num_epochs + 1):
            self.scheduler.step_epoch(epoch - 1)
            fix_random_seed(params.seed + epoch - 1)
            self.train_dl.sampler.set_epoch(epoch - 1)
            if self.mux is not None:
                self.mux.set_epoch(epoch - 1)
            if self.tb_writer is not None:
                self.tb_writer.add_scalar("train/epoch", epoch, state.batch_idx_train)
            state.cur_epoch = epoch
            self.train_one_epoch()
            self.save(params.exp_dir / f"epoch-{epoch}.pt")
            if self.rank == 0:
                for kind in ("train", "valid"):
                    if getattr(state, f"best_{kind}_epoch") == epoch:
                        copy_checkpoint(params.exp_dir / f"epoch-{epoch}.pt", params.exp_dir / f"best-{kind}-loss.pt")
        if self.skipped_batches:
            logging.warning(f"{self.skipped_batches} batches were skipped because of non-finite losses")
        if self.unreadable_cuts:
            logging.warning(f"{self.unreadable_cuts} cuts were skipped because their features could not be read")
        logging.info("Done!")

    def train_one_epoch(self) -> None:
        params, state, model = self.params, self.state, self.model
        self.recipe.set_train_mode(self.model_unwrapped, params)
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        reset_peak_resident()
        tot_loss = MetricsTracker()
        tot_loss.update(state.epoch_tot_loss)  # not empty only when resuming in the middle of this epoch
        epoch_start = time.time()
        audio_seconds = 0.0
        audio_before = state.epoch_audio_done
        epoch_audio = self.train_hours * 3600 / self.world_size
        for batch_idx, batch in enumerate(self.train_dl, start=state.epoch_batches_done):
            self.count_unreadable_cuts(batch)
            if batch_idx % 10 == 0:
                set_batch_count(self.model_unwrapped, get_adjusted_batch_count(params, state))
            state.batch_idx_train += 1
            batch_size = len(batch["supervisions"]["text"])
            audio_seconds += batch["supervisions"]["num_frames"].sum().item() * 0.01
            state.epoch_audio_done = audio_before + audio_seconds
            state.epoch_batches_done = batch_idx + 1

            with torch.autocast(device_type=self.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None):
                loss, loss_info = compute_loss(params, model, self.sp, batch, is_training=True, state=state)
            if not self.loss_is_finite(loss, batch):
                self.optimizer.zero_grad()
                continue
            tot_loss = tot_loss * (1 - 1 / params.reset_interval) + loss_info
            state.epoch_tot_loss = dict(tot_loss)
            self.scaler.scale(loss).backward()
            self.scheduler.step_batch(state.batch_idx_train)
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.optimizer.zero_grad()

            if self.rank == 0 and state.batch_idx_train % params.average_period == 0:
                update_averaged_model(
                    {"average_period": params.average_period, "batch_idx_train": state.batch_idx_train},
                    model_cur=self.model_unwrapped,
                    model_avg=self.model_avg,
                )
            if params.save_every_n > 0 and state.batch_idx_train % params.save_every_n == 0:
                self.save_batch_checkpoint()
            if params.use_fp16:
                adjust_grad_scale(self.scaler, state.batch_idx_train, params.exp_dir, self.rank, self.model_unwrapped)

            if batch_idx % params.log_interval == 0:
                self.log_progress(
                    batch_idx, batch_size, loss_info, tot_loss, audio_seconds, epoch_start, epoch_audio - audio_before
                )
            if batch_idx % params.valid_interval == 0:
                self.validate()
            if self.stop_requested():
                self.save_and_stop()

        state.epoch_audio_done = 0.0
        state.epoch_batches_done = 0
        state.epoch_tot_loss = {}
        if audio_seconds == 0 and audio_before == 0:
            raise UserError(
                f"epoch {state.cur_epoch} produced no batches: the training set ({epoch_audio:.0f} s per process) is "
                f"smaller than --max-duration {params.max_duration} with --drop-last 1; lower --max-duration"
            )
        state.train_loss = tot_loss["loss"] / tot_loss["frames"] if tot_loss["frames"] else float("inf")
        if state.train_loss < state.best_train_loss:
            state.best_train_epoch = state.cur_epoch
            state.best_train_loss = state.train_loss
        elapsed = time.time() - epoch_start
        release_freed_memory()
        logging.info(
            f"Epoch {state.cur_epoch} done in {elapsed:.1f} s: {audio_seconds / max(elapsed, 1e-9):.1f} s of audio/s, "
            f"peak memory {peak_memory_mb(self.device):.0f} MB, "
            f"resident after freeing {resident_memory_mb():.0f} MB"
        )

    def count_unreadable_cuts(self, batch: dict) -> None:
        """Warn about the cuts SkipUnreadableCuts left out; stop when none of the batch was left."""
        skipped = batch.get("skipped_cuts")
        if not skipped:
            return
        self.unreadable_cuts += len(skipped)
        if "inputs" not in batch:
            raise UserError(
                f"the features of every cut of a batch ({', '.join(skipped[:3])}, ...) can no longer be read: "
                "restore the feature files (re-run the ./prepare.sh stage that writes them) and resume from the "
                "last checkpoint"
            )
        logging.warning(
            f"Skipping {len(skipped)} cut(s) whose features can no longer be read: {', '.join(skipped[:3])} "
            f"({self.unreadable_cuts} so far)"
        )

    def on_first_interrupt(self, signum: int, frame: object) -> None:
        """SIGINT handler: finish this batch, save, stop. A second Ctrl-C stops at once (KeyboardInterrupt)."""
        self.interrupted = True
        signal.signal(signal.SIGINT, signal.default_int_handler)
        logging.warning("Ctrl-C: saving a checkpoint after this batch, then stopping (Ctrl-C again stops without saving)")

    def stop_requested(self) -> bool:
        """Whether a rank had a Ctrl-C. Under DDP the ranks agree on it after every batch (one
        all_reduce of a flag), so all stop after the same batch even when the signals arrive apart."""
        if self.world_size == 1:
            return self.interrupted
        flag = torch.tensor(float(self.interrupted), device=self.device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return flag.item() > 0

    def save_and_stop(self) -> None:
        """Rank 0 saves checkpoint-N.pt; every rank exits 130."""
        batch = self.state.batch_idx_train
        self.save_batch_checkpoint()
        if self.world_size > 1:
            # mp.spawn ends the other ranks as soon as one exits: none may exit before rank 0 has saved.
            dist.barrier()
        if self.rank == 0:
            logging.warning(
                f"Stopped by Ctrl-C after batch {batch}: saved {self.params.exp_dir}/checkpoint-{batch}.pt; "
                f"resume with --start-batch {batch}"
            )
        raise SystemExit(130)

    def loss_is_finite(self, loss: torch.Tensor, batch: dict) -> bool:
        """Skip batches with a non-finite loss (on every rank alike); stop after many in a row."""
        finite = torch.tensor(float(torch.isfinite(loss).item()), device=self.device)
        if self.world_size > 1:
            dist.all_reduce(finite, op=dist.ReduceOp.MIN)
        if finite.item() == 1.0:
            self.bad_batches_in_a_row = 0
            return True
        self.skipped_batches += 1
        self.bad_batches_in_a_row += 1
        cut_ids = [c.id for c in batch["supervisions"].get("cut", [])][:5]
        logging.warning(f"Non-finite loss at batch {self.state.batch_idx_train}, skipping it (cuts {cut_ids} ...)")
        if self.bad_batches_in_a_row >= self.params.max_bad_batches:
            filename = self.params.exp_dir / f"batch-{uuid.uuid4()}.pt"
            torch.save(batch, filename)
            raise RuntimeError(
                f"{self.bad_batches_in_a_row} batches in a row had a non-finite loss; the last one is saved in "
                f"{filename}. Lower --base-lr, check the data, or run with --inf-check 1 to find the module."
            )
        return False

    def log_progress(
        self,
        batch_idx: int,
        batch_size: int,
        loss_info: MetricsTracker,
        tot_loss: MetricsTracker,
        audio_seconds: float,
        epoch_start: float,
        audio_to_do: float,
    ) -> None:
        """audio_to_do: seconds of audio this run of the epoch covers (less than the epoch after a resume)."""
        params, state = self.params, self.state
        lr = max(self.scheduler.get_last_lr())
        grad_scale = self.scaler.get_scale() if params.use_fp16 else 1.0
        elapsed = time.time() - epoch_start
        rate = audio_seconds / max(elapsed, 1e-9)
        eta = max(audio_to_do - audio_seconds, 0.0) / max(rate, 1e-9)
        done = state.epoch_audio_done / max(self.train_hours * 3600 / self.world_size, 1e-9)
        logging.info(
            f"Epoch {state.cur_epoch}, batch {batch_idx}, loss[{loss_info}], tot_loss[{tot_loss}], "
            f"batch size: {batch_size}, lr: {lr:.2e}, grad_scale: {grad_scale}"
        )
        logging.info(
            f"Progress: {100 * min(done, 1):.0f}% of epoch {state.cur_epoch}, "
            f"{rate:.1f} s of audio/s, epoch ETA {eta / 60:.1f} min, peak memory {peak_memory_mb(self.device):.0f} MB"
        )
        if self.tb_writer is not None:
            self.tb_writer.add_scalar("train/learning_rate", lr, state.batch_idx_train)
            self.tb_writer.add_scalar("train/audio_seconds_per_second", rate, state.batch_idx_train)
            loss_info.write_summary(self.tb_writer, "train/current_", state.batch_idx_train)
            tot_loss.write_summary(self.tb_writer, "train/tot_", state.batch_idx_train)
            if params.use_fp16:
                self.tb_writer.add_scalar("train/grad_scale", grad_scale, state.batch_idx_train)

    def validate(self) -> None:
        params, state = self.params, self.state
        logging.info("Computing validation loss")
        for name, valid_dl in self.valid_dls.items():
            valid_info = compute_validation_loss(params, self.model, self.sp, valid_dl, state)
            logging.info(f"Epoch {state.cur_epoch}, validation on {name}: {valid_info}")
            valid_info.write_summary(self.tb_writer, f"train/{name}_valid_", state.batch_idx_train)
            loss_value = valid_info["loss"] / max(valid_info["frames"], 1)
            if loss_value < state.best_valid_loss:
                state.best_valid_epoch = state.cur_epoch
                state.best_valid_loss = loss_value
        release_freed_memory()
        self.recipe.set_train_mode(self.model_unwrapped, params)

    # ---- checkpoints -------------------------------------------------------------------------
    def save(self, filename: Path) -> None:
        if self.rank != 0:
            return
        state = {**self.state.to_checkpoint(), "average_period": self.params.average_period}
        save_checkpoint(
            filename=filename,
            model=self.model_unwrapped,
            model_avg=self.model_avg,
            state=state,
            metadata=self.metadata,
            optimizer=self.optimizer,
            scheduler=self.scheduler,
            scaler=self.scaler,
            sampler=self.train_dl.sampler,
            rank=self.rank,
        )
        self.recipe.on_checkpoint_saved(filename, {**state, **self.metadata}, self.model_unwrapped, self.model_avg)

    def save_batch_checkpoint(self) -> None:
        params = self.params
        self.save(params.exp_dir / f"checkpoint-{self.state.batch_idx_train}.pt")
        if self.rank == 0:
            for prefix in ("", *self.recipe.companion_prefixes(params)):
                remove_checkpoints(out_dir=params.exp_dir, topk=params.keep_last_k, prefix=prefix)


def run(
    rank: int, world_size: int, args: argparse.Namespace, recipe: TrainingRecipe, given: frozenset = frozenset()
) -> None:
    params = get_params()
    params.update(vars(args))
    params.exp_dir = Path(params.exp_dir)
    fix_random_seed(params.seed)
    if params.num_threads > 0:
        torch.set_num_threads(params.num_threads)
    if world_size > 1:
        init_distributed(rank, world_size, params.master_port)
    setup_logger(params.exp_dir / "log" / "log-train", rank=rank, world_size=world_size)
    logging.info("Training started")
    try:
        with exit_on_user_error():
            trainer = Trainer(recipe, params, rank, world_size, given)
            trainer.setup()
            trainer.fit()
    except KeyboardInterrupt:
        fail(STOPPED_WITHOUT_SAVING)
    finally:
        if world_size > 1 and dist.is_initialized():
            dist.destroy_process_group()


def spawn_ranks(args: argparse.Namespace, recipe: TrainingRecipe, given: frozenset) -> None:
    """--world-size N on this machine: N processes (mp.spawn), each running `run`.

    A Ctrl-C reaches every rank (they share the terminal's process group): they stop after the
    same batch, rank 0 saves, all exit 130, and so does this process, which waits for them. A
    second Ctrl-C stops everything at once.
    """

    def wait_for_ranks(signum: int, frame: object) -> None:
        signal.signal(signal.SIGINT, signal.default_int_handler)

    signal.signal(signal.SIGINT, wait_for_ranks)
    try:
        mp.spawn(run, args=(args.world_size, args, recipe, given), nprocs=args.world_size, join=True)
    except mp.ProcessExitedException as e:
        if e.exit_code != 130:
            raise
        raise SystemExit(130) from None
    except KeyboardInterrupt:
        fail(STOPPED_WITHOUT_SAVING)


def init_distributed(rank: int, world_size: int, master_port: int) -> None:
    """NCCL on GPUs, gloo on CPU. Under torchrun, the address and port come from the environment."""
    if "TORCHELASTIC_RUN_ID" not in os.environ:
        os.environ.setdefault("MASTER_ADDR", "localhost")
        os.environ["MASTER_PORT"] = str(master_port)
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    dist.init_process_group(backend, rank=rank, world_size=world_size)
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", rank)))


def main(recipe: TrainingRecipe) -> None:
    """Entry point of a train.py: parse flags, then one process, mp.spawn, or a torchrun worker.

    The process that starts the run (rank 0 under torchrun) claims --exp-dir first: it must be
    writable and not in use by another training.
    """
    parser = get_parser(recipe)
    args = parser.parse_args()
    given = flags_given(parser)
    args.exp_dir = Path(args.exp_dir)
    torchrun = "TORCHELASTIC_RUN_ID" in os.environ
    claims = not torchrun or int(os.environ["RANK"]) == 0
    with exit_on_user_error():
        AsrDataModule.check_mux_arguments(args)
    with exit_on_user_error(), claim_exp_dir(args.exp_dir) if claims else nullcontext():
        if torchrun:
            # torchrun (possibly several machines): it started this process and set rank and world size.
            world_size = int(os.environ["WORLD_SIZE"])
            args.world_size = world_size
            run(int(os.environ["RANK"]), world_size, args, recipe, given)
        elif args.world_size > 1:
            spawn_ranks(args, recipe, given)
        else:
            run(0, 1, args, recipe, given)
