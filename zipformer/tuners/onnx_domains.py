"""One ONNX encoder for every domain of a registry (export-onnx.py --tuners).

The encoder takes a third input, `domain` (N,) int64: each utterance's index into the metadata's
`domains` (comma-separated names in index order); `domain_base_index` (-1, as any negative index)
is the base model without a tuner. The domains' tuners are stacked inside the graph and gathered
per utterance, as in PyTorch (zipformer.tuners.domains). The decoder and joiner are the usual ones.
onnxruntime runs it (zipformer.deploy.inference, onnx_decode.py, onnx_pretrained.py); sherpa-onnx
has no such input, so it keeps the per-domain exports.
"""
import logging
from pathlib import Path
from typing import Dict, Optional, Tuple

import numpy as np
import torch
from torch import nn

from zipformer.core.params import AttributeDict
from zipformer.data.domain_names import BASE_INDEX, BASE_INDEX_METADATA, DOMAINS_METADATA
from zipformer.deploy.export import (
    CHECK_LENGTHS,
    ENCODER_DYNAMIC_AXES,
    ENCODER_OUTPUTS,
    EncoderFile,
    MetadataHook,
    OnnxEncoder,
    SuffixHook,
    check_inputs,
    decoder_joiner_differences,
    encoder_trace_inputs,
    export,
    export_module,
    fail_on_differences,
    int8_differences,
)
from zipformer.deploy.inference import OnnxTransducer
from zipformer.tuners.domains import DomainsRecipe
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


def export_domains(
    params: AttributeDict,
    recipe: DomainsRecipe,
    encoder_metadata: Optional[MetadataHook],
    file_suffix: SuffixHook,
    given: frozenset,
) -> Dict[str, Path]:
    """onnx_export.export with the encoder of every domain of recipe's registry (fp32 and int8)."""
    tuner = recipe.tuner

    def metadata(params: AttributeDict, state_dict: Dict[str, torch.Tensor]) -> Dict[str, str]:
        extra = encoder_metadata(params, state_dict) if encoder_metadata else {}
        return {
            **extra,
            DOMAINS_METADATA: ",".join(recipe.registry.names),
            BASE_INDEX_METADATA: str(BASE_INDEX),
            "domain_tuner": tuner.name,
            "base_fingerprint": base_fingerprint(state_dict, tuner),
        }

    def num_domains() -> int:
        return len(recipe.registry.names)

    encoder_file = EncoderFile(
        write=lambda model, filename, feature_dim, meta: export_domains_encoder(
            model, tuner, filename, feature_dim, meta
        ),
        check=lambda model, files, feature_dim: check_domains_export(model, tuner, files, feature_dim, num_domains()),
        int8_report=lambda files, int8_files, feature_dim: int8_differences(
            files, int8_files, feature_dim, np.array(check_domain_rows(num_domains())[-1], dtype=np.int64)
        ),
    )
    return export(params, recipe, metadata, file_suffix, given, encoder_file)
