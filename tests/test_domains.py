"""Several domains on one base: stacked tuners applied per utterance, the registry's checks, the
decode/pretrained scripts and the one ONNX encoder for every domain."""
import argparse
import re
from pathlib import Path
from types import SimpleNamespace
from typing import Dict, List, Sequence

import numpy as np
import onnx
import pytest
import torch
from lhotse import CutSet
from test_onnx_export import load_script, restored_root_logging, run_main

from zipformer.checkpoints.config import flags_given, model_config
from zipformer.checkpoints.vocabulary import tokens_vocabulary
from zipformer.core.errors import UserError
from zipformer.core.params import AttributeDict
from zipformer.data.domain_names import domain_index, parse_tuners
from zipformer.decoding import session as decoding
from zipformer.decoding import transcribe as pretrained
from zipformer.decoding.beam_search import greedy_search_batch, modified_beam_search
from zipformer.deploy import onnx_decoding as onnx_decode
from zipformer.deploy.export import read_metadata
from zipformer.deploy.inference import OnnxTransducer, pad_features, read_tokens
from zipformer.model.builder import get_model as get_base_model
from zipformer.model.flags import add_model_arguments
from zipformer.onnx_pretrained import transcribe as onnx_transcribe
from zipformer.tuners.decode_main import TunerDecodeRecipe, decode_domains
from zipformer.tuners.domains import DomainRegistry, DomainsRecipe, load_domains
from zipformer.tuners.files import save_tuner_file
from zipformer.tuners.pretrained_main import TunerPretrainedRecipe
from zipformer.tuners.pretrained_main import transcribe as tuner_transcribe
from zipformer.tuners.recipes import TunerDecodingRecipe, get_tuned_model
from zipformer.tuners.stacking import domains_selected
from zipformer.tuners.tensors import base_tensors
from zipformer_adapter.adapter import AdapterTuner
from zipformer_lora.lora import LoraTuner

from conftest import REPO_DIR, TINY_MODEL_FLAGS, data_flags, run_script

LETTERS = [chr(c) for c in range(ord("A"), ord("Z") + 1)]
SYMBOLS = ["<blk>", "<sos/eos>", "<unk>", "\u2581"] + LETTERS + ["\u2581" + c for c in LETTERS[:10]]
TUNERS = {"adapters": AdapterTuner(), "lora": LoraTuner()}
# Two domains per tuner, of different sizes (the smaller is zero-padded in the stack).
SIZES = {"adapters": {"call": 4, "medical": 8}, "lora": {"call": 2, "medical": 4}}
LENGTHS = (163, 117, 96)
DOMAINS_OF_ROWS = ["call", "medical", "base"]


def model_params(tuner_name: str = "", size: int = 0) -> AttributeDict:
    parser = argparse.ArgumentParser()
    add_model_arguments(parser)
    params = AttributeDict(vars(parser.parse_args(TINY_MODEL_FLAGS)))
    params.update(feature_dim=80, vocab_size=len(SYMBOLS), blank_id=0, context_size=2)
    for name, tuner in TUNERS.items():
        params[tuner.switch] = name == tuner_name
        params[tuner.size] = size or tuner.size_default
    params.lora_alpha = 4.0
    return params


