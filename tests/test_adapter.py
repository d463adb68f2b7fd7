"""The adapter recipe: module, injection, counts, freezing, checkpoints, train/decode scripts."""
from pathlib import Path

import pytest
import torch

from zipformer.checkpoints.checkpoint import LoadedWeights
from zipformer.core.errors import UserError
from zipformer.core.params import AttributeDict
from zipformer.data.default_cuts import default_cuts
from zipformer.training.flags import get_parser as training_parser
from zipformer.tuners.files import base_fingerprint, load_tuner_file
from zipformer.tuners.recipes import TunerDecodingRecipe, TunerTrainingRecipe, get_tuned_model
from zipformer.tuners.tensors import freeze_all_but_tuner, tuner_disabled
from zipformer_adapter.adapter import AdapterModule, AdapterTuner, is_adapter_key

from conftest import TINY_MODEL_FLAGS, data_flags, run_script

TUNER = AdapterTuner()


def get_model(params: AttributeDict) -> torch.nn.Module:
    return get_tuned_model(params, TUNER)


def model_params(flags, **overrides) -> AttributeDict:
    args = training_parser(TunerTrainingRecipe(TUNER)).parse_args(list(map(str, flags)))
    params = AttributeDict(vars(args))
    params.update(feature_dim=80, vocab_size=500, blank_id=0)
    params.update(overrides)
    return params


def encoder_output(model, seed: int = 0) -> torch.Tensor:
    torch.manual_seed(seed)
    x = torch.randn(2, 120, 80)
    x_lens = torch.tensor([120, 90])
    with torch.no_grad():
        out, _ = model.forward_encoder(x, x_lens)
    return out


@pytest.fixture(scope="module")
def normal_models():
    """The normal (icefall LibriSpeech) configuration with adapters of dim 8, 16 and 32."""
    return {dim: get_model(model_params([], adapter_dim=dim)) for dim in (8, 16, 32)}


@pytest.mark.parametrize("dim, trainable, total", [(8, 392_192, 65_941_203), (16, 761_344, 66_310_355), (32, 1_499_648, 67_048_659)])
def test_trainable_counts_match_the_reference(normal_models, dim, trainable, total):
    model = normal_models[dim]
    assert sum(p.numel() for n, p in model.named_parameters() if is_adapter_key(n)) == trainable
    assert sum(p.numel() for p in model.parameters()) == total
    assert f"{100 * trainable / total:.3f}" == {8: "0.595", 16: "1.148", 32: "2.237"}[dim]


def test_adapter_state_dict_matches_icefall_keys_and_order(normal_models, reference_data: Path):
    rows = [line.split("\t") for line in (reference_data / "icefall_state_dict_adapter16.tsv").read_text().splitlines()]
    state = normal_models[16].state_dict()
    assert list(state) == [r[0] for r in rows]
    for key, shape, _ in rows:
        assert str(tuple(state[key].shape)) == shape, key


def test_adapter_module_is_residual_bottleneck_and_zero_init_is_identity():
    adapter = AdapterModule(12, 3)
    assert adapter.in_proj.weight.shape == (3, 12) and adapter.out_proj.weight.shape == (12, 3)
    x = torch.randn(5, 2, 12)
    assert torch.equal(adapter(x), x)
    icefall = AdapterModule(12, 3, init="icefall")
    assert not torch.allclose(icefall(x), x)
    with pytest.raises(ValueError):
        AdapterModule(12, 3, init="xavier")


def test_fresh_zero_init_adapters_leave_the_output_unchanged():
    base_params = model_params(TINY_MODEL_FLAGS, use_adapters=False)
    torch.manual_seed(0)
    base = get_model(base_params).eval()
    adapted = get_model(model_params(TINY_MODEL_FLAGS, use_adapters=True, adapter_dim=4)).eval()
    adapted.load_state_dict({**adapted.state_dict(), **base.state_dict()})
    assert torch.equal(encoder_output(base), encoder_output(adapted))


