"""Lhotse data pipeline for training and decoding: cut-file flags, samplers, augmentation, data loaders.

Behaves like icefall's LibriSpeechAsrDataModule, but the cut sets come from flags
(--train-cuts, --valid-cuts, --test-cuts), so any lhotse CutSet can be used without editing code.

Batches are lhotse K2SpeechRecognitionDataset dicts:
    {"inputs": (N, T, 80) float features,
     "supervisions": {"text": [str] * S, "sequence_idx": (S,), "start_frame": (S,), "num_frames": (S,),
                      "cut": [Cut] * S}}
"""
import argparse
import copy
import logging
from collections import OrderedDict
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import torch
from lhotse import CutSet, Fbank, FbankConfig
from lhotse.dataset import (
    AudioSamples,
    CutConcatenate,
    CutMix,
    K2SpeechRecognitionDataset,
    OnTheFlyFeatures,
    PrecomputedFeatures,
    SpecAugment,
)
from lhotse.dataset.sampling.base import CutSampler
from torch.utils.data import DataLoader

from zipformer.core.errors import UserError
from zipformer.core.flag_types import int_at_least, open_fraction, positive_float, str2bool
from zipformer.data.cuts import filter_cuts, load_cuts, parse_named_paths
from zipformer.data.default_cuts import DEFAULT_MUSAN_CUTS, DEFAULT_TEST_CUTS, DEFAULT_TRAIN_CUTS, DEFAULT_VALID_CUTS
from zipformer.data.mux import MuxedCuts
from zipformer.data.resumable_loader import ConsumedStateSampler, ResumableDataLoader
from zipformer.data.sampling import WorkerSeeder, ignore_sigint, make_sampler
from zipformer.data.storage_check import SkipUnreadableCuts, check_storage_files
from zipformer.model.frontend import FEATURE_DIM

INPUT_STRATEGIES = {"PrecomputedFeatures": PrecomputedFeatures, "AudioSamples": AudioSamples}


