"""The LoRA tuner: counts against icefall, the base exactly when off, merging, and the scripts."""
from pathlib import Path

import onnx
import pytest
import torch

from zipformer.core.params import AttributeDict
from zipformer.training.flags import get_parser as training_parser
from zipformer.tuners.files import load_tuner_file
from zipformer.tuners.recipes import TunerTrainingRecipe, get_tuned_model
from zipformer.tuners.tensors import base_tensors, tuner_disabled
from zipformer_lora.lora import LORA_TARGETS, LoraTuner, merge_lora

from conftest import TINY_MODEL_FLAGS, data_flags, run_script

TUNER = LoraTuner()


def params_of(flags, **overrides) -> AttributeDict:
    params = AttributeDict(vars(training_parser(TunerTrainingRecipe(TUNER)).parse_args(list(map(str, flags)))))
    params.update(feature_dim=80, vocab_size=500, blank_id=0)
    params.update(overrides)
    return params


def encoder_out(model: torch.nn.Module) -> torch.Tensor:
    torch.manual_seed(0)
    x, x_lens = torch.randn(2, 120, 80), torch.tensor([120, 90])
    with torch.no_grad():
        return model.forward_encoder(x, x_lens)[0]


def trained_looking(model: torch.nn.Module) -> torch.nn.Module:
    """Give every lora_B random values, as after training (fresh B is zero)."""
    torch.manual_seed(1)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("lora_B"):
                param.normal_(0.0, 0.05)
    return model.eval()


def test_normal_configuration_counts_match_icefall():
    model = get_tuned_model(params_of([], lora_r=8), TUNER)
    lora = {k: v for k, v in model.state_dict().items() if TUNER.is_tuner_key(k)}
    # icefall's zipformer_lora, r=8 on the normal model: 1.26M trainable parameters.
    assert sum(v.numel() for v in lora.values()) == 1_260_032
    assert len(base_tensors(model.state_dict(), TUNER)) == 743
    assert len(lora) == 2 * len(LORA_TARGETS) * 16  # 16 encoder layers
    assert "encoder.encoders.0.layers.0.self_attn_weights.in_proj.lora_A" in lora


def test_fresh_lora_is_the_base_and_switching_off_gives_it_back():
    base = get_tuned_model(params_of(TINY_MODEL_FLAGS, use_lora=False), TUNER).eval()
    tuned = get_tuned_model(params_of(TINY_MODEL_FLAGS, lora_r=4), TUNER).eval()
    tuned.load_state_dict({**tuned.state_dict(), **base.state_dict()})
    assert torch.equal(encoder_out(tuned), encoder_out(base))
    trained_looking(tuned)
    assert not torch.allclose(encoder_out(tuned), encoder_out(base))
    with tuner_disabled(tuned, TUNER):
        assert torch.equal(encoder_out(tuned), encoder_out(base))


def test_merged_model_is_the_plain_base_shape_and_the_same_function():
    tuned = trained_looking(get_tuned_model(params_of(TINY_MODEL_FLAGS, lora_r=4), TUNER))
    before = encoder_out(tuned)
    base_keys = set(base_tensors(tuned.state_dict(), TUNER))
    assert merge_lora(tuned) == 9 * 6  # 9 targets in each of the 6 layers
    assert set(tuned.state_dict()) == base_keys
    torch.testing.assert_close(encoder_out(tuned), before, rtol=1e-5, atol=1e-5)
    plain = get_tuned_model(params_of(TINY_MODEL_FLAGS, use_lora=False), TUNER).eval()
    plain.load_state_dict(tuned.state_dict(), strict=True)
    torch.testing.assert_close(encoder_out(plain), before, rtol=1e-5, atol=1e-5)


# ---- the scripts, on the tiny corpus -------------------------------------------------------------