def tuned_model(tuner_name: str, size: int, base_state: Dict[str, torch.Tensor]) -> torch.nn.Module:
    """A one-domain model: the base weights plus a fresh tuner of `size`, given random
    non-zero up-projections so that every domain computes something else."""
    tuner = TUNERS[tuner_name]
    model = get_tuned_model(model_params(tuner_name, size), tuner)
    model.load_state_dict({**model.state_dict(), **base_state})
    with torch.no_grad():
        for name, param in model.named_parameters():
            if tuner.is_tuner_key(name):
                param.normal_(0.0, 0.1)
    return model.eval()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> SimpleNamespace:
    """base.pt, two tuner-only files per tuner (call, medical), tokens.txt and the one-domain models."""
    root = tmp_path_factory.mktemp("domains")
    torch.manual_seed(0)
    base = get_base_model(model_params())
    with torch.no_grad():
        base.joiner.output_linear.weight.mul_(4.0)  # varied (random) transcripts
    base_state = base.state_dict()
    vocabulary = tokens_vocabulary(dict(enumerate(SYMBOLS)))
    torch.save({"model": base_state, "model_config": model_config(model_params(), TunerDecodingRecipe(TUNERS["adapters"]).config_keys), "vocabulary": vocabulary}, root / "base.pt")
    (root / "tokens.txt").write_text("".join(f"{s} {i}\n" for i, s in enumerate(SYMBOLS)), encoding="utf-8")
    files: Dict[str, Dict[str, Path]] = {}
    models: Dict[str, Dict[str, torch.nn.Module]] = {}
    for tuner_name, sizes in SIZES.items():
        tuner = TUNERS[tuner_name]
        files[tuner_name], models[tuner_name] = {}, {}
        for domain, size in sizes.items():
            model = tuned_model(tuner_name, size, base_state)
            info = {
                "batch_idx_train": 10,
                "average_period": 1,
                "model_config": model_config(model_params(tuner_name, size), TunerDecodingRecipe(tuner).config_keys),
                "vocabulary": vocabulary,
            }
            files[tuner_name][domain] = root / f"{tuner.file_prefix}{domain}.pt"
            save_tuner_file(files[tuner_name][domain], model, None, info, tuner)
            models[tuner_name][domain] = model
    return SimpleNamespace(root=root, base=base.eval(), base_state=base_state, files=files, models=models)


def tuners_spec(files: Dict[str, Path]) -> str:
    return ",".join(f"{name}={path}" for name, path in files.items())


def stacked_model(tiny, tuner_name: str) -> torch.nn.Module:
    tuner = TUNERS[tuner_name]
    registry = DomainRegistry(tuner, load_domains(tuners_spec(tiny.files[tuner_name]), tuner, tiny.base_state, "base.pt"))
    model = get_base_model(model_params())
    registry.stack_into(model)
    model.load_state_dict({**model.state_dict(), **tiny.base_state})
    return model.eval()


def features(seed: int = 0, lengths: Sequence[int] = LENGTHS) -> List[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.normal(-6.0, 3.0, size=(n, 80)).astype(np.float32) for n in lengths]


@torch.no_grad()
def encode(model, feats: Sequence[np.ndarray]):
    x, x_lens = pad_features(feats)
    return model.forward_encoder(torch.from_numpy(x), torch.from_numpy(x_lens))


@torch.no_grad()
def hypotheses(model, encoder_out, encoder_out_lens) -> Dict[str, List[List[int]]]:
    return {
        "greedy_search": greedy_search_batch(model, encoder_out, encoder_out_lens),
        "modified_beam_search": modified_beam_search(model, encoder_out, encoder_out_lens, beam=4),
    }


def one_domain_model(tiny, tuner_name: str, domain: str) -> torch.nn.Module:
    return tiny.base if domain == "base" else tiny.models[tuner_name][domain]


@pytest.mark.parametrize("tuner_name", list(TUNERS))
def test_a_mixed_batch_equals_each_domain_decoded_alone(tiny, tuner_name):
    model = stacked_model(tiny, tuner_name)
    feats = features()
    names = list(SIZES[tuner_name])
    index = torch.tensor([domain_index(d, names, "test") for d in DOMAINS_OF_ROWS])
    with domains_selected(model, TUNERS[tuner_name], index):
        encoder_out, encoder_out_lens = encode(model, feats)
        mixed = hypotheses(model, encoder_out, encoder_out_lens)
    for row, domain in enumerate(DOMAINS_OF_ROWS):
        alone = one_domain_model(tiny, tuner_name, domain)
        out, lens = encode(alone, feats[row : row + 1])
        assert lens[0] == encoder_out_lens[row]
        torch.testing.assert_close(encoder_out[row : row + 1, : lens[0]], out, atol=2e-5, rtol=1e-5)
        for method, hyps in hypotheses(alone, out, lens).items():
            assert mixed[method][row] == hyps[0], (domain, method)
    # the domains differ from each other and from the base
    assert len({tuple(h) for h in mixed["greedy_search"]}) == 3


@pytest.mark.parametrize("tuner_name", list(TUNERS))
def test_base_rows_are_the_base_model_bit_exactly(tiny, tuner_name):
    model = stacked_model(tiny, tuner_name)
    feats = features(seed=1)
    with domains_selected(model, TUNERS[tuner_name], torch.tensor([-1, 0, -1])):
        mixed, _ = encode(model, feats)
    base, _ = encode(tiny.base, feats)
    assert torch.equal(mixed[0], base[0]) and torch.equal(mixed[2], base[2])
    assert not torch.allclose(mixed[1], base[1])
    with domains_selected(model, TUNERS[tuner_name], torch.tensor([-1, -1, -1])):
        assert torch.equal(encode(model, feats)[0], base)


