"""One ONNX encoder for every domain of a registry (export-onnx.py --tuners).

The encoder takes a third input, `domain` (N,) int64: each utterance's index into the metadata's
`domains` (comma-separated names in index order); `domain_base_index` (-1, as any negative index)
is the base model without a tuner. The domains' tuners are stacked inside the graph and gathered
per utterance, as in PyTorch (zipformer.tuners.domains). The decoder and joiner are the usual ones.
onnxruntime runs it (zipformer.deploy.inference, onnx_decode.py, onnx_pretrained.py); sherpa-onnx
has no such input, so it keeps the per-domain exports. `zipformer.tuners.domains.DomainsRecipe`'s
export hooks write, check and describe the encoder with these functions.
"""
import logging
from pathlib import Path
from typing import Dict, Sequence, Tuple

import numpy as np
import torch
from torch import nn

from zipformer.data.domain_names import BASE_INDEX, BASE_INDEX_METADATA, DOMAINS_METADATA
from zipformer.deploy.export import (
    CHECK_LENGTHS,
    ENCODER_DYNAMIC_AXES,
    ENCODER_OUTPUTS,
    OnnxEncoder,
    check_inputs,
    decoder_joiner_differences,
    encoder_trace_inputs,
    export_module,
    fail_on_differences,
    int8_differences,
)
from zipformer.deploy.inference import OnnxTransducer
from zipformer.tuners.files import base_fingerprint
from zipformer.tuners.stacking import domains_selected
from zipformer.tuners.tuner import Tuner


class OnnxDomainsEncoder(nn.Module):
    """OnnxEncoder with each utterance in its own domain: x (N, T, 80), x_lens (N,), domain (N,)."""

    def __init__(self, model: nn.Module, tuner: Tuner) -> None:
        super().__init__()
        self.encoder = OnnxEncoder(model)
        self.tuner = tuner

    def forward(self, x: torch.Tensor, x_lens: torch.Tensor, domain: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        with domains_selected(self.encoder.model, self.tuner, domain):
            return self.encoder(x, x_lens)


def check_domain_rows(num_domains: int) -> list:
    """The domain assignments the export is checked on (CHECK_LENGTHS utterances each): every
    utterance in the base, in each domain alone, and a batch that mixes them."""
    size = len(CHECK_LENGTHS)
    rows = [[BASE_INDEX] * size] + [[k] * size for k in range(num_domains)]
    rows.append([(k % (num_domains + 1)) - 1 for k in range(size)])
    return rows


@torch.no_grad()
def check_domains_export(
    model: nn.Module, tuner: Tuner, files: Dict[str, Path], feature_dim: int, num_domains: int
) -> Dict[str, float]:
    """Raise RuntimeError unless onnxruntime reproduces PyTorch in every domain and in a mixed batch."""
    onnx_model = OnnxTransducer(files["encoder"], files["decoder"], files["joiner"])
    inputs = check_inputs(feature_dim, onnx_model.vocab_size, onnx_model.context_size)
    x, x_lens = torch.from_numpy(inputs["x"]), torch.from_numpy(inputs["x_lens"])
    worst = 0.0
    for row in check_domain_rows(num_domains):
        domain = np.array(row, dtype=np.int64)
        encoder_out, _ = OnnxDomainsEncoder(model, tuner).eval()(x, x_lens, torch.from_numpy(domain))
        onnx_encoder_out, _ = onnx_model.run_encoder(inputs["x"], inputs["x_lens"], domain)
        if onnx_encoder_out.shape != encoder_out.shape:
            raise RuntimeError(f"the exported encoder gives shape {onnx_encoder_out.shape}, PyTorch {tuple(encoder_out.shape)}")
        worst = max(worst, float(np.abs(onnx_encoder_out - encoder_out.numpy()).max()))
    differences = {"encoder": worst, **decoder_joiner_differences(model, onnx_model, inputs["y"], encoder_out.numpy())}
    logging.info(
        f"onnxruntime vs PyTorch in every domain and a mixed batch, max abs difference at lengths {list(CHECK_LENGTHS)}: "
        + ", ".join(f"{k} {v:.2e}" for k, v in differences.items())
    )
    fail_on_differences(differences)
    return differences


def export_domains_encoder(model: nn.Module, tuner: Tuner, filename: Path, feature_dim: int, metadata: Dict[str, str]) -> None:
    domain = torch.zeros(1, dtype=torch.int64)  # traced through a domain's gather; any index runs the same graph
    export_module(
        OnnxDomainsEncoder(model, tuner),
        (*encoder_trace_inputs(feature_dim), domain),
        filename,
        input_names=["x", "x_lens", "domain"],
        output_names=ENCODER_OUTPUTS,
        dynamic_axes={**ENCODER_DYNAMIC_AXES, "domain": {0: "N"}},
        metadata=metadata,
    )


def domains_metadata(names: Sequence[str], tuner: Tuner, state_dict: Dict[str, torch.Tensor]) -> Dict[str, str]:
    """What the encoder of the registry `names` (in index order) holds beyond the exporter's metadata."""
    return {
        DOMAINS_METADATA: ",".join(names),
        BASE_INDEX_METADATA: str(BASE_INDEX),
        "domain_tuner": tuner.name,
        "base_fingerprint": base_fingerprint(state_dict, tuner),
    }


def int8_domains_differences(
    files: Dict[str, Path], int8_files: Dict[str, Path], feature_dim: int, num_domains: int
) -> Dict[str, float]:
    """int8_differences of an encoder of `num_domains` domains, on the batch that mixes them."""
    mixed = np.array(check_domain_rows(num_domains)[-1], dtype=np.int64)
    return int8_differences(files, int8_files, feature_dim, mixed)
