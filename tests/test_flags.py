"""Numeric flags are checked when they are parsed; flags that have no effect say so."""
import argparse

import pytest

from zipformer.training import TrainingRecipe, get_parser
from zipformer.utils import AttributeDict


@pytest.mark.parametrize(
    "flag, value, message",
    [
        ("--max-duration", "0", "must be a number > 0, got 0"),
        ("--max-duration", "-5", "must be a number > 0, got -5"),
        ("--max-duration", "nan", "must be a number > 0, got nan"),
        ("--keep-last-k", "0", "must be >= 1, got 0"),
        ("--log-interval", "0", "must be >= 1, got 0"),
        ("--average-period", "0", "must be >= 1, got 0"),
        ("--valid-interval", "0", "must be >= 1, got 0"),
        ("--num-epochs", "0", "must be >= 1, got 0"),
        ("--base-lr", "-0.1", "must be a number > 0, got -0.1"),
        ("--num-workers", "-1", "must be >= 0, got -1"),
        ("--num-buckets", "0", "must be >= 1, got 0"),
        ("--save-every-n", "x", "expected an integer, got 'x'"),
    ],
)
def test_bad_numeric_training_flags_fail_at_parse_time(flag: str, value: str, message: str, capsys):
    with pytest.raises(SystemExit) as exit_info:
        get_parser(TrainingRecipe()).parse_args([flag, value])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].endswith(f"argument {flag}: {message}")


def test_good_numeric_flags_parse():
    args = get_parser(TrainingRecipe()).parse_args(["--max-duration", "0.5", "--save-every-n", "0", "--start-batch", "0"])
    assert (args.max_duration, args.save_every_n, args.start_batch) == (0.5, 0, 0)


def test_adapter_dim_without_adapters_warns(caplog):
    from conftest import TINY_MODEL_FLAGS
    from zipformer.model_args import add_model_arguments
    from zipformer.tuning import get_tuned_model
    from zipformer_adapter.adapter import AdapterTuner

    parser = argparse.ArgumentParser()
    add_model_arguments(parser)
    params = AttributeDict(vars(parser.parse_args(TINY_MODEL_FLAGS)))
    params.update(feature_dim=80, vocab_size=40, blank_id=0, context_size=2, use_adapters=False, adapter_dim=4)
    with caplog.at_level("WARNING"):
        get_tuned_model(params, AdapterTuner())
    assert "--adapter-dim 4 is ignored: --use-adapters 0 builds the model without adapters" in caplog.text
