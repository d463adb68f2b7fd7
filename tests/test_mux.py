"""--use-mux: source-domain cuts mixed into the fine-tuning stream at the share --mux-weight."""
import argparse
import gzip
from pathlib import Path

import pytest
from lhotse import CutSet
from lhotse.testing.dummies import dummy_cut
from test_asr_datamodule import BASE_FLAGS, batch_ids, epoch_ids, make_cuts, write_cuts

from zipformer.core.errors import UserError
from zipformer.data.asr_datamodule import AsrDataModule
from zipformer.data.mux import MuxedCuts
from zipformer.model.recipe import ModelRecipe
from zipformer.training.flags import get_parser
from zipformer.training.recipe import TrainingRecipe


def cuts(prefix: str, n: int) -> CutSet:
    return CutSet.from_cuts([dummy_cut(i).with_id(f"{prefix}-{i}") for i in range(n)])


def ids(stream) -> list:
    return [cut.id for cut in stream]


@pytest.mark.parametrize("weight", [0.3, 0.5])
def test_the_stream_has_the_requested_share_of_source_cuts(weight):
    stream = ids(MuxedCuts(cuts("target", 400), cuts("source", 1000), weight, seed=1))
    source = [i for i in stream if i.startswith("source")]
    assert len(source) / len(stream) == pytest.approx(weight, abs=0.05)
    # Every fine-tuning cut exactly once, in its order; source cuts are not repeated within a pass.
    assert [i for i in stream if i.startswith("target")] == [f"target-{i}" for i in range(400)]
    assert len(set(source)) == len(source)


def test_each_epoch_draws_other_source_cuts_and_an_epoch_repeats_exactly():
    muxed = MuxedCuts(cuts("target", 200), cuts("source", 1000), 0.3, seed=1)
    first = ids(muxed)
    assert ids(muxed) == first  # the sampler's pre-passes and a resumed epoch see the same stream
    muxed.set_epoch(1)
    second = ids(muxed)
    assert second != first
    assert len(set(second) & set(first) - {f"target-{i}" for i in range(200)}) < 30


def test_a_small_source_set_is_cycled_as_random_permutations():
    stream = ids(MuxedCuts(cuts("target", 300), cuts("source", 20), 0.5, seed=3))
    source = [i for i in stream if i.startswith("source")]
    assert len(source) > 200
    # Each block of 20 consecutive draws is a permutation of the whole set (blocks = the set's size).
    assert all(sorted(source[k : k + 20]) == sorted(f"source-{i}" for i in range(20)) for k in range(0, 200, 20))


def test_the_weight_and_an_empty_set_are_refused():
    with pytest.raises(ValueError, match="between 0 and 1"):
        MuxedCuts(cuts("target", 3), cuts("source", 3), 1.0)
    with pytest.raises(ValueError, match="holds no cuts"):
        MuxedCuts(cuts("target", 3), CutSet.from_cuts([]), 0.3)


def parse(*argv: str) -> argparse.Namespace:
    return get_parser(TrainingRecipe()).parse_args(list(argv))


@pytest.mark.parametrize("value", ["0", "1", "-0.2", "nan", "x"])
def test_mux_weight_is_checked_at_parse_time(value, capsys):
    with pytest.raises(SystemExit):
        parse("--use-mux", "1", "--mux-weight", value)
    assert "argument --mux-weight" in capsys.readouterr().err


def test_mux_flags_are_checked_before_training(tmp_path: Path):
    empty = tmp_path / "empty.jsonl.gz"
    with gzip.open(empty, "wt"):
        pass
    source = tmp_path / "source.jsonl.gz"
    cuts("source", 5).to_file(source)
    cases = [
        (("--use-mux", "1"), "--use-mux 1 needs --mux-cuts PATH"),
        (("--use-mux", "1", "--mux-cuts", str(tmp_path / "missing.jsonl.gz")), "cut manifest not found"),
        (("--use-mux", "1", "--mux-cuts", str(empty)), "holds no cuts"),
        (("--mux-cuts", str(source)), "--mux-cuts is only used with --use-mux 1"),
    ]
    for argv, message in cases:
        with pytest.raises(UserError, match=message) as e:
            AsrDataModule.check_mux_arguments(parse(*argv))
        assert "\n" not in str(e.value)
    AsrDataModule.check_mux_arguments(parse("--use-mux", "1", "--mux-cuts", str(source)))


def test_the_data_module_mixes_the_train_cuts(tmp_path: Path):
    target, source = tmp_path / "target.jsonl.gz", tmp_path / "source.jsonl.gz"
    cuts("target", 100).to_file(target)
    cuts("source", 100).to_file(source)
    args = parse("--train-cuts", str(target), "--use-mux", "1", "--mux-cuts", str(source), "--mux-weight", "0.5")
    data = AsrDataModule(args)
    stream = ids(data.load_train_cuts(seed=7))
    assert data.mux is not None and data.mux.num_mux == 100
    assert sum(i.startswith("source") for i in stream) / len(stream) == pytest.approx(0.5, abs=0.08)
    plain = AsrDataModule(parse("--train-cuts", str(target)))
    assert ids(plain.load_train_cuts()) == [f"target-{i}" for i in range(100)] and plain.mux is None


def test_decoding_has_no_mux_flags():
    parser = argparse.ArgumentParser()
    AsrDataModule.add_arguments(parser)
    ModelRecipe().add_arguments(parser)
    assert "--use-mux" not in parser.format_help()



def test_a_resumed_epoch_continues_the_same_mixed_stream(tmp_path: Path):
    """As test_asr_datamodule's resume test, with --use-mux: the restored sampler replays the resumed
    epoch's draws, not the first epoch's."""
    target = write_cuts(make_cuts(tmp_path / "t", [(f"target{i:02d}", 1.0 + 0.1 * i, "HELLO") for i in range(30)]), tmp_path / "t.jsonl.gz")
    source = write_cuts(make_cuts(tmp_path / "s", [(f"source{i:02d}", 2.0, "WORLD") for i in range(60)], seed=1), tmp_path / "s.jsonl.gz")
    flags = (*BASE_FLAGS, "--train-cuts", str(target), "--use-mux", "1", "--mux-cuts", str(source))

    def loader(state=None):
        data = AsrDataModule(parse(*flags))
        dataloader = data.train_dataloaders(data.load_train_cuts(seed=3), sampler_state_dict=state, world_size=1, rank=0)
        dataloader.sampler.set_epoch(2)  # as the training loop does before each epoch
        data.mux.set_epoch(2)
        return dataloader

    full_run = loader()
    iterator = iter(full_run)
    for _ in range(3):
        next(iterator)
    state = full_run.sampler.state_dict()
    rest = [batch_ids(batch) for batch in iterator]
    assert any(i.startswith("source") for batch in rest for i in batch)
    assert epoch_ids(loader(state)) == rest