@pytest.fixture(scope="module")
def lora_exp(tiny_base_exp: Path, tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("lora")
    base = root / "pretrained.pt"
    checkpoint = torch.load(tiny_base_exp / "epoch-2.pt", weights_only=True)
    torch.save({k: checkpoint[k] for k in ("model", "model_config", "vocabulary")}, base)
    return {"root": root, "base": base, "exp": root / "exp"}


@pytest.fixture(scope="module")
def lora_trained(tiny_corpus, lora_exp) -> dict:
    run_script(
        "zipformer_lora/train.py", "--num-epochs", "2", "--use-lora", "1", "--lora-r", "4", "--do-finetune", "1",
        "--finetune-ckpt", lora_exp["base"], "--exp-dir", lora_exp["exp"], "--base-lr", "0.045",
        "--tensorboard", "0", "--average-period", "2", "--log-interval", "1",
        *data_flags(tiny_corpus, train="target_train"),
    )
    return lora_exp


def hyps(res_dir: Path, pattern: str) -> list:
    files = sorted(res_dir.glob(pattern))
    assert len(files) == 1, (pattern, files)
    return [line for line in files[0].read_text().splitlines() if "hyp=" in line]


@pytest.mark.slow
def test_lora_fine_tune_trains_only_lora_and_writes_small_files(lora_trained):
    exp = lora_trained["exp"]
    log = "\n".join(p.read_text() for p in (exp / "log").glob("log-train-*"))
    assert "trainable parameters (" in log and "lora: --lora-r 4" in log
    base = torch.load(lora_trained["base"], weights_only=True)["model"]
    tuned = torch.load(exp / "epoch-2.pt", weights_only=True)["model"]
    for key, value in base.items():
        assert torch.equal(tuned[key], value), f"frozen weight {key} changed"
    lora_b = [v for k, v in tuned.items() if k.endswith("lora_B")]
    assert lora_b and min(v.abs().max().item() for v in lora_b) > 0, "a lora_B did not train"
    small = load_tuner_file(exp / "lora-epoch-2.pt", TUNER)
    assert small["tuner"] == {"name": "lora", "use_lora": True, "lora_r": 4, "lora_alpha": 4.0}
    assert (exp / "lora-epoch-2.pt").stat().st_size * 5 < (exp / "epoch-2.pt").stat().st_size


@pytest.mark.slow
def test_lora_off_decodes_exactly_like_the_base_and_on_differs(tiny_corpus, lora_trained, tmp_path):
    exp = lora_trained["exp"]
    common = ["--epoch", "2", "--avg", "1", "--use-averaged-model", "0", *data_flags(tiny_corpus)]
    run_script("zipformer_lora/decode.py", "--exp-dir", exp, "--forgetting-report", "1", *common)
    base_exp = tmp_path / "base"
    base_exp.mkdir()
    (base_exp / "epoch-2.pt").write_bytes(lora_trained["base"].read_bytes())
    run_script("zipformer/decode.py", "--exp-dir", base_exp, *common)
    for test_set in ("source", "target"):
        off = hyps(exp / "greedy_search", f"recogs-{test_set}-*-lora-off.txt")
        assert off == hyps(base_exp / "greedy_search", f"recogs-{test_set}-*.txt")
    assert list((exp / "greedy_search").glob("forgetting-report-*-lora-r-4.txt"))


@pytest.mark.slow
def test_merged_checkpoint_decodes_like_the_unmerged_model(tiny_corpus, lora_trained, tmp_path):
    exp = lora_trained["exp"]
    merged_exp = tmp_path / "merged"
    run_script("zipformer_lora/merge.py", "--epoch", "2", "--avg", "1", "--use-averaged-model", "0",
               "--exp-dir", exp, "--out", merged_exp / "epoch-2.pt")
    merged = torch.load(merged_exp / "epoch-2.pt", weights_only=True)
    assert not [k for k in merged["model"] if "lora" in k] and "use_lora" not in merged["model_config"]
    common = ["--epoch", "2", "--avg", "1", "--use-averaged-model", "0", *data_flags(tiny_corpus)]
    run_script("zipformer_lora/decode.py", "--exp-dir", exp, *common)
    run_script("zipformer/decode.py", "--exp-dir", merged_exp, *common)
    for test_set in ("source", "target"):
        assert hyps(merged_exp / "greedy_search", f"recogs-{test_set}-*.txt") == hyps(
            exp / "greedy_search", f"recogs-{test_set}-*-lora-r-4.txt"
        )


@pytest.mark.slow
def test_merged_onnx_has_no_lora_and_sherpa_onnx_decodes_it(tiny_corpus, lora_trained):
    exp = lora_trained["exp"]
    run_script("zipformer_lora/export-onnx.py", "--tokens", tiny_corpus["tokens"], "--use-averaged-model", "0",
               "--epoch", "2", "--avg", "1", "--exp-dir", exp, "--merge-lora", "1")
    encoder = exp / "encoder-epoch-2-avg-1-lora-merged.onnx"
    graph = onnx.load(str(encoder)).graph
    assert not [i.name for i in graph.initializer if "lora" in i.name.lower()]
    assert {p.key: p.value for p in onnx.load(str(encoder)).metadata_props}["lora_merged"] == "1"
    run_script("zipformer_lora/decode.py", "--exp-dir", exp, "--epoch", "2", "--avg", "1",
               "--use-averaged-model", "0", *data_flags(tiny_corpus))
    run_script(
        "zipformer/onnx_decode.py", "--runtime", "sherpa-onnx", "--encoder-model-filename", encoder,
        "--decoder-model-filename", exp / "decoder-epoch-2-avg-1-lora-merged.onnx",
        "--joiner-model-filename", exp / "joiner-epoch-2-avg-1-lora-merged.onnx", "--tokens", tiny_corpus["tokens"],
        "--num-threads", "1", "--test-cuts", f"target={tiny_corpus['target_test']}", "--exp-dir", exp / "sherpa",
    )
    torch_hyps = hyps(exp / "greedy_search", "recogs-target-*-lora-r-4.txt")
    assert hyps(exp / "sherpa" / "greedy_search", "recogs-target-*.txt") == torch_hyps
