"""decode.py with a registry of domains (--tuners): every cut decoded in its own domain.

A cut's domain is its custom field "domain", else its test set's in --cut-domains. With
--mixed-domains 1 the test sets are decoded as ONE shuffled cut set, so that batches mix domains,
and the results are split back into the usual per-test-set files. Either way a table
domains-table-{suffix}.txt gives each test set's domain(s) and WER.
"""
import argparse
import logging
import random
from typing import ContextManager, Dict, List, Mapping

import torch
from lhotse import CutSet
from torch import nn

from zipformer.core.atomic import atomic_write_text
from zipformer.core.errors import UserError
from zipformer.data.domain_names import cut_domain, domains_table, parse_cut_domains
from zipformer.decoding.session import DecodingSession, Result, decode_dataset
from zipformer.tuners.domains import DomainsRecipe
from zipformer.tuners.tuner import Tuner

# The shuffle of --mixed-domains: fixed, so that a run can be repeated exactly.
MIXED_SHUFFLE_SEED = 0


class CutDomainsRecipe(DomainsRecipe):
    """DomainsRecipe that decodes every cut of a batch in its domain: `cut_domains` {cut id: domain}
    of the cuts being decoded, which DomainsSession sets before each test set (or the mixed one)."""

    def __init__(self, tuner: Tuner) -> None:
        super().__init__(tuner)
        self.cut_domains: Mapping[str, str] = {}
        self.batches_mixed = [0, 0]  # batches of one domain, of several

    def batch_context(self, model: nn.Module, batch: dict) -> ContextManager:
        names = [self.cut_domains[cut.id] for cut in batch["supervisions"]["cut"]]
        self.batches_mixed[len(set(names)) > 1] += 1
        return self.registry.selected(model, names, "a cut")


class DomainsSession(DecodingSession):
    """DecodingSession over a model of several domains; every cut's domain is checked up front."""

    def __init__(self, recipe: CutDomainsRecipe, args: argparse.Namespace, given: frozenset = frozenset()) -> None:
        super().__init__(recipe, args, given)
        self.registry = recipe.registry
        cut_domains = parse_cut_domains(self.params.cut_domains, list(self.test_sets))
        # {test set: {cut id: domain}}: unknown or missing domains fail before any decoding.
        self.cut_domains: Dict[str, Dict[str, str]] = {}
        for name, cuts in self.test_sets.items():
            domains = {cut.id: cut_domain(cut, name, cut_domains) for cut in cuts}
            self.registry.indices(sorted(set(domains.values())), f"test set {name}")
            self.cut_domains[name] = domains

    def decode_test_set(self, name: str, cuts) -> List[Result]:
        self.recipe.cut_domains = self.cut_domains[name]
        return super().decode_test_set(name, cuts)

    def decode_all(self, suffix: str) -> Dict[str, float]:
        wers = self._decode_mixed(suffix) if self.params.mixed_domains else super().decode_all(suffix)
        table = domains_table({name: sorted(set(d.values())) for name, d in self.cut_domains.items()}, wers)
        filename = self.params.res_dir / f"domains-table-{suffix}.txt"
        atomic_write_text(filename, table)
        logging.info(f"WER % per test set and domain, also in {filename}:\n{table}")
        return wers

    def _decode_mixed(self, suffix: str) -> Dict[str, float]:
        owner: Dict[str, str] = {}
        for name, domains in self.cut_domains.items():
            for cut_id in domains:
                if cut_id in owner:
                    raise UserError(
                        f"cut {cut_id} is in test sets {owner[cut_id]} and {name}: --mixed-domains 1 needs each "
                        "cut once, decode these sets with --mixed-domains 0"
                    )
                owner[cut_id] = name
        mixed = CutSet.from_cuts(cut for cuts in self.test_sets.values() for cut in cuts)
        mixed = mixed.shuffle(random.Random(MIXED_SHUFFLE_SEED))
        self.recipe.cut_domains = {cut_id: self.cut_domains[name][cut_id] for cut_id, name in owner.items()}
        with torch.no_grad():
            results = decode_dataset(
                self.data.test_dataloaders(mixed), self.params, self.model, self.sp, "mixed domains", self.recipe
            )
        batches_mixed = self.recipe.batches_mixed
        logging.info(f"{batches_mixed[1]} of {sum(batches_mixed)} batches mixed several domains")
        by_set: Dict[str, List[Result]] = {name: [] for name in self.test_sets}
        for result in results:
            by_set[owner[result[0]]].append(result)
        return {name: self.save_test_set(name, by_set[name], suffix) for name in self.test_sets}