class AsrDataModule:
    """Cut loading, samplers and datasets configured by the flags of `add_arguments`.

    `args` is an argparse.Namespace or an AttributeDict holding those flags. On construction the
    cut-file flags left at their default are filled in (from --manifest-dir), so logs show real paths.
    """

    def __init__(self, args: Any) -> None:
        self.args = args
        manifest_dir = Path(args.manifest_dir)
        if args.train_cuts is None:
            args.train_cuts = str(manifest_dir / DEFAULT_TRAIN_CUTS)
        if args.valid_cuts is None:
            args.valid_cuts = ",".join(f"{k}={manifest_dir / v}" for k, v in DEFAULT_VALID_CUTS.items())
        if args.test_cuts is None:
            args.test_cuts = ",".join(f"{k}={manifest_dir / v}" for k, v in DEFAULT_TEST_CUTS.items())
        if args.musan_cuts is None:
            args.musan_cuts = str(manifest_dir / DEFAULT_MUSAN_CUTS)
        self.mux: Optional[MuxedCuts] = None

    @staticmethod
    def add_arguments(parser: argparse.ArgumentParser) -> None:
        group = parser.add_argument_group(
            title="ASR data related options",
            description="These options are used for the preparation of PyTorch DataLoaders "
            "from Lhotse CutSet's -- they control the effective batch sizes, sampling strategies, "
            "applied data augmentations, etc.",
        )
        group.add_argument(
            "--manifest-dir",
            type=Path,
            default=Path("data/fbank"),
            help="Directory with the cut manifests; the default cut files below are taken from it.",
        )
        group.add_argument(
            "--train-cuts",
            type=str,
            default=None,
            help="Comma-separated cut files to train on, concatenated in the given order "
            f"(the sampler shuffles within its buffer). Default: {{manifest-dir}}/{DEFAULT_TRAIN_CUTS}.",
        )
        group.add_argument(
            "--valid-cuts",
            type=str,
            default=None,
            help="Comma-separated validation sets, each name=path or a plain path (named after the file). "
            "Default: " + ",".join(f"{k}={{manifest-dir}}/{v}" for k, v in DEFAULT_VALID_CUTS.items()) + ".",
        )
        group.add_argument(
            "--test-cuts",
            type=str,
            default=None,
            help="Comma-separated test sets for decoding, each name=path or a plain path. "
            "Default: " + ",".join(f"{k}={{manifest-dir}}/{v}" for k, v in DEFAULT_TEST_CUTS.items()) + ".",
        )
        group.add_argument(
            "--max-duration",
            type=positive_float,
            default=200.0,
            help="Maximum pooled recordings duration (seconds) in a single batch. "
            "You can reduce it if it causes CUDA OOM.",
        )
        group.add_argument(
            "--bucketing-sampler",
            type=str2bool,
            default=True,
            help="When enabled, the batches will come from buckets of similar duration (saves padding frames).",
        )
        group.add_argument(
            "--num-buckets",
            type=int_at_least(1),
            default=30,
            help="The number of buckets for the DynamicBucketingSampler (you might want to increase it for "
            "larger datasets).",
        )
        group.add_argument(
            "--concatenate-cuts",
            type=str2bool,
            default=False,
            help="When enabled, utterances (cuts) will be concatenated to minimize the amount of padding.",
        )
        group.add_argument(
            "--duration-factor",
            type=positive_float,
            default=1.0,
            help="Determines the maximum duration of a concatenated cut relative to the duration of the "
            "longest cut in a batch.",
        )
        group.add_argument(
            "--gap",
            type=float,
            default=1.0,
            help="The amount of padding (in seconds) inserted between concatenated cuts.",
        )
        group.add_argument(
            "--on-the-fly-feats",
            type=str2bool,
            default=False,
            help="When enabled, use on-the-fly cut mixing and feature extraction (80-dim lhotse Fbank) "
            "instead of the precomputed features.",
        )
        group.add_argument(
            "--shuffle",
            type=str2bool,
            default=True,
            help="When enabled (=default), the examples will be shuffled for each epoch.",
        )
        group.add_argument(
            "--drop-last",
            type=str2bool,
            default=True,
            help="Whether to drop the last incomplete batch.",
        )
        group.add_argument(
            "--return-cuts",
            type=str2bool,
            default=True,
            help="When enabled, each batch will have the field batch['supervisions']['cut'] with the cuts "
            "that were used to construct it.",
        )
        group.add_argument(
            "--num-workers",
            type=int_at_least(0),
            default=2,
            help="The number of training dataloader workers that collect the batches.",
        )
        group.add_argument(
            "--enable-spec-aug",
            type=str2bool,
            default=True,
            help="When enabled, use SpecAugment for training dataset.",
        )
        group.add_argument(
            "--spec-aug-time-warp-factor",
            type=int,
            default=80,
            help="Used only when --enable-spec-aug is True. It specifies the factor for time warping in "
            "SpecAugment. Larger values mean more warping. A value less than 1 means to disable time warp.",
        )
        group.add_argument(
            "--enable-musan",
            type=str2bool,
            default=True,
            help="When enabled, select noise from MUSAN and mix it with training dataset "
            "(skipped with a warning when --musan-cuts does not exist).",
        )
        group.add_argument(
            "--musan-cuts",
            type=str,
            default=None,
            help=f"MUSAN noise cuts for --enable-musan. Default: {{manifest-dir}}/{DEFAULT_MUSAN_CUTS}.",
        )
        group.add_argument(
            "--input-strategy",
            type=str,
            default="PrecomputedFeatures",
            choices=sorted(INPUT_STRATEGIES),
            help="AudioSamples or PrecomputedFeatures",
        )

    @staticmethod
    def add_mux_arguments(parser: argparse.ArgumentParser) -> None:
        """Training only: source-domain cuts mixed into the training stream (zipformer.data.mux)."""
        group = parser.add_argument_group("Mixing in source-domain data (against forgetting)")
        group.add_argument(
            "--use-mux",
            type=str2bool,
            default=False,
            help="Mix the cuts of --mux-cuts into the --train-cuts stream, at the share --mux-weight.",
        )
        group.add_argument(
            "--mux-cuts",
            type=str,
            default=None,
            help="Source-domain cuts to mix in with --use-mux 1 (e.g. the base model's training set).",
        )
        group.add_argument(
            "--mux-weight",
            type=open_fraction,
            default=0.3,
            help="Expected share of --mux-cuts cuts in the training stream (by count, 0 < w < 1).",
        )

    @staticmethod
    def check_mux_arguments(args: Any) -> None:
        """UserError for --use-mux without a usable --mux-cuts set, or --mux-cuts without --use-mux 1."""
        if not args.use_mux:
            if args.mux_cuts:
                raise UserError("--mux-cuts is only used with --use-mux 1: add --use-mux 1 or drop --mux-cuts")
            return
        if not args.mux_cuts:
            raise UserError("--use-mux 1 needs --mux-cuts PATH: the source-domain cuts to mix in")
        try:
            load_cuts(args.mux_cuts, flag="--mux-cuts")
        except UserError as e:
            raise UserError(
                f"--use-mux 1: {e}; for the embedded corpus, ./prepare.sh --source-train 7000 "
                "writes data/fbank/source_cuts_train.jsonl.gz"
            ) from None

    # ---- cut sets -------------------------------------------------------------------------------
    def load_train_cuts(self, seed: int = 0) -> CutSet:
        """The --train-cuts files, lazily concatenated; with --use-mux 1, the --mux-cuts mixed in
        (self.mux, whose set_epoch the training loop calls; `seed` seeds its draws)."""
        paths = [p.strip() for p in self.args.train_cuts.split(",")]
        if not all(paths):
            raise UserError(f"empty entry in --train-cuts '{self.args.train_cuts}': use path[,path...]")
        logging.info(f"Training cuts: {', '.join(paths)}")
        cut_sets = [load_cuts(p, flag="--train-cuts") for p in paths]
        combined = cut_sets[0]
        for cuts in cut_sets[1:]:
            combined = combined + cuts
        if not getattr(self.args, "use_mux", False):
            return combined
        self.check_mux_arguments(self.args)
        self.mux = MuxedCuts(combined, load_cuts(self.args.mux_cuts, flag="--mux-cuts"), self.args.mux_weight, seed)
        logging.info(
            f"Mixing in {self.mux.num_mux} source-domain cuts of {self.args.mux_cuts} "
            f"at a share of {self.args.mux_weight:g} of the training cuts"
        )
        return CutSet(self.mux)

    def load_valid_cuts(self) -> "OrderedDict[str, CutSet]":
        """The --valid-cuts sets by name."""
        return self._load_named(self.args.valid_cuts, "--valid-cuts")

    def load_test_cuts(self) -> "OrderedDict[str, CutSet]":
        """The --test-cuts sets by name."""
        return self._load_named(self.args.test_cuts, "--test-cuts")

    @staticmethod
    def _load_named(spec: str, flag: str) -> "OrderedDict[str, CutSet]":
        named = OrderedDict()
        for name, path in parse_named_paths(spec).items():
            logging.info(f"{flag} {name}: {path}")
            named[name] = load_cuts(path, flag=flag)
        return named

    def load_musan_cuts(self) -> Optional[CutSet]:
        """MUSAN noise cuts (eager, they are few), or None when disabled or absent."""
        if not self.args.enable_musan:
            return None
        path = Path(self.args.musan_cuts)
        if not path.is_file():
            logging.warning(
                f"MUSAN cuts not found at {path}: training without noise mixing "
                "(set --musan-cuts, or --enable-musan 0 to silence this warning)"
            )
            return None
        logging.info(f"Mixing noise from MUSAN cuts {path}")
        return load_cuts(path, flag="--musan-cuts").to_eager()

    @staticmethod
    def filter_cuts(cuts: CutSet, sp: Any, min_duration: float = 1.0, max_duration: float = 20.0) -> CutSet:
        """See the module-level filter_cuts."""
        return filter_cuts(cuts, sp, min_duration=min_duration, max_duration=max_duration)

    @property
    def reads_audio(self) -> bool:
        """True when batches are made from the recordings (audio input or on-the-fly features)."""
        return self.args.on_the_fly_feats or self.args.input_strategy == "AudioSamples"

    def check_storage(self, cuts: CutSet, flag: str) -> None:
        """UserError naming a missing feature (or audio) file of `cuts`, before any batch is made."""
        check_storage_files(cuts, flag, audio=self.reads_audio)

    # ---- dataloaders ----------------------------------------------------------------------------
    def _input_strategy(self) -> Any:
        if self.args.on_the_fly_feats:
            return OnTheFlyFeatures(Fbank(FbankConfig(num_mel_bins=FEATURE_DIM)))
        return INPUT_STRATEGIES[self.args.input_strategy]()

    def _concatenation(self) -> List[Callable[[CutSet], CutSet]]:
        if not self.args.concatenate_cuts:
            return []
        logging.info(f"Concatenating cuts (duration factor {self.args.duration_factor}, gap {self.args.gap} s)")
        return [CutConcatenate(duration_factor=self.args.duration_factor, gap=self.args.gap)]

    def _spec_augment(self) -> List[Callable[..., torch.Tensor]]:
        if not self.args.enable_spec_aug:
            return []
        logging.info(f"SpecAugment with time warp factor {self.args.spec_aug_time_warp_factor}")
        return [
            SpecAugment(
                time_warp_factor=self.args.spec_aug_time_warp_factor,
                num_frame_masks=10,
                features_mask_size=27,
                num_feature_masks=2,
                frames_mask_size=100,
            )
        ]

    def train_dataloaders(
        self,
        cuts_train: CutSet,
        sampler_state_dict: Optional[Dict[str, Any]] = None,
        world_size: Optional[int] = None,
        rank: Optional[int] = None,
    ) -> DataLoader:
        """Training batches with augmentation; `world_size`/`rank` shard the batches for DDP.

        Pass them explicitly (they are inferred from torchrun's environment or torch.distributed
        otherwise). `sampler_state_dict` (from `train_dl.sampler.state_dict()`) resumes mid-epoch;
        that state counts the batches handed out to the caller, not those the workers prefetched.
        """
        args = self.args
        cut_transforms = self._concatenation()
        musan = self.load_musan_cuts()
        if musan is not None:
            cut_transforms.append(CutMix(cuts=musan, p=0.5, snr=(10, 20), preserve_id=True, seed="randomized"))
        dataset = SkipUnreadableCuts(
            K2SpeechRecognitionDataset(
                input_strategy=self._input_strategy(),
                cut_transforms=cut_transforms,
                input_transforms=self._spec_augment(),
                return_cuts=args.return_cuts,
            ),
            audio=self.reads_audio,
        )
        sampler = make_sampler(
            cuts_train,
            max_duration=args.max_duration,
            shuffle=args.shuffle,
            drop_last=args.drop_last,
            bucketing=args.bucketing_sampler,
            num_buckets=args.num_buckets,
            world_size=world_size,
            rank=rank,
        )
        if sampler_state_dict is not None:
            if self.mux is not None:
                # Restoring replays the resumed epoch's batches at once: the mux must draw that epoch's cuts.
                self.mux.set_epoch(sampler_state_dict.get("epoch", 0))
            self._restore_sampler(sampler, sampler_state_dict)
        return ResumableDataLoader(
            dataset,
            sampler=ConsumedStateSampler(sampler),
            batch_size=None,
            num_workers=args.num_workers,
            persistent_workers=False,
            worker_init_fn=WorkerSeeder(sampler.rank),
        )

    @staticmethod
    def _restore_sampler(sampler: CutSampler, state: Dict[str, Any]) -> None:
        saved_world_size = state.get("world_size")
        if saved_world_size != sampler.world_size:
            raise UserError(
                f"cannot resume mid-epoch: the sampler state was saved with world size {saved_world_size}, "
                f"this run has {sampler.world_size}: use --world-size {saved_world_size}, or resume from an "
                "epoch-N.pt checkpoint instead"
            )
        logging.info("Restoring the sampler state (resuming mid-epoch)")
        # lhotse pops keys from the dict it loads: keep the caller's checkpoint intact.
        sampler.load_state_dict(copy.deepcopy(state))

    def valid_dataloaders(
        self, cuts_valid: CutSet, world_size: Optional[int] = None, rank: Optional[int] = None
    ) -> DataLoader:
        """Validation batches, unshuffled and without augmentation.

        Under DDP (world size inferred unless given) each rank sees its own share of the batches.
        """
        return self._eval_dataloader(cuts_valid, world_size, rank, self._concatenation())

    def test_dataloaders(self, cuts: CutSet) -> DataLoader:
        """Decoding batches: every cut once, in a single process, unshuffled and without augmentation."""
        return self._eval_dataloader(cuts, world_size=1, rank=0, cut_transforms=[])

    def _eval_dataloader(
        self,
        cuts: CutSet,
        world_size: Optional[int],
        rank: Optional[int],
        cut_transforms: List[Callable[[CutSet], CutSet]],
    ) -> DataLoader:
        dataset = K2SpeechRecognitionDataset(
            input_strategy=self._input_strategy(),
            cut_transforms=cut_transforms,
            return_cuts=True,
        )
        sampler = make_sampler(
            cuts,
            max_duration=self.args.max_duration,
            shuffle=False,
            drop_last=False,
            bucketing=True,
            num_buckets=self.args.num_buckets,
            world_size=world_size,
            rank=rank,
        )
        return DataLoader(
            dataset, sampler=sampler, batch_size=None, num_workers=self.args.num_workers, worker_init_fn=ignore_sigint
        )
