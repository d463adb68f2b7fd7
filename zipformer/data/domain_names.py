"""Domain names of a multi-domain model, without PyTorch (the onnxruntime scripts use them too).

A registry is `--tuners name=path,...`: domain k is the k-th name; "base" (index -1) is the base
model without a tuner. Each utterance names its domain: a cut by its custom field "domain", else
by its test set through `--cut-domains testset=domain,...`; a sound file by `--domains a,b,base`
(one per file) or one `--domain` for all.
"""
import argparse
from collections import OrderedDict
from typing import Any, Dict, List, Mapping, Optional, Sequence

from zipformer.core.errors import UserError

BASE_DOMAIN = "base"
BASE_INDEX = -1
# The ONNX encoder's metadata: the domain names in index order, and the index of the base model.
DOMAINS_METADATA = "domains"
BASE_INDEX_METADATA = "domain_base_index"


def parse_name_map(spec: str, flag: str, what: str) -> "OrderedDict[str, str]":
    """"a=x,b=y" -> {"a": "x", "b": "y"} in order; UserError naming `flag` for a bad entry."""
    named: "OrderedDict[str, str]" = OrderedDict()
    for item in spec.split(","):
        name, sep, value = (s.strip() for s in item.partition("="))
        if not sep or not name or not value:
            raise UserError(f"bad entry '{item}' in {flag} '{spec}': use name={what}[,name={what}...]")
        if name in named:
            raise UserError(f"'{name}' appears twice in {flag} '{spec}': give each its own entry")
        named[name] = value
    return named


def parse_tuners(spec: str) -> "OrderedDict[str, str]":
    """--tuners "name=path,...": the registry's domains in index order."""
    tuners = parse_name_map(spec, "--tuners", "path")
    if BASE_DOMAIN in tuners:
        raise UserError(f"--tuners cannot name a domain '{BASE_DOMAIN}': it means the base model without a tuner")
    return tuners


def domain_index(name: str, domains: Sequence[str], source: str) -> int:
    """The index of domain `name` (-1 for "base"); UserError naming `source` for an unknown one."""
    if name == BASE_DOMAIN:
        return BASE_INDEX
    if name not in domains:
        raise UserError(
            f"{source} names domain '{name}', which is not in the registry: use one of "
            f"{', '.join([*domains, BASE_DOMAIN])} (--tuners name=path adds one)"
        )
    return list(domains).index(name)


def add_cut_domain_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--cut-domains",
        type=str,
        default=None,
        help="The domain of each --test-cuts set, testset=domain,... (a registry name or 'base'); "
        "a cut's own custom field 'domain' comes first.",
    )


def cut_domain(cut: Any, test_set: str, cut_domains: Mapping[str, str]) -> str:
    """A cut's domain name: its custom "domain" if present, else its test set's in --cut-domains."""
    custom = getattr(cut, "custom", None) or {}
    if "domain" in custom:
        return str(custom["domain"])
    if test_set in cut_domains:
        return cut_domains[test_set]
    raise UserError(
        f"cut {cut.id} of test set {test_set} names no domain (no custom 'domain'): pass "
        f"--cut-domains {test_set}=NAME (a --tuners name or {BASE_DOMAIN})"
    )


def parse_cut_domains(spec: Optional[str], test_sets: Sequence[str]) -> Dict[str, str]:
    """--cut-domains, its test sets checked against --test-cuts."""
    if not spec:
        return {}
    cut_domains = parse_name_map(spec, "--cut-domains", "domain")
    unknown = [name for name in cut_domains if name not in test_sets]
    if unknown:
        raise UserError(
            f"--cut-domains names test set {unknown[0]}, which --test-cuts lacks: use one of {', '.join(test_sets)}"
        )
    return dict(cut_domains)


def add_file_domain_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument(
        "--domain", type=str, default=None, help="The domain of every sound file (a --tuners name or 'base')."
    )
    group.add_argument(
        "--domains", type=str, default=None, help="The domain of each sound file, comma-separated, in order."
    )


def file_domains(args: argparse.Namespace, sound_files: Sequence[str]) -> Optional[List[str]]:
    """Each sound file's domain name from --domain / --domains, or None when neither is given."""
    if args.domain is not None:
        return [args.domain] * len(sound_files)
    if args.domains is None:
        return None
    names = [name.strip() for name in args.domains.split(",")]
    if len(names) != len(sound_files):
        raise UserError(
            f"--domains names {len(names)} domains for {len(sound_files)} sound files: give one per file, "
            "or one --domain for all"
        )
    return names


def domains_table(rows: Mapping[str, Sequence[str]], wers: Mapping[str, float]) -> str:
    """The domains table: one row per test set, the domain(s) its cuts were decoded with, WER %."""
    lines = ["test set\tdomain\tWER"]
    lines += [f"{name}\t{','.join(rows[name])}\t{wers[name]:.2f}" for name in wers]
    return "\n".join(lines) + "\n"
