"""Several domains on one base model: a registry of tuner-only files, stacked into one model.

`--tuners name=path,...` names tuner-only files (adapter-epoch-N.pt, lora-epoch-N.pt) trained on
one base. Each is checked (its tuner, its size against its tensors, its base fingerprint against
the base checkpoint), then the tuner stacks them (Tuner.stack_domains): the base weights are held
once, each domain adds only its tuner tensors, and one forward pass runs every utterance of a
batch in its own domain (`zipformer.tuners.stacking.domains_selected`; -1 = the base model, exactly).
Different adapter dims or LoRA ranks are zero-padded to the largest (exact, see stack_padded).
One registry holds one tuner: a file of another tuner is refused.

`DomainsRecipe` decodes and exports such a model; decode.py and pretrained.py give it each
utterance's domain through its batch_context (zipformer.tuners.domain_session, pretrained_main),
export-onnx.py writes its encoder with a `domain` input (zipformer.tuners.onnx_domains).

Only the full-context forward takes a domain index: streaming decoding and the streaming export
take one tuner (the per-domain files), as before.
"""
import logging
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Dict, Iterator, List, Sequence

import torch
from torch import nn

from zipformer.checkpoints.checkpoint import LoadedWeights, StateDict, read_model_file
from zipformer.core.errors import UserError
from zipformer.core.flag_types import flag_name
from zipformer.core.params import AttributeDict
from zipformer.data.domain_names import domain_index, parse_tuners
from zipformer.deploy.export import ExportRecipe
from zipformer.model.builder import get_model as get_base_model
from zipformer.tuners.files import base_fingerprint, check_base_fingerprint, load_tuner_file
from zipformer.tuners.onnx_domains import (
    check_domains_export,
    domains_metadata,
    export_domains_encoder,
    int8_domains_differences,
)
from zipformer.tuners.stacking import DomainTensors, domains_selected
from zipformer.tuners.tensors import base_tensors, load_with_tuner
from zipformer.tuners.tuner import Tuner


def load_domains(spec: str, tuner: Tuner, base: StateDict, base_source: str) -> List[DomainTensors]:
    """The tuner-only files of `--tuners spec`, each checked against the base weights `base`."""
    fingerprint = base_fingerprint(base, tuner)
    domains = []
    for name, path in parse_tuners(spec).items():
        checkpoint = load_tuner_file(Path(path), tuner)
        check_base_fingerprint(fingerprint, checkpoint.get("base_fingerprint", ""), base_source, path)
        config, tensors = checkpoint["tuner"], checkpoint["model"]
        found, recorded = tuner.size_of(tensors), config.get(tuner.size)
        if found is None or found != recorded:
            raise UserError(
                f"{path} records {flag_name(tuner.size)} {recorded} but holds {tuner.name} of size {found}: "
                "the file is damaged, pass another"
            )
        domains.append(DomainTensors(name, path, config, tensors))
    return domains


class DomainRegistry:
    """The domains stacked in one model, in index order, and the tuner that holds them."""

    def __init__(self, tuner: Tuner, domains: Sequence[DomainTensors]) -> None:
        self.tuner = tuner
        self.domains = list(domains)
        self.names = [domain.name for domain in domains]

    def stack_into(self, model: nn.Module) -> int:
        """Put every domain's tuner into the base `model`; return the number of tuner parameters."""
        count = self.tuner.stack_domains(model, self.domains)
        for domain in self.domains:
            untaken = domain.untaken()
            if untaken:
                raise UserError(
                    f"{domain.source} (domain {domain.name}) has {len(untaken)} tensors this base model has no "
                    f"place for ({untaken[0]}, ...): pass the base model it was trained on"
                )
        return count

    def indices(self, names: Sequence[str], source: str) -> torch.Tensor:
        """(N,) int64 domain indices of per-utterance domain names (-1 = base)."""
        return torch.tensor([domain_index(name, self.names, source) for name in names], dtype=torch.int64)

    @contextmanager
    def selected(self, model: nn.Module, names: Sequence[str], source: str) -> Iterator[None]:
        """Run `model` with utterance i of each batch in domain names[i]."""
        with domains_selected(model, self.tuner, self.indices(names, source).to(next(model.parameters()).device)):
            yield


class DomainsRecipe(ExportRecipe):
    """A base checkpoint (--base-ckpt, or pretrained.py's --checkpoint) plus the --tuners registry.

    `registry` is set when the weights are read (load_state_dict), before the model is built. The
    export hooks write one encoder for every domain, with a `domain` input (zipformer.tuners.onnx_domains).
    """

    def __init__(self, tuner: Tuner) -> None:
        self.tuner = tuner
        self.registry: DomainRegistry

    def load_state_dict(self, params: AttributeDict) -> LoadedWeights:
        if params.get("tuner_ckpt"):
            raise UserError(
                f"--tuners holds every domain's file: drop --{self.tuner.file_prefix}ckpt (or add it to --tuners)"
            )
        flag = "--base-ckpt" if params.get("base_ckpt") else "--checkpoint"
        path = params.get("base_ckpt") or params.get("checkpoint")
        if not path:
            raise UserError("--tuners needs --base-ckpt BASE.pt: the base model the tuner files were trained on")
        weights = read_model_file(path, flag=flag)
        base = base_tensors(weights.state_dict, self.tuner)
        self.registry = DomainRegistry(self.tuner, load_domains(params.tuners, self.tuner, base, path))
        described = ", ".join(f"{d.name} ({d.source})" for d in self.registry.domains)
        return replace(weights, state_dict=base, description=f"{weights.description} with the {self.tuner.name} of {described}")

    def get_model(self, params: AttributeDict) -> nn.Module:
        model = get_base_model(params)
        count = self.registry.stack_into(model)
        names = self.registry.names
        logging.info(f"{self.tuner.name} of {len(names)} domains ({', '.join(names)}): {count} parameters")
        return model

    def load_weights(self, model: nn.Module, weights: LoadedWeights, params: AttributeDict) -> None:
        load_with_tuner(model, weights.state_dict, self.tuner, weights.source, required=False)

    def describe(self, params: AttributeDict) -> str:
        mixed = "-mixed" if params.get("mixed_domains") else ""
        return f"-{self.tuner.name}-domains-{'-'.join(self.registry.names)}{mixed}"

    def onnx_metadata(self, params: AttributeDict, state_dict: StateDict) -> Dict[str, str]:
        return domains_metadata(self.registry.names, self.tuner, state_dict)

    def export_suffix(self, params: AttributeDict) -> str:
        return "domains-" + "-".join(self.registry.names)

    def write_encoder(self, model: nn.Module, filename: Path, feature_dim: int, metadata: Dict[str, str]) -> None:
        export_domains_encoder(model, self.tuner, filename, feature_dim, metadata)

    def check_files(self, model: nn.Module, files: Dict[str, Path], feature_dim: int) -> Dict[str, float]:
        return check_domains_export(model, self.tuner, files, feature_dim, len(self.registry.names))

    def int8_report(self, files: Dict[str, Path], int8_files: Dict[str, Path], feature_dim: int) -> Dict[str, float]:
        return int8_domains_differences(files, int8_files, feature_dim, len(self.registry.names))
