"""The model configuration stored in checkpoints against the command line, and the vocabulary check."""
import argparse

import pytest

from zipformer.checkpoints.config import apply_model_config, flags_given, model_config
from zipformer.checkpoints.vocabulary import check_vocabulary, tokens_vocabulary, vocabulary_of
from zipformer.core.errors import UserError
from zipformer.core.params import AttributeDict
from zipformer.model.flags import MODEL_CONFIG_KEYS, add_model_arguments


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser()
    add_model_arguments(parser)
    parser.add_argument("--context-size", type=int, default=2)
    parser.add_argument("--use-adapters", type=int, default=1)
    parser.add_argument("--adapter-dim", type=int, default=16)
    return parser


def _params(argv: list) -> tuple:
    parser = _parser()
    return AttributeDict(vars(parser.parse_args(argv))), flags_given(parser, argv)


KEYS = MODEL_CONFIG_KEYS + ("use_adapters", "adapter_dim")


def test_the_model_flags_and_the_decoder_context_are_stored():
    assert {"encoder_dim", "num_encoder_layers", "causal", "decoder_dim", "context_size"} <= set(MODEL_CONFIG_KEYS)
    # Chosen anew at decode time (a causal model decodes with any one chunk size).
    assert not {"chunk_size", "left_context_frames"} & set(MODEL_CONFIG_KEYS)
    params, _ = _params(["--encoder-dim", "32,32,48,48,48,32"])
    stored = model_config(params, KEYS)
    assert stored["encoder_dim"] == [32, 32, 48, 48, 48, 32] and stored["adapter_dim"] == 16


def test_flags_given_are_only_the_typed_ones():
    _, given = _params(["--encoder-dim", "32,32,48,48,48,32", "--causal", "0"])
    assert given == {"encoder_dim", "causal"}


def test_stored_values_replace_the_defaults():
    trained, _ = _params(["--encoder-dim", "32,32,48,48,48,32", "--adapter-dim", "8"])
    stored = model_config(trained, KEYS)
    params, given = _params([])
    apply_model_config(params, stored, given, "epoch-3.pt", KEYS, off_switches=("use_adapters",))
    assert params.encoder_dim == (32, 32, 48, 48, 48, 32) and params.adapter_dim == 8


def test_a_contradicting_flag_is_a_one_line_error_that_names_both_values():
    trained, _ = _params(["--encoder-dim", "32,32,48,48,48,32"])
    params, given = _params(["--encoder-dim", "64,64,64,64,64,64"])
    with pytest.raises(UserError) as err:
        apply_model_config(params, model_config(trained, KEYS), given, "epoch-3.pt", KEYS)
    message = str(err.value)
    assert "--encoder-dim 64,64,64,64,64,64 contradicts epoch-3.pt" in message
    assert "--encoder-dim 32,32,48,48,48,32" in message and "drop the flag" in message


def test_an_agreeing_flag_and_an_off_switch_are_accepted():
    trained, _ = _params(["--adapter-dim", "8"])
    stored = model_config(trained, KEYS)
    params, given = _params(["--adapter-dim", "8", "--use-adapters", "0"])
    apply_model_config(params, stored, given, "epoch-3.pt", KEYS, off_switches=("use_adapters",))
    assert params.use_adapters == 0 and params.adapter_dim == 8
    # ... but a tuner cannot be switched on where the checkpoint has none.
    untuned = dict(stored, use_adapters=0)
    params, given = _params(["--use-adapters", "1"])
    with pytest.raises(UserError, match="--use-adapters 1 contradicts"):
        apply_model_config(params, untuned, given, "epoch-3.pt", KEYS, off_switches=("use_adapters",))


def test_a_file_without_configuration_leaves_the_flags_in_charge():
    params, given = _params(["--encoder-dim", "64,64,64,64,64,64"])
    apply_model_config(params, None, given, "pretrained.pt", KEYS)
    assert params.encoder_dim == (64,) * 6


def test_keys_of_other_recipes_are_not_taken():
    trained, _ = _params(["--adapter-dim", "8"])
    params, given = _params([])
    params.adapter_dim = 99
    apply_model_config(params, model_config(trained, KEYS), given, "epoch-3.pt", MODEL_CONFIG_KEYS)
    assert params.adapter_dim == 99


def test_vocabulary_fingerprint_tells_token_tables_apart(caplog):
    pieces = ["<blk>", "<sos/eos>", "<unk>", "\u2581THE", "S"]
    vocabulary = vocabulary_of(pieces)
    assert tokens_vocabulary(dict(enumerate(pieces))) == vocabulary
    check_vocabulary(vocabulary, vocabulary_of(list(pieces)), "epoch-1.pt", "--bpe-model a")
    swapped = pieces[:3] + ["S", "\u2581THE"]
    with pytest.raises(UserError, match="another BPE model of the same size"):
        check_vocabulary(vocabulary, vocabulary_of(swapped), "epoch-1.pt", "--bpe-model b")
    with pytest.raises(UserError, match="5 tokens but --bpe-model c has 6"):
        check_vocabulary(vocabulary, vocabulary_of(pieces + ["X"]), "epoch-1.pt", "--bpe-model c")
    check_vocabulary(None, vocabulary, "icefall.pt", "--bpe-model a")
    check_vocabulary(None, vocabulary, "icefall.pt", "--bpe-model a")
    assert caplog.text.count("records no vocabulary fingerprint") == 1
