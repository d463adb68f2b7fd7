"""Lhotse data pipeline for training and decoding: cut-file flags, filtering, samplers, augmentation.

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
import os
import signal
import zlib
from collections import Counter, OrderedDict
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Union

import torch
from lhotse import CutSet, Fbank, FbankConfig
from lhotse.cut import Cut
from lhotse.dataset import (
    AudioSamples,
    CutConcatenate,
    CutMix,
    DynamicBucketingSampler,
    K2SpeechRecognitionDataset,
    OnTheFlyFeatures,
    PrecomputedFeatures,
    SimpleCutSampler,
    SpecAugment,
)
from lhotse.dataset.dataloading import LHOTSE_PROCESS_SEED
from lhotse.dataset.sampling.base import CutSampler
from lhotse.utils import compute_num_frames, fix_random_seed
from torch.utils.data import DataLoader

from zipformer.core.errors import UserError
from zipformer.core.flag_types import int_at_least, open_fraction, positive_float, str2bool
from zipformer.data.default_cuts import DEFAULT_MUSAN_CUTS, DEFAULT_TEST_CUTS, DEFAULT_TRAIN_CUTS, DEFAULT_VALID_CUTS
from zipformer.data.mux import MuxedCuts
from zipformer.data.resumable_loader import ConsumedStateSampler, ResumableDataLoader
from zipformer.data.storage_check import SkipUnreadableCuts, check_storage_files

INPUT_STRATEGIES = {"PrecomputedFeatures": PrecomputedFeatures, "AudioSamples": AudioSamples}

# Errors that reading a damaged or foreign JSONL(.gz) file raises inside lhotse:
# truncated gzip (EOFError), bad gzip (OSError, zlib.error), bad JSON (ValueError),
# JSON that is not a cut (KeyError, TypeError, ValueError).
_MANIFEST_READ_ERRORS = (OSError, EOFError, zlib.error, ValueError, KeyError, TypeError)

FEATURE_FRAME_SHIFT = 0.01  # seconds; lhotse Fbank default, used when cuts carry no features


class _CheckedManifest:
    """Lazy, re-iterable cuts of one JSONL manifest that turns read errors into a UserError naming the file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.cuts = CutSet.from_jsonl_lazy(path)

    def __iter__(self) -> Iterator[Cut]:
        num_read = 0
        cuts = iter(self.cuts)
        while True:
            try:
                cut = next(cuts)
            except StopIteration:
                return
            except _MANIFEST_READ_ERRORS as e:
                reason = " ".join(f"{type(e).__name__}: {e}".split())
                raise UserError(
                    f"cut manifest {self.path} is corrupt or incomplete ({reason}; {num_read} cuts read before "
                    f"the error): delete it and re-run the ./prepare.sh stage that writes it"
                ) from e
            num_read += 1
            yield cut


def load_cuts(path: Union[str, Path], flag: str = "") -> CutSet:
    """Open a lhotse cut manifest (.jsonl or .jsonl.gz) lazily.

    The first cut is read at once, so a missing, empty or foreign file fails here; damage further in
    (a truncated gzip, a malformed line) raises UserError when iteration reaches it.
    `flag` names the command-line flag the path came from, for the error message.
    """
    path = Path(path)
    via = f" (from {flag})" if flag else ""
    if not path.is_file():
        raise UserError(
            f"cut manifest not found: {path}{via}: run ./prepare.sh to create it, or pass the path of "
            f"existing lhotse cuts (relative paths are taken from the current directory {Path.cwd()})"
        )
    manifest = _CheckedManifest(path)
    if next(iter(manifest), None) is None:
        raise UserError(f"cut manifest {path}{via} holds no cuts: re-run ./prepare.sh or pass another file")
    return CutSet(manifest)


def parse_named_paths(spec: str) -> "OrderedDict[str, Path]":
    """Parse "name=path,name2=path2" (or plain "path", named after the file) into an ordered dict.

    >>> parse_named_paths("dev=a/dev.jsonl.gz,b/x_cuts.jsonl.gz")
    OrderedDict([('dev', PosixPath('a/dev.jsonl.gz')), ('x_cuts', PosixPath('b/x_cuts.jsonl.gz'))])
    """
    named: "OrderedDict[str, Path]" = OrderedDict()
    for item in spec.split(","):
        item = item.strip()
        if not item:
            raise UserError(f"empty entry in cut list '{spec}': use name=path[,name=path...]")
        if "=" in item:
            name, path = (s.strip() for s in item.split("=", 1))
            if not name or not path:
                raise UserError(f"bad entry '{item}' in cut list '{spec}': use name=path")
        else:
            path = item
            name = Path(item).name.split(".")[0]
        if name in named:
            raise UserError(f"name '{name}' appears twice in cut list '{spec}': give each set its own name=")
        named[name] = Path(path)
    return named