# The stacked adapters' names -> the one-domain AdapterModule's.
ADAPTER_NAMES = {"in_weight": "in_proj.weight", "in_bias": "in_proj.bias", "out_weight": "out_proj.weight", "out_bias": "out_proj.bias"}


@pytest.mark.parametrize("tuner_name", list(TUNERS))
def test_smaller_domains_are_zero_padded_to_the_largest(tiny, tuner_name):
    model = stacked_model(tiny, tuner_name)
    stacked = {k: v for k, v in model.state_dict().items() if TUNERS[tuner_name].is_tuner_key(k)}
    own = tiny.models[tuner_name]["call"].state_dict()
    large = SIZES[tuner_name]["medical"]
    for key, value in stacked.items():
        prefix, _, last = key.rpartition(".")
        tensor = own[f"{prefix}.{ADAPTER_NAMES[last]}" if tuner_name == "adapters" else key]
        padded = torch.zeros_like(value[0])
        padded[tuple(slice(0, n) for n in tensor.shape)] = tensor
        assert value.shape[0] == 2 and torch.equal(value[0], padded), key
        assert value.shape[1:] == tiny.models[tuner_name]["medical"].state_dict()[
            f"{prefix}.{ADAPTER_NAMES[last]}" if tuner_name == "adapters" else key
        ].shape
    assert any(large in v.shape for v in stacked.values())


def test_a_model_of_several_domains_needs_the_index(tiny):
    model = stacked_model(tiny, "adapters")
    with pytest.raises(RuntimeError, match="domains_selected"):
        encode(model, features())


# ---- the registry's one-line errors --------------------------------------------------------------


def registry_error(tiny, tuner_name: str, spec: str, base_state=None) -> str:
    tuner = TUNERS[tuner_name]
    with pytest.raises(UserError) as error:
        registry = DomainRegistry(tuner, load_domains(spec, tuner, base_state or tiny.base_state, "base.pt"))
        registry.stack_into(get_base_model(model_params()))
    message = str(error.value)
    assert "\n" not in message
    return message


def test_a_missing_tuner_file_is_one_line(tiny):
    assert "not found" in registry_error(tiny, "adapters", f"call={tiny.root / 'nope.pt'}")


def test_a_file_of_another_tuner_is_refused(tiny):
    message = registry_error(tiny, "adapters", f"call={tiny.files['lora']['call']}")
    assert "is a lora file" in message


def test_a_tuner_file_of_another_base_is_refused(tiny):
    other = {k: v + 1.0 if v.is_floating_point() else v for k, v in tiny.base_state.items()}
    message = registry_error(tiny, "adapters", tuners_spec(tiny.files["adapters"]), base_state=other)
    assert "trained on another base model" in message and "--base-ckpt" in message


@pytest.mark.parametrize("spec, words", [("call", "use name=path"), ("base=x.pt", "means the base model"), ("a=x,a=y", "twice")])
def test_bad_tuners_flags(spec, words):
    with pytest.raises(UserError, match=words):
        parse_tuners(spec)


def test_an_unknown_domain_names_the_known_ones():
    with pytest.raises(UserError, match="one of call, medical, base"):
        domain_index("legal", ["call", "medical"], "--domain")
    assert domain_index("base", ["call"], "x") == -1 and domain_index("medical", ["call", "medical"], "x") == 1


def test_base_tensors_are_unchanged_by_stacking(tiny):
    model = stacked_model(tiny, "lora")
    assert set(base_tensors(model.state_dict(), TUNERS["lora"])) == set(tiny.base_state)


# ---- one ONNX encoder for every domain ---------------------------------------------------------


def export_argv(tiny, tuner_name: str, *extra: str) -> List[str]:
    """The export of a tuner's domains into its own directory (the file names are the domains')."""
    exp_dir = tiny.root / tuner_name
    exp_dir.mkdir(exist_ok=True)
    return ["--tokens", str(tiny.root / "tokens.txt"), "--exp-dir", str(exp_dir), *TINY_MODEL_FLAGS,
            "--base-ckpt", str(tiny.root / "base.pt"), "--tuners", tuners_spec(tiny.files[tuner_name]), *extra]


