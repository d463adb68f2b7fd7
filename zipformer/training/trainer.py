"""The training loop of one process: epochs, validation, Ctrl-C, non-finite losses, checkpoints.

zipformer.training.setup builds the Trainer (flags, resume, fine-tune start, model, optimizer,
data); a recipe customises the loop through the hooks of zipformer.training.recipe.TrainingRecipe.
The configuration (`params`: the flags plus a few constants) is frozen once a run is set up; what
changes while training lives in `zipformer.training.state.TrainingState`.
"""
import logging
import random
import signal
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Optional

import numpy as np
import sentencepiece as spm
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader

from zipformer.checkpoints.averaging import update_averaged_model
from zipformer.checkpoints.checkpoint import copy_checkpoint, remove_checkpoints, save_checkpoint
from zipformer.core.errors import UserError
from zipformer.core.params import FrozenAttributeDict
from zipformer.data.mux import MuxedCuts
from zipformer.model.frontend import FRAME_SHIFT
from zipformer.model.scaling import set_batch_count
from zipformer.training.grad_scale import adjust_grad_scale
from zipformer.training.loss import compute_loss, compute_validation_loss
from zipformer.training.memory import peak_memory_mb, release_freed_memory, reset_peak_resident, resident_memory_mb
from zipformer.training.metrics import MetricsTracker
from zipformer.training.optim import Eden, ScaledAdam
from zipformer.training.recipe import TrainingRecipe
from zipformer.training.schedule import get_adjusted_batch_count
from zipformer.training.state import TrainingState


def fix_random_seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@dataclass(eq=False)
class Trainer:
    """One process's training run: configuration, state, epochs and checkpoints."""

    recipe: TrainingRecipe
    params: FrozenAttributeDict
    state: TrainingState
    rank: int
    world_size: int
    device: torch.device
    amp_dtype: Optional[torch.dtype]  # None: float32
    tb_writer: Optional[Any]  # a tensorboard SummaryWriter (rank 0 with --tensorboard)
    sp: spm.SentencePieceProcessor
    model: nn.Module  # DDP-wrapped when world_size > 1
    model_unwrapped: nn.Module
    model_avg: Optional[nn.Module]  # rank 0: the running average of the model (float64)
    optimizer: ScaledAdam
    scheduler: Eden
    scaler: torch.amp.GradScaler
    train_dl: DataLoader
    valid_dls: Dict[str, DataLoader]
    mux: Optional[MuxedCuts]
    train_hours: float
    metadata: Dict[str, Any]  # model_config, vocabulary, train_config: saved in every checkpoint
    bad_batches_in_a_row: int = field(default=0, init=False)
    skipped_batches: int = field(default=0, init=False)
    interrupted: bool = field(default=False, init=False)
    unreadable_cuts: int = field(default=0, init=False)

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
            audio_seconds += batch["supervisions"]["num_frames"].sum().item() * FRAME_SHIFT
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

