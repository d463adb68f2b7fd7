"""pretrained.py of a tuner recipe: sound files with the tuned model (the base model is --checkpoint,
or --base-ckpt), or with a registry of domains (--tuners), each file in its --domain / --domains."""
import argparse
from typing import ContextManager, List, Sequence

from torch import nn

from zipformer.core.errors import UserError, exit_on_user_error
from zipformer.core.params import AttributeDict
from zipformer.data.domain_names import add_file_domain_arguments, file_domains
from zipformer.decoding import transcribe as pretrained
from zipformer.tuners.domains import DomainsRecipe
from zipformer.tuners.recipes import TunerDecodingRecipe, add_tuners_argument
from zipformer.tuners.tuner import Tuner


class TunerPretrainedRecipe(TunerDecodingRecipe):
    """TunerDecodingRecipe with pretrained.py's own flags: the registry and each file's domain."""

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        super().add_arguments(parser)
        add_tuners_argument(parser, self.tuner)
        add_file_domain_arguments(parser)


class FileDomainsRecipe(DomainsRecipe):
    """DomainsRecipe that decodes the sound files (one batch, in order) each in its domain `names`."""

    def __init__(self, tuner: Tuner, names: Sequence[str]) -> None:
        super().__init__(tuner)
        self.names = names

    def batch_context(self, model: nn.Module, batch: dict) -> ContextManager:
        return self.registry.selected(model, self.names, "--domains")


def transcribe(recipe: TunerPretrainedRecipe, params: AttributeDict, given: frozenset) -> List[str]:
    """pretrained.py's texts: with --tuners, each sound file in its --domain / --domains."""
    names = file_domains(params, params.sound_files)
    if not params.tuners:
        if names is not None:
            raise UserError("--domain and --domains need --tuners name=path,... (the registry of domains)")
        return pretrained.transcribe(params, recipe, given)
    if names is None:
        raise UserError("--tuners needs each file's domain: --domain NAME for all, or --domains a,b,... (one per file)")
    return pretrained.transcribe(params, FileDomainsRecipe(recipe.tuner, names), given)


def pretrained_main(recipe: TunerPretrainedRecipe) -> None:
    """pretrained.py of a tuner recipe."""
    params, given = pretrained.pretrained_params(recipe)
    with exit_on_user_error():
        texts = transcribe(recipe, params, given)
    pretrained.print_texts(params.sound_files, texts)