def export_script(tuner_name: str) -> Path:
    return REPO_DIR / ("zipformer_adapter" if tuner_name == "adapters" else "zipformer_lora") / "export-onnx.py"


@pytest.fixture(scope="module")
def exported(tiny) -> Dict[str, Dict[str, Path]]:
    """export-onnx.py --tuners of both recipes, run in this process."""
    return {name: run_main(export_script(name), export_argv(tiny, name)) for name in TUNERS}


def onnx_transducer(files: Dict[str, Path], int8: bool = False) -> OnnxTransducer:
    kind = ".int8" if int8 else ""
    return OnnxTransducer(files[f"encoder{kind}"], files[f"decoder{kind}"], files[f"joiner{kind}"])


@pytest.mark.parametrize("tuner_name", list(TUNERS))
def test_the_domains_encoder_has_a_domain_input_and_lists_the_domains(exported, tuner_name):
    files = exported[tuner_name]
    assert files["encoder"].name == "encoder-domains-call-medical.onnx"
    for key in ("encoder", "encoder.int8"):
        metadata = read_metadata(files[key])
        assert metadata["domains"] == "call,medical" and metadata["domain_base_index"] == "-1"
        assert metadata["model_type"] == "zipformer2"
        inputs = {i.name: i for i in onnx.load(str(files[key]), load_external_data=False).graph.input}
        assert list(inputs) == ["x", "x_lens", "domain"]
        domain = inputs["domain"].type.tensor_type
        assert domain.elem_type == onnx.TensorProto.INT64 and domain.shape.dim[0].dim_param == "N"
    assert onnx_transducer(files).domains == ["call", "medical"]


@pytest.mark.parametrize("tuner_name", list(TUNERS))
def test_onnx_domains_encoder_equals_pytorch_per_domain(tiny, exported, tuner_name):
    model = onnx_transducer(exported[tuner_name])
    feats = features(seed=2)
    x, x_lens = pad_features(feats)
    encoder_out, lens = model.run_encoder(x, x_lens, model.domain_indices(DOMAINS_OF_ROWS, "test"))
    hyps = model.greedy_search(encoder_out, lens)
    for row, domain in enumerate(DOMAINS_OF_ROWS):
        alone = one_domain_model(tiny, tuner_name, domain)
        out, out_lens = encode(alone, feats[row : row + 1])
        projected = alone.joiner.encoder_proj(out).detach().numpy()
        np.testing.assert_allclose(encoder_out[row : row + 1, : out_lens[0]], projected, atol=1e-4)
        assert hyps[row] == greedy_search_batch(alone, out, out_lens)[0]


@pytest.mark.parametrize("tuner_name", list(TUNERS))
def test_int8_domains_encoder_is_close_to_fp32(exported, tuner_name):
    x, x_lens = pad_features(features(seed=3))
    fp32_model, int8_model = onnx_transducer(exported[tuner_name]), onnx_transducer(exported[tuner_name], int8=True)
    domain = fp32_model.domain_indices(DOMAINS_OF_ROWS, "test")
    fp32, _ = fp32_model.run_encoder(x, x_lens, domain)
    int8, _ = int8_model.run_encoder(x, x_lens, domain)
    relative_error = np.linalg.norm(int8 - fp32) / np.linalg.norm(fp32)
    # As test_onnx_export's int8 bound: 64-dim random matrices quantise coarsely; this catches a broken file.
    assert 0.0 < relative_error < 0.5, relative_error


def test_onnx_domain_errors_are_one_line(tiny, exported):
    model = onnx_transducer(exported["adapters"])
    x, x_lens = pad_features(features(seed=4, lengths=(60,)))
    with pytest.raises(UserError, match="serves the domains call, medical"):
        model.run_encoder(x, x_lens)
    with pytest.raises(UserError, match="not in the registry"):
        model.domain_indices(["legal"], "--domain")
    with restored_root_logging(), pytest.raises(SystemExit, match="folds one lora into the base"):
        load_script(export_script("lora"))["main"](export_argv(tiny, "lora", "--merge-lora", "1"))


# ---- decode.py and pretrained.py of a tuner recipe, on a trained tiny base ---------------------