def test_adapters_can_be_switched_off_without_rebuilding():
    model = get_model(model_params(TINY_MODEL_FLAGS, adapter_dim=4, adapter_init="icefall")).eval()
    base = get_model(model_params(TINY_MODEL_FLAGS, use_adapters=False)).eval()
    base.load_state_dict({k: v for k, v in model.state_dict().items() if not is_adapter_key(k)})
    with_adapters = encoder_output(model)
    with tuner_disabled(model, TUNER):
        assert torch.equal(encoder_output(model), encoder_output(base))
    assert torch.equal(encoder_output(model), with_adapters)
    assert not torch.allclose(with_adapters, encoder_output(base))


def test_use_adapters_0_loads_the_original_model_from_an_adapter_checkpoint():
    adapted = get_model(model_params(TINY_MODEL_FLAGS, adapter_dim=4, adapter_init="icefall")).eval()
    recipe = TunerDecodingRecipe(TUNER)
    params = model_params(TINY_MODEL_FLAGS, use_adapters=False)
    off = get_model(params).eval()
    recipe.load_weights(off, LoadedWeights(adapted.state_dict(), "", "the checkpoint"), params)
    with tuner_disabled(adapted, TUNER):
        assert torch.equal(encoder_output(off), encoder_output(adapted))


def test_decoding_with_the_wrong_adapter_dim_is_refused():
    adapted = get_model(model_params(TINY_MODEL_FLAGS, adapter_dim=4))
    params = model_params(TINY_MODEL_FLAGS, adapter_dim=8)
    with pytest.raises(UserError, match="pass --adapter-dim 4"):
        TunerDecodingRecipe(TUNER).load_weights(get_model(params), LoadedWeights(adapted.state_dict(), "", "ckpt"), params)


def test_without_data_flags_the_recipe_fine_tunes_on_the_new_domain(tmp_path: Path):
    what, train, valid = default_cuts(tmp_path)
    assert what == "the embedded target domain" and train == str(tmp_path / "target_cuts_train.jsonl.gz")
    assert valid == f"source={tmp_path / 'source_cuts_dev.jsonl.gz'},target={tmp_path / 'target_cuts_dev.jsonl.gz'}"
    for name in ("cuts_S.jsonl.gz", "cuts_DEV.jsonl.gz", "librispeech_cuts_dev-clean.jsonl.gz"):
        (tmp_path / name).write_bytes(b"")
    what, train, valid = default_cuts(tmp_path)
    assert what == "GigaSpeech" and train == str(tmp_path / "cuts_S.jsonl.gz")
    assert valid.startswith("librispeech=") and f"gigaspeech={tmp_path / 'cuts_DEV.jsonl.gz'}" in valid
    params = model_params(["--manifest-dir", tmp_path, "--valid-cuts", "mine=x.jsonl.gz"])
    TunerTrainingRecipe(TUNER).choose_data(params)
    assert params.train_cuts == str(tmp_path / "cuts_S.jsonl.gz") and params.valid_cuts == "mine=x.jsonl.gz"


# ---- the scripts, on the tiny corpus -------------------------------------------------------------

def finetune(corpus: dict, base_ckpt: Path, exp_dir: Path, *extra: str, check: bool = True):
    """The seed tutorial's flags, with paths adapted to the tiny corpus; no shape flags: the base
    model file carries its configuration."""
    return run_script(
        "zipformer_adapter/train.py",
        "--num-epochs", "2", "--start-epoch", "1", "--use-fp16", "1", "--base-lr", "0.045",
        "--use-adapters", "1", "--adapter-dim", "4", "--do-finetune", "1", "--master-port", "13022",
        "--finetune-ckpt", base_ckpt, "--exp-dir", exp_dir,
        "--tensorboard", "0", "--average-period", "2", "--log-interval", "1",
        *data_flags(corpus, train="target_train"),
        *extra,
        check=check,
    )


