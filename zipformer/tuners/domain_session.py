"""decode.py with a registry of domains (--tuners): every cut decoded in its own domain.

A cut's domain is its custom field "domain", else its test set's in --cut-domains. With
--mixed-domains 1 the test sets are decoded as ONE shuffled cut set, so that batches mix domains,
and the results are split back into the usual per-test-set files. Either way a table
domains-table-{suffix}.txt gives each test set's domain(s) and WER.
"""
import argparse
import logging
import random
from typing import Callable, Dict, List

import torch
from lhotse import CutSet

from zipformer.core.atomic import atomic_write_text
from zipformer.core.errors import UserError
from zipformer.data.domain_names import cut_domain, domains_table, parse_cut_domains
from zipformer.decoding.session import BatchContext, DecodingSession, Result, decode_dataset
from zipformer.tuners.domains import DomainsRecipe

# The shuffle of --mixed-domains: fixed, so that a run can be repeated exactly.
MIXED_SHUFFLE_SEED = 0


class DomainsSession(DecodingSession):
    """DecodingSession over a model of several domains; every cut's domain is checked up front."""

    def __init__(self, recipe: DomainsRecipe, args: argparse.Namespace, given: frozenset = frozenset()) -> None:
        super().__init__(recipe, args, given)
        self.registry = recipe.registry
        self.batches_mixed = [0, 0]  # batches of one domain, of several
        cut_domains = parse_cut_domains(self.params.cut_domains, list(self.test_sets))
        # {test set: {cut id: domain}}: unknown or missing domains fail before any decoding.
        self.cut_domains: Dict[str, Dict[str, str]] = {}
        for name, cuts in self.test_sets.items():
            domains = {cut.id: cut_domain(cut, name, cut_domains) for cut in cuts}
            self.registry.indices(sorted(set(domains.values())), f"test set {name}")
            self.cut_domains[name] = domains

    def _batch_context(self, domain_of: Callable[[str], str]) -> BatchContext:
        def selected(batch: dict):
            names = [domain_of(cut.id) for cut in batch["supervisions"]["cut"]]
            self.batches_mixed[len(set(names)) > 1] += 1
            return self.registry.selected(self.model, names, "a cut")

        return selected

    def decode_test_set(self, name: str, cuts) -> List[Result]:
        context = self._batch_context(self.cut_domains[name].__getitem__)
        return decode_dataset(self.data.test_dataloaders(cuts), self.params, self.model, self.sp, name, context)

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
        context = self._batch_context(lambda cut_id: self.cut_domains[owner[cut_id]][cut_id])
        with torch.no_grad():
            results = decode_dataset(
                self.data.test_dataloaders(mixed), self.params, self.model, self.sp, "mixed domains", context
            )
        logging.info(f"{self.batches_mixed[1]} of {sum(self.batches_mixed)} batches mixed several domains")
        by_set: Dict[str, List[Result]] = {name: [] for name in self.test_sets}
        for result in results:
            by_set[owner[result[0]]].append(result)
        return {name: self.save_test_set(name, by_set[name], suffix) for name in self.test_sets}