@pytest.fixture(scope="module")
def trained(tiny_corpus, tiny_base_exp, tmp_path_factory) -> SimpleNamespace:
    """The tiny trained base as base.pt, and two adapter-only files of different dims on it
    (random non-zero weights: the domains decode differently)."""
    root = tmp_path_factory.mktemp("domains_exp")
    checkpoint = torch.load(tiny_base_exp / "epoch-2.pt", map_location="cpu", weights_only=True)
    base_ckpt = root / "base.pt"
    torch.save({k: checkpoint[k] for k in ("model", "model_config", "vocabulary")}, base_ckpt)
    tuner = TUNERS["adapters"]
    files = {}
    for seed, (domain, dim) in enumerate((("call", 4), ("medical", 8))):
        params = model_params("adapters", dim)
        params.update(checkpoint["model_config"], use_adapters=True, adapter_dim=dim, vocab_size=checkpoint["vocabulary"]["size"])
        model = get_tuned_model(params, tuner)
        model.load_state_dict({**model.state_dict(), **checkpoint["model"]})
        torch.manual_seed(seed)
        with torch.no_grad():
            for name, param in model.named_parameters():
                if tuner.is_tuner_key(name):
                    param.normal_(0.0, 0.3)
        info = {"batch_idx_train": 1, "average_period": 1, "vocabulary": checkpoint["vocabulary"],
                "model_config": model_config(params, TunerDecodingRecipe(tuner).config_keys)}
        files[domain] = root / f"adapter-{domain}.pt"
        save_tuner_file(files[domain], model, None, info, tuner)
    return SimpleNamespace(root=root, base_ckpt=base_ckpt, files=files)


def decode_flags(corpus: dict, exp_dir: Path, test_cuts: str) -> List[str]:
    flags = data_flags(corpus)
    flags[flags.index("--test-cuts") + 1] = test_cuts
    return ["--exp-dir", str(exp_dir), *flags]


def wer_of(res_dir: Path, test_set: str) -> str:
    (summary,) = res_dir.glob(f"wer-summary-{test_set}-*.txt")
    return summary.read_text().splitlines()[1].split()[-1]


@pytest.mark.slow
def test_decode_mixed_domains_table_equals_separate_decodes(tiny_corpus, trained, tmp_path):
    test_sets = {"source": tiny_corpus["source_test"], "target": tiny_corpus["target_test"], "dev": tiny_corpus["source_dev"]}
    all_sets = ",".join(f"{k}={v}" for k, v in test_sets.items())
    mixed_dir = tmp_path / "mixed"
    mixed_dir.mkdir()
    run_script(
        "zipformer_adapter/decode.py", *decode_flags(tiny_corpus, mixed_dir, all_sets),
        "--base-ckpt", trained.base_ckpt, "--tuners", tuners_spec(trained.files),
        "--cut-domains", "source=call,target=medical,dev=base", "--mixed-domains", "1",
    )
    (log,) = (mixed_dir / "greedy_search").glob("log-decode-*")
    mixed_batches = re.search(r"(\d+) of (\d+) batches mixed several domains", log.read_text())
    assert int(mixed_batches.group(1)) >= 1, log.read_text()[-2000:]
    (table,) = (mixed_dir / "greedy_search").glob("domains-table-*-adapters-domains-call-medical-mixed*.txt")
    rows = {line.split("\t")[0]: line.split("\t")[1:] for line in table.read_text().splitlines()[1:]}
    assert {name: row[0] for name, row in rows.items()} == {"source": "call", "target": "medical", "dev": "base"}

    separate = {"source": ["--adapter-ckpt", trained.files["call"]], "target": ["--adapter-ckpt", trained.files["medical"]],
                "dev": ["--adapter-ckpt", trained.files["call"], "--use-adapters", "0"]}
    for name, flags in separate.items():
        exp_dir = tmp_path / name
        exp_dir.mkdir()
        run_script("zipformer_adapter/decode.py", *decode_flags(tiny_corpus, exp_dir, f"{name}={test_sets[name]}"),
                   "--base-ckpt", trained.base_ckpt, *flags)
        assert rows[name][1] == f"{float(wer_of(exp_dir / 'greedy_search', name)):.2f}"
        (recogs,) = (exp_dir / "greedy_search").glob(f"recogs-{name}-*.txt")
        (mixed_recogs,) = (mixed_dir / "greedy_search").glob(f"recogs-{name}-*.txt")
        assert mixed_recogs.read_text() == recogs.read_text()