@pytest.fixture(scope="module")
def base_ckpt(tiny_base_exp: Path, tmp_path_factory) -> Path:
    """The tiny base model as this project ships one: icefall's {'model': state_dict}, plus its
    model configuration and vocabulary."""
    path = tmp_path_factory.mktemp("pretrained") / "pretrained.pt"
    checkpoint = torch.load(tiny_base_exp / "epoch-2.pt", map_location="cpu", weights_only=True)
    torch.save({k: checkpoint[k] for k in ("model", "model_config", "vocabulary")}, path)
    return path


@pytest.fixture(scope="module")
def adapter_exp(tiny_corpus, base_ckpt: Path, tmp_path_factory) -> Path:
    exp_dir = tmp_path_factory.mktemp("adapter_exp")
    finetune(tiny_corpus, base_ckpt, exp_dir)
    return exp_dir


@pytest.mark.slow
def test_finetune_logs_counts_and_keeps_the_base_bit_identical(adapter_exp: Path, base_ckpt: Path):
    log = "\n".join(p.read_text() for p in (adapter_exp / "log").glob("log-train-*"))
    assert "Number of model parameters:" in log
    assert "trainable parameters (" in log and "% of the whole model)" in log
    base = torch.load(base_ckpt, weights_only=True)["model"]
    tuned = torch.load(adapter_exp / "epoch-2.pt", weights_only=True)["model"]
    assert {k for k in tuned if not is_adapter_key(k)} == set(base)
    for key, value in base.items():
        assert torch.equal(tuned[key], value), f"frozen weight {key} changed"
    # The zero-initialised out_proj must really move (ScaledAdam alone would keep it near zero).
    out_proj = [tuned[k] for k in tuned if is_adapter_key(k) and k.endswith("out_proj.weight")]
    # Measured: about 3e-4 after these few steps; without the step floor it stays below 5e-6.
    assert min(w.abs().max().item() for w in out_proj) > 5e-5, "an adapter's out_proj barely trained"


@pytest.mark.slow
def test_adapter_only_checkpoints_are_small_and_self_describing(adapter_exp: Path, base_ckpt: Path):
    full = adapter_exp / "epoch-2.pt"
    small = adapter_exp / "adapter-epoch-2.pt"
    assert small.stat().st_size * 5 < full.stat().st_size
    checkpoint = load_tuner_file(small, TUNER)
    assert checkpoint["tuner"] == {"name": "adapters", "use_adapters": True, "adapter_dim": 4}
    assert checkpoint["model_config"]["adapter_dim"] == 4 and checkpoint["vocabulary"]["size"] == 40
    assert checkpoint["base_fingerprint"] == base_fingerprint(torch.load(base_ckpt, weights_only=True)["model"], TUNER)
    assert set(checkpoint["model"]) == set(checkpoint["model_avg"])
    assert all(is_adapter_key(k) for k in checkpoint["model"]) and TUNER.size_of(checkpoint["model"]) == 4


def decode_adapters(corpus: dict, exp_dir: Path, *extra: str, check: bool = True):
    return run_script(
        "zipformer_adapter/decode.py", "--exp-dir", exp_dir, "--max-sym-per-frame", "1",
        *data_flags(corpus), *extra, check=check,
    )


def hyps_of(res_dir: Path, pattern: str) -> str:
    files = sorted(res_dir.glob(pattern))
    assert len(files) == 1, (pattern, files)
    return "\n".join(line for line in files[0].read_text().splitlines() if "hyp=" in line)


@pytest.mark.slow
def test_adapters_off_decodes_exactly_like_the_base(tiny_corpus, adapter_exp: Path, base_ckpt: Path, tmp_path: Path):
    decode_adapters(tiny_corpus, adapter_exp, "--epoch", "2", "--avg", "1", "--use-averaged-model", "0", "--use-adapters", "0")
    base_exp = tmp_path / "base"
    base_exp.mkdir()
    (base_exp / "epoch-2.pt").write_bytes(base_ckpt.read_bytes())
    run_script("zipformer/decode.py", "--exp-dir", base_exp, "--epoch", "2", "--avg", "1", "--use-averaged-model", "0",
               *data_flags(tiny_corpus))
    for test_set in ("source", "target"):
        off = hyps_of(adapter_exp / "greedy_search", f"recogs-{test_set}-*-adapters-off.txt")
        base = hyps_of(base_exp / "greedy_search", f"recogs-{test_set}-*.txt")
        assert off == base