def num_subsampled_frames(num_frames: int) -> int:
    """Encoder output length T_sub for `num_frames` input frames (Conv2dSubsampling, factor 4)."""
    return ((num_frames - 7) // 2 + 1) // 2


class CutFilter:
    """Decides which cuts are fit for transducer training, and counts the rejected ones by reason.

    Keeps min_duration <= duration <= max_duration and cuts whose T_sub covers their BPE tokens
    (the pruned RNN-T loss needs T_sub >= number of tokens).
    """

    def __init__(self, sp: Any, min_duration: float, max_duration: float) -> None:
        self.sp = sp
        self.min_duration = min_duration
        self.max_duration = max_duration

    def reject_reason(self, cut: Cut) -> Optional[str]:
        """None to keep `cut`, otherwise a short reason."""
        if cut.duration < self.min_duration:
            return f"shorter than {self.min_duration} s"
        if cut.duration > self.max_duration:
            return f"longer than {self.max_duration} s"
        text = " ".join(s.text for s in cut.supervisions if s.text)
        if not text.strip():
            return "no transcript"
        num_frames = cut.num_frames if cut.has_features else compute_num_frames(
            cut.duration, FEATURE_FRAME_SHIFT, cut.sampling_rate
        )
        if num_subsampled_frames(num_frames) < len(self.sp.encode(text)):
            return "more BPE tokens than encoder frames"
        return None


def _log_filter_summary(counts: Counter) -> None:
    kept = counts.pop("kept", 0)
    removed = sum(counts.values())
    reasons = ", ".join(f"{n} {reason}" for reason, n in counts.most_common())
    logging.info(f"filter_cuts: kept {kept} cuts, removed {removed}" + (f" ({reasons})" if removed else ""))


class _FilteredCuts:
    """Lazy filtering that logs the removal counts once, at the end of the first complete pass."""

    def __init__(self, source: Iterable[Cut], cut_filter: CutFilter) -> None:
        self.source = source
        self.cut_filter = cut_filter
        self.reported = False

    def __iter__(self) -> Iterator[Cut]:
        counts: Counter = Counter()
        for cut in self.source:
            reason = self.cut_filter.reject_reason(cut)
            if reason is None:
                counts["kept"] += 1
                yield cut
            else:
                counts[reason] += 1
                logging.debug(f"Excluding cut {cut.id} (duration {cut.duration:.2f} s): {reason}")
        if not self.reported:
            self.reported = True
            _log_filter_summary(counts)


def filter_cuts(cuts: CutSet, sp: Any, min_duration: float = 1.0, max_duration: float = 20.0) -> CutSet:
    """Drop cuts unfit for training (see CutFilter); `sp` is anything with `encode(text) -> list`.

    A lazy CutSet stays lazy: the counts are logged after the first complete pass over it.
    An eager CutSet is filtered at once and the counts logged now.
    """
    cut_filter = CutFilter(sp, min_duration, max_duration)
    filtered = _FilteredCuts(cuts, cut_filter)
    if cuts.is_lazy:
        return CutSet(filtered)
    return CutSet.from_cuts(list(filtered))


def ignore_sigint(worker_id: int) -> None:
    """DataLoader worker_init_fn: leave Ctrl-C to the main process.

    A terminal sends SIGINT to the workers too; training handles it in the main process (it saves a
    checkpoint first), and the workers end with it.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)


class _WorkerSeeder:
    """DataLoader worker_init_fn: a different, reproducible random seed for every worker, epoch and rank.

    PyTorch seeds each worker's torch RNG with a base seed drawn from the main process's torch RNG at
    every epoch, plus the worker id; train.py seeds that RNG, so runs repeat. Ranks are offset because
    every rank seeds its main process identically. Python's and numpy's RNGs (SpecAugment, CutMix with
    seed="randomized") follow.
    """

    def __init__(self, rank: int) -> None:
        self.rank = rank

    def __call__(self, worker_id: int) -> None:
        ignore_sigint(worker_id)
        seed = (torch.initial_seed() + 1_000_003 * self.rank) % 2**31
        fix_random_seed(seed)
        os.environ[LHOTSE_PROCESS_SEED] = str(seed)


def _usable_num_buckets(cuts: CutSet, num_buckets: int, max_duration: float, world_size: int) -> int:
    """At most `num_buckets`, and few enough that every bucket fills a few batches on every rank.

    With --drop-last, a bucket holding less than one batch yields nothing: a small set split into
    icefall's 30 buckets gives no batch at all. Reads cuts only until the set is known to be large.
    """
    batches_per_bucket = 4
    needed = num_buckets * batches_per_bucket * max_duration * world_size
    total = 0.0
    for cut in cuts:
        total += cut.duration
        if total >= needed:
            return num_buckets
    return min(num_buckets, int(total / (batches_per_bucket * max_duration * world_size)))


def _make_sampler(
    cuts: CutSet,
    max_duration: float,
    shuffle: bool,
    drop_last: bool,
    bucketing: bool,
    num_buckets: int,
    world_size: Optional[int],
    rank: Optional[int],
) -> CutSampler:
    """DynamicBucketingSampler, or SimpleCutSampler when bucketing is off or the set is too small for buckets."""
    num_buckets = _usable_num_buckets(cuts, num_buckets, max_duration, world_size or 1)
    # lhotse refuses fewer than two buckets.
    if bucketing and num_buckets >= 2:
        return DynamicBucketingSampler(
            cuts,
            max_duration=max_duration,
            shuffle=shuffle,
            num_buckets=num_buckets,
            buffer_size=num_buckets * 2000,  # cuts held in memory; icefall's 5000 per bucket costs more RAM
            drop_last=drop_last,
            world_size=world_size,
            rank=rank,
        )
    return SimpleCutSampler(
        cuts, max_duration=max_duration, shuffle=shuffle, drop_last=drop_last, world_size=world_size, rank=rank
    )


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
            return OnTheFlyFeatures(Fbank(FbankConfig(num_mel_bins=80)))
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
        sampler = _make_sampler(
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
            worker_init_fn=_WorkerSeeder(sampler.rank),
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
        sampler = _make_sampler(
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
