"""Numeric flags are checked when they are parsed; flags that have no effect say so."""
import argparse

import pytest

from zipformer.core.params import AttributeDict
from zipformer.training.flags import get_parser
from zipformer.training.recipe import TrainingRecipe


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


def _decode_parser() -> argparse.ArgumentParser:
    from zipformer.checkpoints.loader import DecodingRecipe
    from zipformer.decoding.session import get_parser as decoding_parser

    return decoding_parser(DecodingRecipe())


def _streaming_decode_parser() -> argparse.ArgumentParser:
    from zipformer.checkpoints.loader import DecodingRecipe
    from zipformer.decoding.streaming_session import get_parser as streaming_parser

    return streaming_parser(DecodingRecipe())


def _pretrained_parser() -> argparse.ArgumentParser:
    from zipformer.decoding.transcribe import get_parser as pretrained_parser

    return pretrained_parser()


def _onnx_decode_parser() -> argparse.ArgumentParser:
    from zipformer.deploy.onnx_decoding import get_parser as onnx_decode_parser

    return onnx_decode_parser()


def _onnx_pretrained_parser() -> argparse.ArgumentParser:
    from zipformer.onnx_pretrained import get_parser as onnx_pretrained_parser

    return onnx_pretrained_parser()


def _tuner_merge_parser() -> argparse.ArgumentParser:
    from zipformer.tuners.merge_main import get_merge_parser
    from zipformer.tuners.recipes import TunerDecodingRecipe
    from zipformer_lora.lora import LoraTuner

    return get_merge_parser(TunerDecodingRecipe(LoraTuner()))


def _export_parser() -> argparse.ArgumentParser:
    from zipformer.deploy.export import ExportRecipe
    from zipformer.deploy.export import get_parser as export_parser

    return export_parser(ExportRecipe())


@pytest.mark.parametrize(
    "make_parser, flag, value, message",
    [
        (_decode_parser, "--beam-size", "0", "must be >= 1, got 0"),
        (_decode_parser, "--max-sym-per-frame", "0", "must be >= 1, got 0"),
        (_decode_parser, "--context-size", "0", "must be >= 1, got 0"),
        (_decode_parser, "--max-duration", "0", "must be a number > 0, got 0"),
        (_decode_parser, "--epoch", "0", "must be >= 1, got 0"),
        (_decode_parser, "--avg", "0", "must be >= 1, got 0"),
        (_decode_parser, "--iter", "-1", "must be >= 0, got -1"),
        (_decode_parser, "--num-threads", "-1", "must be >= 0, got -1"),
        (_decode_parser, "--chunk-size", "0", "values must be positive or -1, got 0"),
        (_decode_parser, "--chunk-size", "32,-2", "values must be positive or -1, got -2"),
        (_decode_parser, "--left-context-frames", "-5", "values must be >= -1, got -5"),
        (_decode_parser, "--left-context-frames", "x", "expected comma-separated integers such as '2,2,3', got 'x'"),
        (_streaming_decode_parser, "--num-decode-streams", "0", "must be >= 1, got 0"),
        (_streaming_decode_parser, "--beam-size", "0", "must be >= 1, got 0"),
        (_streaming_decode_parser, "--chunk-size", "0", "values must be positive or -1, got 0"),
        (_pretrained_parser, "--beam-size", "0", "must be >= 1, got 0"),
        (_pretrained_parser, "--max-sym-per-frame", "0", "must be >= 1, got 0"),
        (_pretrained_parser, "--context-size", "-1", "must be >= 1, got -1"),
        (_onnx_decode_parser, "--max-duration", "0", "must be a number > 0, got 0"),
        (_onnx_decode_parser, "--num-threads", "0", "must be >= 1, got 0"),
        (_onnx_pretrained_parser, "--batch-size", "0", "must be >= 1, got 0"),
        (_onnx_pretrained_parser, "--num-threads", "0", "must be >= 1, got 0"),
        (_tuner_merge_parser, "--avg", "0", "must be >= 1, got 0"),
        (_export_parser, "--context-size", "0", "must be >= 1, got 0"),
    ],
)
def test_bad_decoding_flags_fail_at_parse_time(make_parser, flag: str, value: str, message: str, capsys):
    with pytest.raises(SystemExit) as exit_info:
        make_parser().parse_args([flag, value])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].endswith(f"argument {flag}: {message}")


def test_good_decoding_flags_parse():
    args = _decode_parser().parse_args(
        ["--beam-size", "1", "--iter", "0", "--num-threads", "0", "--chunk-size", "32,-1", "--left-context-frames", "-1"]
    )
    assert (args.beam_size, args.iter, args.num_threads) == (1, 0, 0)
    assert (args.chunk_size, args.left_context_frames) == ((32, -1), (-1,))


def test_good_numeric_flags_parse():
    args = get_parser(TrainingRecipe()).parse_args(["--max-duration", "0.5", "--save-every-n", "0", "--start-batch", "0"])
    assert (args.max_duration, args.save_every_n, args.start_batch) == (0.5, 0, 0)


def test_adapter_dim_without_adapters_warns(caplog):
    from zipformer.model.flags import add_model_arguments
    from zipformer.tuners.recipes import get_tuned_model
    from zipformer_adapter.adapter import AdapterTuner

    from conftest import TINY_MODEL_FLAGS

    parser = argparse.ArgumentParser()
    add_model_arguments(parser)
    params = AttributeDict(vars(parser.parse_args(TINY_MODEL_FLAGS)))
    params.update(feature_dim=80, vocab_size=40, blank_id=0, context_size=2, use_adapters=False, adapter_dim=4)
    with caplog.at_level("WARNING"):
        get_tuned_model(params, AdapterTuner())
    assert "--adapter-dim 4 is ignored: --use-adapters 0 builds the model without adapters" in caplog.text