@pytest.mark.slow
def test_adapter_only_file_on_the_base_equals_the_full_checkpoint(tiny_corpus, adapter_exp: Path, base_ckpt: Path):
    decode_adapters(tiny_corpus, adapter_exp, "--epoch", "2", "--avg", "1", "--use-averaged-model", "0",
                    "--use-adapters", "1", "--adapter-dim", "4")
    full = hyps_of(adapter_exp / "greedy_search", "recogs-target-*epoch-2-avg-1-*-adapters-dim-4.txt")
    for f in (adapter_exp / "greedy_search").glob("recogs-*"):
        f.unlink()
    decode_adapters(tiny_corpus, adapter_exp, "--epoch", "2", "--avg", "1", "--use-averaged-model", "0",
                    "--use-adapters", "1", "--adapter-dim", "4",
                    "--base-ckpt", base_ckpt, "--adapter-ckpt", adapter_exp / "adapter-epoch-2.pt")
    assert hyps_of(adapter_exp / "greedy_search", "recogs-target-*-adapters-dim-4.txt") == full


@pytest.mark.slow
def test_averaging_adapter_only_files_and_the_forgetting_report(tiny_corpus, adapter_exp: Path, base_ckpt: Path):
    decode_adapters(tiny_corpus, adapter_exp, "--epoch", "2", "--avg", "1", "--use-averaged-model", "1",
                    "--use-adapters", "1", "--adapter-dim", "4", "--base-ckpt", base_ckpt, "--forgetting-report", "1")
    reports = list((adapter_exp / "greedy_search").glob("forgetting-report-*.txt"))
    assert len(reports) == 1
    lines = reports[0].read_text().splitlines()
    assert lines[0].startswith("test set\tadapters off (base)\tadapters on")
    assert {line.split("\t")[0] for line in lines[1:]} == {"source", "target"}


@pytest.mark.slow
def test_resuming_needs_no_flag_flip(tiny_corpus, adapter_exp: Path, base_ckpt: Path, tmp_path: Path):
    (tmp_path / "epoch-1.pt").write_bytes((adapter_exp / "epoch-1.pt").read_bytes())
    finetune(tiny_corpus, base_ckpt, tmp_path, "--start-epoch", "2")
    log = "\n".join(p.read_text() for p in (tmp_path / "log").glob("log-train-*"))
    assert "not from --finetune-ckpt" in log
    resumed = torch.load(tmp_path / "epoch-2.pt", weights_only=True)["model"]
    straight = torch.load(adapter_exp / "epoch-2.pt", weights_only=True)["model"]
    for key, value in straight.items():
        torch.testing.assert_close(resumed[key], value, rtol=1e-5, atol=1e-6, msg=key)


@pytest.mark.slow
def test_adapter_checkpoint_files_decode_at_any_iter(tiny_corpus, base_ckpt: Path, tmp_path: Path):
    """--iter N takes the newest adapter-checkpoint-*.pt at or below N, as the full-checkpoint averaging does."""
    finetune(tiny_corpus, base_ckpt, tmp_path, "--num-epochs", "1", "--save-every-n", "1",
             "--train-cuts", tiny_corpus["source_train"])
    numbers = sorted(int(p.stem.rsplit("-", 1)[1]) for p in tmp_path.glob("adapter-checkpoint-*.pt"))
    assert len(numbers) >= 2
    decode_adapters(tiny_corpus, tmp_path, "--iter", str(numbers[-1] + 5), "--avg", "1", "--use-averaged-model", "0",
                    "--base-ckpt", base_ckpt)
    assert list((tmp_path / "greedy_search").glob(f"recogs-target-*iter-{numbers[-1] + 5}-avg-1-*-adapters-dim-4.txt"))


