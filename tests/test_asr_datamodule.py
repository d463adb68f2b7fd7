"""Tests for zipformer/data/asr_datamodule.py on tiny cut sets with random precomputed features (no audio)."""
import argparse
import gzip
import logging
import random
from pathlib import Path
from typing import List, Sequence, Tuple

import numpy as np
import pytest
import torch
from lhotse import (
    AudioSource,
    CutSet,
    Features,
    LilcomChunkyWriter,
    MonoCut,
    Recording,
    SupervisionSegment,
)

from zipformer.core.errors import UserError
from zipformer.data.asr_datamodule import AsrDataModule
from zipformer.data.cuts import filter_cuts, load_cuts, parse_named_paths
from zipformer.data.sampling import WorkerSeeder

FRAME_SHIFT = 0.01


class CharTokenizer:
    """Stands in for a sentencepiece model: one token per character."""

    def encode(self, text: str) -> List[int]:
        return [ord(c) for c in text]


def make_cuts(directory: Path, specs: Sequence[Tuple[str, float, str]], seed: int = 0) -> CutSet:
    """Cuts with random (T, 80) lilcom features, T = duration / 10 ms, and one supervision each."""
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    cuts = []
    with LilcomChunkyWriter(directory / f"feats-{seed}") as writer:
        for cut_id, duration, text in specs:
            num_frames = int(round(duration / FRAME_SHIFT))
            key = writer.write(cut_id, rng.standard_normal((num_frames, 80)).astype(np.float32))
            features = Features(
                type="fbank",
                num_frames=num_frames,
                num_features=80,
                frame_shift=FRAME_SHIFT,
                sampling_rate=16000,
                start=0,
                duration=duration,
                storage_type=writer.name,
                storage_path=str(writer.storage_path),
                storage_key=key,
                recording_id=f"rec-{cut_id}",
                channels=0,
            )
            supervision = SupervisionSegment(
                id=cut_id, recording_id=f"rec-{cut_id}", start=0, duration=duration, text=text
            )
            cuts.append(
                MonoCut(id=cut_id, start=0, duration=duration, channel=0, features=features, supervisions=[supervision])
            )
    return CutSet.from_cuts(cuts)


def write_cuts(cuts: CutSet, path: Path) -> Path:
    cuts.to_file(path)
    return path


