"""local/model_tools/causal_warm_start.py: a non-causal model becomes a causal one with the same full-context function."""
import argparse
import subprocess
import sys

import pytest
import torch

from local.model_tools.causal_warm_start import causal_state_dict
from zipformer.checkpoints.checkpoint import read_model_file
from zipformer.checkpoints.config import model_config
from zipformer.core.params import AttributeDict
from zipformer.model.builder import get_model
from zipformer.model.flags import MODEL_CONFIG_KEYS, add_model_arguments

from conftest import REPO_DIR, TINY_MODEL_FLAGS


def tiny_model(causal: bool) -> torch.nn.Module:
    parser = argparse.ArgumentParser()
    add_model_arguments(parser)
    flags = TINY_MODEL_FLAGS + ["--causal", str(int(causal))]
    if causal:
        flags += ["--chunk-size", "8,-1", "--left-context-frames", "32,-1"]
    params = AttributeDict(vars(parser.parse_args(flags)))
    params.update(feature_dim=80, vocab_size=50, blank_id=0, context_size=2)
    return get_model(params), params


def test_full_context_output_is_the_non_causal_models_and_chunks_see_no_future():
    torch.manual_seed(0)
    non_causal, _ = tiny_model(causal=False)
    causal, _ = tiny_model(causal=True)
    causal.load_state_dict(causal_state_dict(non_causal.state_dict()), strict=True)
    non_causal.eval(), causal.eval()
    x, x_lens = torch.randn(2, 200, 80), torch.tensor([200, 150])
    with torch.no_grad():
        expected, _ = non_causal.forward_encoder(x, x_lens)
        causal.encoder.chunk_size, causal.encoder.left_context_frames = (-1,), (-1,)
        full, _ = causal.forward_encoder(x, x_lens)
        causal.encoder.chunk_size, causal.encoder.left_context_frames = (8,), (32,)
        chunked, _ = causal.forward_encoder(x, x_lens)
        changed = x.clone()
        changed[:, 150:] += 1.0
        chunked_changed, _ = causal.forward_encoder(changed, x_lens)
    # The same function; the non-causal module sums the kernel in another order (channels last).
    torch.testing.assert_close(full, expected, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(chunked, expected, atol=1e-3)
    # 150 input frames are 36 encoder frames at 25 Hz; the first chunks never see what follows.
    assert torch.equal(chunked[:, :24], chunked_changed[:, :24])


def run_converter(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(REPO_DIR / "local" / "model_tools" / "causal_warm_start.py"), *args],
        capture_output=True,
        text=True,
    )


def test_the_written_file_is_causal_and_keeps_the_configuration(tmp_path):
    model, params = tiny_model(causal=False)
    src = tmp_path / "base.pt"
    torch.save({"model": model.state_dict(), "model_config": model_config(params, MODEL_CONFIG_KEYS)}, src)
    proc = run_converter("--checkpoint", str(src), "--out", str(tmp_path / "causal.pt"))
    assert proc.returncode == 0, proc.stderr
    loaded = read_model_file(tmp_path / "causal.pt")
    assert loaded.model_config["causal"] is True
    assert loaded.model_config["encoder_dim"] == list(params.encoder_dim)
    causal, _ = tiny_model(causal=True)
    causal.load_state_dict(loaded.state_dict, strict=True)


@pytest.mark.parametrize("case", ["causal input", "no configuration"])
def test_a_file_that_cannot_be_converted_is_a_one_line_error(tmp_path, case):
    model, params = tiny_model(causal=case == "causal input")
    config = {} if case == "no configuration" else {"model_config": model_config(params, MODEL_CONFIG_KEYS)}
    src = tmp_path / "in.pt"
    torch.save({"model": model.state_dict(), **config}, src)
    proc = run_converter("--checkpoint", str(src), "--out", str(tmp_path / "out.pt"))
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert str(src) in proc.stderr.strip().splitlines()[-1]
    assert not (tmp_path / "out.pt").exists()