@pytest.mark.slow
def test_ddp_adapter_finetune_with_gloo(tiny_corpus, base_ckpt: Path, tmp_path: Path):
    # The source training set: the 4-cut target set is too small to give both ranks a batch.
    finetune(tiny_corpus, base_ckpt, tmp_path, "--num-epochs", "1", "--world-size", "2", "--master-port", "29533",
             "--train-cuts", tiny_corpus["source_train"])
    assert (tmp_path / "epoch-1.pt").is_file() and (tmp_path / "adapter-epoch-1.pt").is_file()


@pytest.mark.slow
@pytest.mark.parametrize(
    "make_args, message",
    [
        (lambda base, tmp: ["--finetune-ckpt", tmp / "missing.pt"], "not found"),
        (lambda base, tmp: ["--finetune-ckpt", "", "--do-finetune", "1"], "needs --finetune-ckpt"),
        (lambda base, tmp: ["--encoder-dim", "32,32,48,48,48,48"], "--encoder-dim 32,32,48,48,48,48 contradicts"),
    ],
)
def test_finetune_bad_input_is_one_clear_line(tiny_corpus, base_ckpt: Path, tmp_path: Path, make_args, message):
    proc = finetune(tiny_corpus, base_ckpt, tmp_path / "exp", "--num-epochs", "1", *make_args(base_ckpt, tmp_path), check=False)
    assert proc.returncode != 0
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and message in last, proc.stderr[-2000:]


def test_adapter_gradients_are_finite_with_the_frozen_body_in_eval_mode(tiny_corpus):
    """The pilot's hazard: NaN adapter gradients when the frozen body ran in eval mode.

    Here the frozen body in eval mode is the plain inference function (no regulariser acts in
    backward) and the pure-PyTorch loss keeps occupations finite, so adapter gradients are finite.
    """
    import sentencepiece as spm
    from lhotse import load_manifest

    torch.manual_seed(0)
    model = get_model(model_params(TINY_MODEL_FLAGS, adapter_dim=4, adapter_init="icefall", vocab_size=40))
    freeze_all_but_tuner(model, TUNER)
    TUNER.set_train_mode(model)
    assert not any(m.training for n, m in model.named_modules() if "adapter" not in n)
    sp = spm.SentencePieceProcessor(model_file=str(tiny_corpus["bpe_model"]))
    cuts = load_manifest(tiny_corpus["target_train"])
    feats = [torch.from_numpy(c.load_features()) for c in cuts]
    x = torch.nn.utils.rnn.pad_sequence(feats, batch_first=True, padding_value=-23.0)
    x_lens = torch.tensor([f.shape[0] for f in feats])
    y = sp.encode([c.supervisions[0].text for c in cuts], out_type=int)
    simple, pruned = model(x, x_lens, y, prune_range=5, am_scale=0.0, lm_scale=0.25)
    (0.5 * simple + pruned).backward()
    grads = [p.grad for n, p in model.named_parameters() if is_adapter_key(n)]
    assert grads and all(g is not None and torch.isfinite(g).all() for g in grads)
    assert sum(g.abs().sum() for g in grads) > 0
    assert all(p.grad is None for n, p in model.named_parameters() if not is_adapter_key(n))


@pytest.mark.slow
def test_keep_last_k_prunes_the_adapter_only_twins_too(tiny_corpus, base_ckpt: Path, tmp_path: Path):
    finetune(tiny_corpus, base_ckpt, tmp_path, "--num-epochs", "3", "--save-every-n", "1", "--keep-last-k", "2")
    full = sorted(p.name for p in tmp_path.glob("checkpoint-*.pt"))
    adapter_only = sorted(p.name.removeprefix("adapter-") for p in tmp_path.glob("adapter-checkpoint-*.pt"))
    assert len(full) == 2 and adapter_only == full, (full, adapter_only)