def make_args(*flags: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    AsrDataModule.add_arguments(parser)
    return parser.parse_args(list(flags))


# Quiet, deterministic settings shared by most dataloader tests.
BASE_FLAGS = ("--num-workers", "0", "--enable-musan", "0", "--enable-spec-aug", "0", "--max-duration", "10")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """40 cuts of 1.0 .. 4.9 s written to a lazy-readable manifest; returns its path."""
    directory = tmp_path_factory.mktemp("corpus")
    specs = [(f"utt{i:02d}", 1.0 + 0.1 * i, "HELLO WORLD") for i in range(40)]
    return write_cuts(make_cuts(directory, specs), directory / "cuts_train.jsonl.gz")


def batch_ids(batch: dict) -> List[str]:
    return [cut.id for cut in batch["supervisions"]["cut"]]


def epoch_ids(dataloader) -> List[List[str]]:
    return [batch_ids(batch) for batch in dataloader]


# ---- flags ----------------------------------------------------------------------------------------
def test_defaults_follow_icefall_and_cut_files_follow_manifest_dir():
    args = make_args()
    assert (args.max_duration, args.num_buckets, args.num_workers) == (200.0, 30, 2)
    assert (args.bucketing_sampler, args.shuffle, args.drop_last, args.return_cuts) == (True, True, True, True)
    assert (args.enable_spec_aug, args.enable_musan, args.on_the_fly_feats, args.concatenate_cuts) == (
        True,
        True,
        False,
        False,
    )
    assert (args.duration_factor, args.gap, args.spec_aug_time_warp_factor) == (1.0, 1.0, 80)
    assert args.input_strategy == "PrecomputedFeatures"

    AsrDataModule(args)
    assert args.train_cuts == "data/fbank/source_cuts_train.jsonl.gz"
    assert args.valid_cuts == "source=data/fbank/source_cuts_dev.jsonl.gz"
    assert args.test_cuts == "source=data/fbank/source_cuts_test.jsonl.gz,target=data/fbank/target_cuts_test.jsonl.gz"
    assert args.musan_cuts == "data/fbank/musan_cuts.jsonl.gz"

    args = make_args("--manifest-dir", "other", "--test-cuts", "x.jsonl.gz", "--shuffle", "no")
    AsrDataModule(args)
    assert args.train_cuts == "other/source_cuts_train.jsonl.gz"
    assert args.test_cuts == "x.jsonl.gz"
    assert args.shuffle is False


def test_parse_named_paths_keeps_order_and_names_plain_paths_after_the_file():
    parsed = parse_named_paths("target=a/t.jsonl.gz, dev = b/d.jsonl.gz,c/my_cuts_dev.jsonl.gz")
    assert list(parsed.items()) == [
        ("target", Path("a/t.jsonl.gz")),
        ("dev", Path("b/d.jsonl.gz")),
        ("my_cuts_dev", Path("c/my_cuts_dev.jsonl.gz")),
    ]


@pytest.mark.parametrize("spec", ["a=x.jsonl.gz,a=y.jsonl.gz", "a=x.jsonl.gz,,b=y", "=x.jsonl.gz", "a="])
def test_parse_named_paths_rejects_bad_lists(spec):
    with pytest.raises(UserError):
        parse_named_paths(spec)


# ---- loading --------------------------------------------------------------------------------------
def test_load_cuts_is_lazy_and_reads_every_cut(corpus):
    cuts = load_cuts(corpus)
    assert cuts.is_lazy
    assert [c.id for c in cuts] == [f"utt{i:02d}" for i in range(40)]


def test_missing_manifest_names_the_file_and_the_fix(tmp_path):
    missing = tmp_path / "nowhere_cuts.jsonl.gz"
    with pytest.raises(UserError, match=r"not found: .*nowhere_cuts\.jsonl\.gz.*--train-cuts.*prepare\.sh"):
        load_cuts(missing, flag="--train-cuts")


def test_truncated_gzip_manifest_is_reported_as_corrupt(tmp_path):
    specs = [(f"u{i:03d}", 2.0, f"TEXT NUMBER {i}") for i in range(200)]
    path = write_cuts(make_cuts(tmp_path, specs), tmp_path / "cuts.jsonl.gz")
    data = path.read_bytes()
    truncated = tmp_path / "truncated.jsonl.gz"
    truncated.write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(UserError, match=r"truncated\.jsonl\.gz is corrupt or incomplete.*prepare\.sh"):
        list(load_cuts(truncated))


def test_malformed_json_line_is_reported_as_corrupt(tmp_path, corpus):
    with gzip.open(corpus, "rt") as f:
        good_lines = f.read().splitlines()[:3]
    for name, bad_line in (("bad_json", '{"id": "x", "start": '), ("not_a_cut", '{"hello": 1}')):
        path = tmp_path / f"{name}.jsonl.gz"
        with gzip.open(path, "wt") as f:
            f.write("\n".join(good_lines + [bad_line]) + "\n")
        with pytest.raises(UserError, match=rf"{name}\.jsonl\.gz is corrupt.*3 cuts read before the error"):
            list(load_cuts(path))


def test_foreign_and_empty_files_fail_at_load(tmp_path):
    not_gzip = tmp_path / "plain.jsonl.gz"
    not_gzip.write_text("this is not gzip\n")
    with pytest.raises(UserError, match="plain.jsonl.gz is corrupt"):
        load_cuts(not_gzip)
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(UserError, match="holds no cuts"):
        load_cuts(empty)


def test_train_cuts_concatenate_files_and_named_sets_keep_their_names(tmp_path, corpus):
    other = write_cuts(make_cuts(tmp_path, [("extra1", 2.0, "A"), ("extra2", 2.0, "B")], seed=1), tmp_path / "x.jsonl")
    args = make_args("--train-cuts", f"{corpus},{other}", "--valid-cuts", f"src={corpus},{other}")
    data = AsrDataModule(args)
    train = data.load_train_cuts()
    assert train.is_lazy
    assert [c.id for c in train][-3:] == ["utt39", "extra1", "extra2"]
    valid = data.load_valid_cuts()
    assert list(valid) == ["src", "x"]
    assert [c.id for c in valid["x"]] == ["extra1", "extra2"]


def test_a_missing_set_in_a_list_is_named(tmp_path, corpus):
    data = AsrDataModule(make_args("--test-cuts", f"a={corpus},b={tmp_path / 'absent.jsonl.gz'}"))
    with pytest.raises(UserError, match=r"absent\.jsonl\.gz \(from --test-cuts\)"):
        data.load_test_cuts()


# ---- filtering ------------------------------------------------------------------------------------
# 3 s = 300 frames -> T_sub = ((300 - 7) // 2 + 1) // 2 = 73 encoder frames.
FILTER_SPECS = [
    ("too_short", 0.99, "A"),
    ("shortest_kept", 1.0, "A"),
    ("longest_kept", 20.0, "A"),
    ("too_long", 20.01, "A"),
    ("tokens_fit", 3.0, "x" * 73),
    ("too_many_tokens", 3.0, "x" * 74),
    ("no_text", 3.0, ""),
]
FILTER_KEPT = ["shortest_kept", "longest_kept", "tokens_fit"]


def test_filter_cuts_applies_duration_and_token_limits_and_logs_why(tmp_path, caplog):
    eager = make_cuts(tmp_path, FILTER_SPECS)
    with caplog.at_level(logging.INFO):
        kept = filter_cuts(eager, CharTokenizer())
    assert not kept.is_lazy
    assert [c.id for c in kept] == FILTER_KEPT
    summary = caplog.text
    assert "kept 3 cuts, removed 4" in summary
    for reason in ("1 shorter than 1.0 s", "1 longer than 20.0 s", "1 more BPE tokens than encoder frames",
                   "1 no transcript"):
        assert reason in summary


def test_filter_cuts_stays_lazy_and_logs_after_the_first_pass(tmp_path, caplog):
    path = write_cuts(make_cuts(tmp_path, FILTER_SPECS), tmp_path / "cuts.jsonl.gz")
    with caplog.at_level(logging.INFO):
        kept = AsrDataModule.filter_cuts(load_cuts(path), CharTokenizer())
        assert kept.is_lazy
        assert "filter_cuts" not in caplog.text
        assert [c.id for c in kept] == FILTER_KEPT
        assert [c.id for c in kept] == FILTER_KEPT
    assert caplog.text.count("kept 3 cuts, removed 4") == 1


def test_filter_counts_frames_from_duration_for_cuts_without_features():
    recording = Recording(
        id="rec",
        sources=[AudioSource(type="file", channels=[0], source="unused.wav")],
        sampling_rate=16000,
        num_samples=48000,
        duration=3.0,
    )

    def audio_cut(cut_id: str, text: str) -> MonoCut:
        supervision = SupervisionSegment(id=cut_id, recording_id="rec", start=0, duration=3.0, text=text)
        return MonoCut(id=cut_id, start=0, duration=3.0, channel=0, recording=recording, supervisions=[supervision])

    cuts = CutSet.from_cuts([audio_cut("fits", "x" * 73), audio_cut("too_many", "x" * 74)])
    assert [c.id for c in filter_cuts(cuts, CharTokenizer())] == ["fits"]


def test_filter_cuts_with_a_real_sentencepiece_model(tmp_path):
    spm = pytest.importorskip("sentencepiece")
    words = "the quick brown fox jumps over the lazy dog while seven wizards box at night".split()
    text_file = tmp_path / "text.txt"
    text_file.write_text("\n".join(" ".join(words[i:] + words[:i]) for i in range(len(words))) + "\n")
    spm.SentencePieceTrainer.train(
        input=str(text_file), model_prefix=str(tmp_path / "bpe"), vocab_size=30, model_type="unigram",
        character_coverage=1.0, minloglevel=2,
    )
    sp = spm.SentencePieceProcessor(model_file=str(tmp_path / "bpe.model"))
    long_text = " ".join(words * 2)
    num_tokens = len(sp.encode(long_text))
    # 4n + 5 frames is the fewest with T_sub = n.
    fitting = (4 * num_tokens + 5) * FRAME_SHIFT
    cuts = make_cuts(tmp_path, [("fits", fitting, long_text), ("one_frame_short", fitting - FRAME_SHIFT, long_text)])
    assert [c.id for c in filter_cuts(cuts, sp)] == ["fits"]


# ---- training dataloader --------------------------------------------------------------------------
@pytest.mark.parametrize("bucketing", ["1", "0"])
def test_train_batches_respect_max_duration_and_have_the_icefall_layout(corpus, bucketing):
    data = AsrDataModule(make_args(*BASE_FLAGS, "--drop-last", "0", "--bucketing-sampler", bucketing))
    dataloader = data.train_dataloaders(load_cuts(corpus))
    seen = []
    for batch in dataloader:
        cuts = batch["supervisions"]["cut"]
        assert sum(c.duration for c in cuts) <= 10.0
        inputs = batch["inputs"]
        assert inputs.dtype == torch.float32
        assert inputs.shape == (len(cuts), max(c.num_frames for c in cuts), 80)
        supervisions = batch["supervisions"]
        assert supervisions["text"] == ["HELLO WORLD"] * len(cuts)
        assert supervisions["num_frames"].tolist() == [c.num_frames for c in cuts]
        assert supervisions["start_frame"].tolist() == [0] * len(cuts)
        assert sorted(supervisions["sequence_idx"].tolist()) == list(range(len(cuts)))
        seen += batch_ids(batch)
    assert sorted(seen) == [f"utt{i:02d}" for i in range(40)]
    assert seen != sorted(seen), "--shuffle 1 should shuffle"


def test_a_small_set_with_drop_last_still_gives_batches(corpus):
    """40 cuts (118 s) in icefall's 30 buckets would leave every bucket short of one 10 s batch."""
    data = AsrDataModule(make_args(*BASE_FLAGS, "--drop-last", "1", "--num-buckets", "30"))
    seen = [cut_id for batch in data.train_dataloaders(load_cuts(corpus)) for cut_id in batch_ids(batch)]
    assert len(seen) >= 20


def test_concatenated_cuts_pack_several_utterances_per_row(corpus):
    # Buckets hold cuts of similar duration: let a row grow to three times the longest cut.
    data = AsrDataModule(make_args(*BASE_FLAGS, "--concatenate-cuts", "1", "--duration-factor", "3"))
    batch = next(iter(data.train_dataloaders(load_cuts(corpus))))
    supervisions = batch["supervisions"]
    assert batch["inputs"].shape[0] < len(supervisions["text"])
    assert supervisions["start_frame"].max() > 0


def test_on_the_fly_features_are_80_dim_fbank(tmp_path):
    soundfile = pytest.importorskip("soundfile")
    wav = tmp_path / "noise.wav"
    soundfile.write(wav, np.random.default_rng(0).uniform(-0.1, 0.1, 24000).astype(np.float32), 16000)
    recording = Recording.from_file(wav)
    supervision = SupervisionSegment(id="noise", recording_id=recording.id, start=0, duration=1.5, text="HI")
    cut = MonoCut(id="noise", start=0, duration=1.5, channel=0, recording=recording, supervisions=[supervision])
    data = AsrDataModule(make_args(*BASE_FLAGS, "--on-the-fly-feats", "1", "--drop-last", "0"))
    cuts = load_cuts(write_cuts(CutSet.from_cuts([cut]), tmp_path / "cuts.jsonl.gz"))
    batch = next(iter(data.train_dataloaders(cuts)))  # one cut: too few for buckets
    assert batch["inputs"].shape == (1, 150, 80)
    assert torch.isfinite(batch["inputs"]).all()


def first_batch_features(data: AsrDataModule, cuts: CutSet) -> Tuple[torch.Tensor, List]:
    batch = next(iter(data.train_dataloaders(cuts)))
    return batch["inputs"], batch["supervisions"]["cut"]


def matches_stored_features(inputs: torch.Tensor, cuts: List) -> bool:
    """Whether each row of a batch holds its cut's features unchanged (padding is not compared)."""
    return all(
        torch.equal(inputs[i, : cut.num_frames], torch.from_numpy(cut.load_features())) for i, cut in enumerate(cuts)
    )


def test_spec_augment_changes_features_only_when_enabled(corpus):
    random.seed(0)
    torch.manual_seed(0)
    inputs, cuts = first_batch_features(AsrDataModule(make_args(*BASE_FLAGS)), load_cuts(corpus))
    assert matches_stored_features(inputs, cuts)

    augmented, augmented_cuts = first_batch_features(
        AsrDataModule(make_args(*BASE_FLAGS, "--enable-spec-aug", "1")), load_cuts(corpus)
    )
    assert augmented.shape == inputs.shape
    assert [c.id for c in augmented_cuts] == [c.id for c in cuts]
    assert not matches_stored_features(augmented, augmented_cuts)


def test_sampler_state_resumes_from_the_same_position(corpus):
    data = AsrDataModule(make_args(*BASE_FLAGS))
    full_run = data.train_dataloaders(load_cuts(corpus))
    full_run.sampler.set_epoch(2)
    iterator = iter(full_run)
    for _ in range(3):
        next(iterator)
    state = full_run.sampler.state_dict()
    rest = [batch_ids(batch) for batch in iterator]
    assert len(rest) > 0

    state_before = repr(state)
    resumed = data.train_dataloaders(load_cuts(corpus), sampler_state_dict=state)
    resumed.sampler.set_epoch(2)  # as the training loop does before each epoch
    assert epoch_ids(resumed) == rest
    assert repr(state) == state_before, "the caller's checkpoint dict must not be consumed"


def test_resume_with_another_world_size_is_refused(corpus):
    data = AsrDataModule(make_args(*BASE_FLAGS))
    state = data.train_dataloaders(load_cuts(corpus), world_size=1, rank=0).sampler.state_dict()
    with pytest.raises(UserError, match="world size 1.*--world-size 1"):
        data.train_dataloaders(load_cuts(corpus), sampler_state_dict=state, world_size=2, rank=0)


def test_ddp_ranks_see_disjoint_cuts_that_cover_the_set(corpus):
    data = AsrDataModule(make_args(*BASE_FLAGS, "--drop-last", "0"))
    per_rank = []
    for rank in range(2):
        dataloader = data.train_dataloaders(load_cuts(corpus), world_size=2, rank=rank)
        per_rank.append([cut_id for batch in epoch_ids(dataloader) for cut_id in batch])
    rank0, rank1 = (set(ids) for ids in per_rank)
    assert rank0 and rank1
    assert not rank0 & rank1
    assert rank0 | rank1 == {f"utt{i:02d}" for i in range(40)}


def test_missing_musan_warns_and_training_continues(corpus, tmp_path, caplog):
    flags = [*BASE_FLAGS, "--enable-musan", "1", "--musan-cuts", str(tmp_path / "musan_cuts.jsonl.gz")]
    data = AsrDataModule(make_args(*flags))
    with caplog.at_level(logging.WARNING):
        dataloader = data.train_dataloaders(load_cuts(corpus))
    assert "MUSAN cuts not found" in caplog.text
    assert "musan_cuts.jsonl.gz" in caplog.text
    assert next(iter(dataloader))["inputs"].shape[-1] == 80


def test_musan_noise_is_mixed_in_when_present(corpus, tmp_path):
    noise = make_cuts(tmp_path, [(f"noise{i}", 8.0, "") for i in range(3)], seed=7)
    musan = write_cuts(noise, tmp_path / "musan_cuts.jsonl.gz")
    data = AsrDataModule(make_args(*BASE_FLAGS, "--enable-musan", "1", "--musan-cuts", str(musan)))
    random.seed(0)
    mixed = 0
    for batch in data.train_dataloaders(load_cuts(corpus)):
        cuts = batch["supervisions"]["cut"]
        assert all(c.id.startswith("utt") for c in cuts), "preserve_id keeps the speech cut's id"
        mixed += sum(type(c).__name__ == "MixedCut" for c in cuts)
    assert mixed > 0


def test_workers_are_seeded_differently_per_rank_and_reproducibly():
    def draw(rank: int) -> float:
        torch.manual_seed(123)
        WorkerSeeder(rank)(0)
        return random.random()

    assert draw(0) == draw(0)
    assert draw(0) != draw(1)


def test_augmented_batches_repeat_with_the_same_seed_in_worker_processes(corpus):
    data = AsrDataModule(make_args(*BASE_FLAGS, "--enable-spec-aug", "1", "--num-workers", "2"))

    def first_inputs(seed: int) -> torch.Tensor:
        torch.manual_seed(seed)
        return next(iter(data.train_dataloaders(load_cuts(corpus))))["inputs"]

    assert torch.equal(first_inputs(0), first_inputs(0))
    assert not torch.equal(first_inputs(0), first_inputs(1))


# ---- validation and test dataloaders --------------------------------------------------------------
def test_test_dataloader_yields_every_cut_once_without_augmentation(corpus):
    flags = ["--num-workers", "0", "--max-duration", "10"]  # spec-aug, musan, drop-last, shuffle all on
    data = AsrDataModule(make_args(*flags))
    ids = []
    for batch in data.test_dataloaders(load_cuts(corpus)):
        cuts = batch["supervisions"]["cut"]
        assert matches_stored_features(batch["inputs"], cuts)
        ids += batch_ids(batch)
    assert sorted(ids) == [f"utt{i:02d}" for i in range(40)]
    assert len(ids) == 40


@pytest.mark.parametrize("num_cuts", [1, 3])
def test_sets_smaller_than_the_bucket_count_are_decoded_whole(tmp_path, num_cuts):
    specs = [(f"tiny{i}", 2.0, "A") for i in range(num_cuts)]
    cuts = load_cuts(write_cuts(make_cuts(tmp_path, specs), tmp_path / "tiny.jsonl.gz"))
    data = AsrDataModule(make_args("--num-workers", "0", "--num-buckets", "30"))
    ids = [cut_id for batch in epoch_ids(data.test_dataloaders(cuts)) for cut_id in batch]
    assert sorted(ids) == [spec[0] for spec in specs]


def test_valid_dataloader_is_unshuffled_and_unaugmented(corpus):
    data = AsrDataModule(make_args("--num-workers", "0", "--max-duration", "10", "--enable-musan", "0"))
    runs = []
    for _ in range(2):
        dataloader = data.valid_dataloaders(load_cuts(corpus), world_size=1, rank=0)
        for batch in dataloader:
            assert matches_stored_features(batch["inputs"], batch["supervisions"]["cut"])
        runs.append(epoch_ids(dataloader))
    assert runs[0] == runs[1]
    assert sorted(i for batch in runs[0] for i in batch) == [f"utt{i:02d}" for i in range(40)]


def test_sampler_state_with_workers_counts_the_batches_handed_out_not_the_prefetched(corpus):
    data = AsrDataModule(make_args(*BASE_FLAGS[2:], "--num-workers", "2"))
    full_run = data.train_dataloaders(load_cuts(corpus))
    full_run.sampler.set_epoch(1)
    iterator = iter(full_run)
    for _ in range(2):
        next(iterator)
    state = full_run.sampler.state_dict()
    rest = [batch_ids(batch) for batch in iterator]
    assert len(rest) > 4, "the test needs more batches than the workers prefetch"

    resumed = data.train_dataloaders(load_cuts(corpus), sampler_state_dict=state)
    resumed.sampler.set_epoch(1)
    assert epoch_ids(resumed) == rest


def two_feature_files(tmp_path: Path) -> Tuple[CutSet, CutSet]:
    """Cuts whose features are in two files: (cuts of the first, cuts of the second)."""
    first = make_cuts(tmp_path, [(f"a{i}", 1.0 + 0.1 * i, "HELLO") for i in range(10)], seed=1)
    second = make_cuts(tmp_path, [(f"b{i}", 1.0 + 0.1 * i, "HELLO") for i in range(10)], seed=2)
    return first, second


def test_missing_feature_files_are_found_before_training(tmp_path):
    first, second = two_feature_files(tmp_path)
    Path(second[0].features.storage_path).unlink()
    data = AsrDataModule(make_args(*BASE_FLAGS))
    data.check_storage(first, "--train-cuts")
    with pytest.raises(UserError, match=r"1 of the 2 feature files of the cuts in --train-cuts are missing, e\.g\. "
                                        r".*feats-2.* \(cut b0\): re-run the \./prepare\.sh stage"):
        data.check_storage(first + second, "--train-cuts")


def test_a_cut_whose_features_vanish_during_training_is_left_out_and_named(tmp_path):
    first, second = two_feature_files(tmp_path)
    manifest = write_cuts((first + second).to_eager().shuffle(random.Random(0)), tmp_path / "cuts.jsonl.gz")
    dataloader = AsrDataModule(make_args(*BASE_FLAGS, "--drop-last", "0")).train_dataloaders(load_cuts(manifest))
    Path(second[0].features.storage_path).unlink()
    trained, skipped = set(), set()
    for batch in dataloader:
        skipped.update(batch["skipped_cuts"] if "skipped_cuts" in batch else [])
        if "inputs" in batch:
            trained.update(batch_ids(batch))
            assert batch["inputs"].shape[0] == len(batch_ids(batch))
    assert skipped == set(second.ids)
    assert trained == set(first.ids)