def in_process_pretrained(tuner, argv: List[str]) -> List[str]:
    recipe = TunerPretrainedRecipe(tuner)
    parser = pretrained.get_parser(recipe)
    params = AttributeDict(vars(parser.parse_args(argv)))
    params.update(feature_dim=80, subsampling_factor=4)
    return tuner_transcribe(recipe, params, flags_given(parser, argv))


@pytest.mark.slow
def test_pretrained_onnx_pretrained_and_onnx_decode_take_each_utterances_domain(tiny_corpus, trained, tmp_path):
    tuner = TUNERS["adapters"]
    cuts = list(CutSet.from_file(tiny_corpus["target_test"]))
    wavs = [cut.recording.sources[0].source for cut in cuts]
    domains = ["call", "medical", "base"]
    common = ["--checkpoint", str(trained.base_ckpt), "--bpe-model", str(tiny_corpus["bpe_model"])]
    with restored_root_logging():
        mixed = in_process_pretrained(tuner, [*common, "--tuners", tuners_spec(trained.files), "--domains", ",".join(domains), *wavs])
        alone = [
            in_process_pretrained(tuner, [*common, "--base-ckpt", str(trained.base_ckpt), "--adapter-ckpt", str(trained.files[d]), w])[0]
            for d, w in zip(domains[:2], wavs)
        ] + in_process_pretrained(tuner, [*common, "--use-adapters", "0", wavs[2]])
    assert mixed == alone and any(mixed)

    onnx_dir = tmp_path / "onnx"
    onnx_dir.mkdir()
    files = run_main(export_script("adapters"), ["--tokens", str(tiny_corpus["tokens"]), "--exp-dir", str(onnx_dir),
                                                 "--base-ckpt", str(trained.base_ckpt), "--tuners", tuners_spec(trained.files)])
    model, tokens = onnx_transducer(files), read_tokens(tiny_corpus["tokens"])
    onnx_mixed = onnx_transcribe(model, tokens, wavs, 16, domains)
    assert onnx_mixed == [onnx_transcribe(model, tokens, [w], 1, [d])[0] for w, d in zip(wavs, domains)]

    # onnx_decode.py with --cut-domains gives decode.py --tuners' hypotheses
    test_cuts = f"source={tiny_corpus['source_test']},target={tiny_corpus['target_test']}"
    cut_domains = ["--cut-domains", "source=call,target=medical"]
    argv = [*(f"--{n}-model-filename={files[n]}" for n in ("encoder", "decoder", "joiner")), "--tokens", str(tiny_corpus["tokens"]),
            "--exp-dir", str(tmp_path / "onnx_decode"), "--test-cuts", test_cuts, "--num-workers", "0", "--max-duration", "8",
            "--num-buckets", "2", *cut_domains]
    decode_argv = [*decode_flags(tiny_corpus, tmp_path / "decode", test_cuts), "--base-ckpt", str(trained.base_ckpt),
                   "--tuners", tuners_spec(trained.files), *cut_domains]
    (tmp_path / "decode").mkdir()
    with restored_root_logging():
        onnx_decode.run(onnx_decode.get_parser().parse_args(argv))
        parser = decoding.get_parser(TunerDecodeRecipe(tuner))
        decode_domains(tuner, parser.parse_args(decode_argv), flags_given(parser, decode_argv))
    for name in ("source", "target"):
        (onnx_recogs,) = (tmp_path / "onnx_decode" / "greedy_search").glob(f"recogs-{name}-*.txt")
        (torch_recogs,) = (tmp_path / "decode" / "greedy_search").glob(f"recogs-{name}-*.txt")
        assert onnx_recogs.read_text() == torch_recogs.read_text()


@pytest.mark.slow
@pytest.mark.parametrize(
    "flags, words",
    [
        (["--cut-domains", "source=call,target=legal"], "names domain 'legal', which is not in the registry: use one of call, medical, base"),
        (["--cut-domains", "source=call"], "cut target-test-00000-0 of test set target names no domain"),
        (["--cut-domains", "source=call,other=base"], "--cut-domains names test set other, which --test-cuts lacks"),
        (["--cut-domains", "source=call,target=base", "--forgetting-report", "1"], "decode --tuners without it"),
        (["--cut-domains", "source=call,target=base", "--adapter-ckpt", "a.pt"], "drop --adapter-ckpt"),
    ],
)
def test_decode_domain_errors_are_one_line_and_write_no_results(tiny_corpus, trained, tmp_path, flags, words):
    test_cuts = f"source={tiny_corpus['source_test']},target={tiny_corpus['target_test']}"
    result = run_script("zipformer_adapter/decode.py", *decode_flags(tiny_corpus, tmp_path, test_cuts),
                        "--base-ckpt", trained.base_ckpt, "--tuners", tuners_spec(trained.files), *flags, check=False)
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and words in errors[0], result.stderr[-2000:]
    assert not list(tmp_path.glob("*/recogs-*")) and "Traceback" not in result.stderr


@pytest.mark.slow
def test_script_flag_errors(tiny_corpus, trained, tmp_path):
    result = run_script("zipformer_adapter/decode.py", *decode_flags(tiny_corpus, tmp_path, f"s={tiny_corpus['source_test']}"),
                        "--cut-domains", "s=call", check=False)
    assert result.returncode != 0 and "error: --cut-domains and --mixed-domains need --tuners" in result.stderr
    wav = str(next(iter(CutSet.from_file(tiny_corpus["source_test"]))).recording.sources[0].source)
    common = ["--checkpoint", str(trained.base_ckpt), "--bpe-model", str(tiny_corpus["bpe_model"])]
    for argv, words in (
        ([*common, "--tuners", tuners_spec(trained.files), wav], "--tuners needs each file's domain"),
        ([*common, "--tuners", tuners_spec(trained.files), "--domains", "call,base", wav], "--domains names 2 domains for 1 sound files"),
        ([*common, "--domain", "call", wav], "--domain and --domains need --tuners"),
    ):
        with restored_root_logging(), pytest.raises(UserError, match=words):
            in_process_pretrained(TUNERS["adapters"], argv)


def test_a_single_domain_encoder_given_a_domain_is_one_line(tiny, tmp_path):
    """zipformer/export-onnx.py of the base: no domain input, so a domain is refused."""
    (tmp_path / "epoch-1.pt").write_bytes((tiny.root / "base.pt").read_bytes())
    files = run_main(REPO_DIR / "zipformer" / "export-onnx.py", ["--tokens", str(tiny.root / "tokens.txt"), "--exp-dir", str(tmp_path),
                     *TINY_MODEL_FLAGS, "--epoch", "1", "--avg", "1", "--use-averaged-model", "0"])
    model = onnx_transducer(files)
    assert model.domains is None
    x, x_lens = pad_features(features(seed=5, lengths=(60,)))
    with pytest.raises(UserError, match="has no domain input"):
        model.run_encoder(x, x_lens, np.array([0]))
    with pytest.raises(UserError, match="has no domain input"):
        onnx_transcribe(model, {}, ["a.wav"], 1, ["call"])


def test_benchmark_holds_the_base_once_with_stacked_tuners(tiny, tmp_path):
    from local.benchmarks.benchmark_domains import load_models, write_random_tuners

    tuner = TUNERS["adapters"]
    base_ckpt = tiny.root / "base.pt"
    files = write_random_tuners(base_ckpt, tuner, 4, 3, tmp_path)
    spec = ",".join(f"d{k}={path}" for k, path in enumerate(files))
    (stacked,) = load_models("stacked", spec, base_ckpt, tuner)
    separate = load_models("separate", spec, base_ckpt, tuner)
    base_count = sum(p.numel() for p in tiny.base.parameters())
    tuner_count = sum(p.numel() for n, p in separate[0].named_parameters() if tuner.is_tuner_key(n))
    assert len(separate) == 3 and 0 < tuner_count < base_count
    assert sum(p.numel() for p in stacked.parameters()) == base_count + 3 * tuner_count
    assert sum(p.numel() for m in separate for p in m.parameters()) == 3 * (base_count + tuner_count)


def test_the_registry_needs_a_base_and_replaces_a_single_tuner_file():
    recipe = DomainsRecipe(TUNERS["lora"])
    with pytest.raises(UserError, match="--tuners needs --base-ckpt"):
        recipe.load_state_dict(AttributeDict(tuners="a=a.pt", base_ckpt=None))
    with pytest.raises(UserError, match="drop --lora-ckpt"):
        recipe.load_state_dict(AttributeDict(tuners="a=a.pt", base_ckpt="base.pt", tuner_ckpt="b.pt"))
