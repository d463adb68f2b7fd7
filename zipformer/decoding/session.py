"""Decoding shared by every recipe: flags, searches over cut sets, result files.

A recipe customises it through `zipformer.checkpoints.loader.DecodingRecipe` (how the model is built, how
weights are loaded into it, what a batch decodes inside), so a tuner recipe's decode.py stays a few
lines. The model, its configuration and vocabulary come from `zipformer.checkpoints.loader`
(ModelLoader).
"""
import argparse
import logging
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import sentencepiece as spm
import torch
from torch import nn

from zipformer.checkpoints.averaging import add_checkpoint_arguments, checkpoint_suffix
from zipformer.checkpoints.config import flags_given
from zipformer.checkpoints.loader import DecodingRecipe, ModelLoader
from zipformer.checkpoints.vocabulary import bpe_token_table, load_bpe_model
from zipformer.core.atomic import atomic_open
from zipformer.core.errors import UserError, exit_on_user_error
from zipformer.core.flag_types import int_at_least, str2bool
from zipformer.core.logs import setup_logger
from zipformer.core.params import AttributeDict
from zipformer.data.asr_datamodule import AsrDataModule
from zipformer.data.default_cuts import GIGASPEECH_TEST_CUTS, named_cuts
from zipformer.decoding.beam_search import beam_search, greedy_search, greedy_search_batch, modified_beam_search
from zipformer.decoding.scoring import (
    log_wer_summary,
    normalize_gigaspeech_results,
    store_transcripts,
    write_error_stats,
    write_wer_summary,
)
from zipformer.model.flags import add_model_arguments, add_search_arguments
from zipformer.model.frontend import frontend_params
from zipformer.model.streaming import (
    FULL_CONTEXT_NOTE,
    append_tail_padding,
    chunk_suffix,
    decoding_chunk_config,
    full_context_unless_given,
)

SEARCH_METHODS = ("greedy_search", "beam_search", "modified_beam_search")

# (cut_id, reference words, hypothesis words)
Result = Tuple[str, List[str], List[str]]


def add_decoding_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("Decoding options")
    add_checkpoint_arguments(group, "zipformer/exp", "Decode", "Checkpoints are read and results written here.")
    group.add_argument("--bpe-model", type=str, default="data/lang_bpe_500/bpe.model")
    group.add_argument(
        "--decoding-method",
        type=str,
        default="greedy_search",
        help=f"One of {', '.join(SEARCH_METHODS)} (icefall's fast_beam_search* need k2's FSAs: not in this recipe).",
    )
    add_search_arguments(group)
    group.add_argument(
        "--gigaspeech-scoring",
        type=str2bool,
        default=False,
        help="Normalise references and hypotheses as GigaSpeech's scoring does (fillers, tags, hyphens).",
    )
    group.add_argument(
        "--num-threads", type=int_at_least(0), default=0, help="CPU threads for PyTorch (0: its default, one per core)."
    )


def get_parser(recipe: DecodingRecipe) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_decoding_arguments(parser)
    add_model_arguments(parser)
    AsrDataModule.add_arguments(parser)
    recipe.add_arguments(parser)
    return parser


class GigaSpeechDecodingRecipe(DecodingRecipe):
    """decode_gigaspeech.py: GigaSpeech's test sets and scoring, results in {exp_dir}/{method}_giga as icefall's."""

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        test_cuts = named_cuts(Path("data/fbank"), GIGASPEECH_TEST_CUTS)
        parser.set_defaults(test_cuts=test_cuts, gigaspeech_scoring=True, res_dir_suffix="_giga")


def check_decoding_method(params: AttributeDict) -> None:
    method = params.decoding_method
    if method not in SEARCH_METHODS:
        raise UserError(f"unknown --decoding-method {method}: use one of {', '.join(SEARCH_METHODS)}")
    if params.max_sym_per_frame < 1:
        raise UserError("--max-sym-per-frame must be >= 1")


def result_key(params: AttributeDict) -> str:
    if params.decoding_method == "greedy_search":
        return "greedy_search"
    return f"beam_size_{params.beam_size}"


def result_suffix(params: AttributeDict, recipe: DecodingRecipe) -> str:
    """icefall's hyphen style, e.g. epoch-20-avg-10-context-2-max-sym-per-frame-1-use-averaged-model."""
    suffix = checkpoint_suffix(params) + chunk_suffix(params)
    if params.decoding_method == "greedy_search":
        suffix += f"-context-{params.context_size}-max-sym-per-frame-{params.max_sym_per_frame}"
    else:
        suffix += f"-{params.decoding_method}-beam-size-{params.beam_size}"
    suffix += recipe.describe(params)
    if params.use_averaged_model:
        suffix += "-use-averaged-model"
    return suffix


def decode_batch(
    params: AttributeDict, model: nn.Module, sp: spm.SentencePieceProcessor, batch: dict
) -> List[List[str]]:
    """Hypotheses (lists of words) of one batch, in the batch's order."""
    device = next(model.parameters()).device
    feature = batch["inputs"].to(device)
    feature_lens = batch["supervisions"]["num_frames"].to(device)
    # Tail padding lets a chunked model see its last frames in a full chunk (icefall pads every
    # causal decode); in full context it only adds frames, which sherpa-onnx's offline recognizer
    # and the non-streaming ONNX export do not see.
    if params.causal and decoding_chunk_config(params)[0] > 0:
        feature, feature_lens = append_tail_padding(feature, feature_lens)
    encoder_out, encoder_out_lens = model.forward_encoder(feature, feature_lens)

    method = params.decoding_method
    if method == "greedy_search" and params.max_sym_per_frame == 1:
        hyp_tokens = greedy_search_batch(model=model, encoder_out=encoder_out, encoder_out_lens=encoder_out_lens)
    elif method == "modified_beam_search":
        hyp_tokens = modified_beam_search(
            model=model, encoder_out=encoder_out, encoder_out_lens=encoder_out_lens, beam=params.beam_size
        )
    else:
        hyp_tokens = []
        for i in range(encoder_out.size(0)):
            one = encoder_out[i : i + 1, : encoder_out_lens[i]]
            if method == "greedy_search":
                hyp_tokens.append(greedy_search(model=model, encoder_out=one, max_sym_per_frame=params.max_sym_per_frame))
            else:
                hyp_tokens.append(beam_search(model=model, encoder_out=one, beam=params.beam_size))
    return [hyp.split() for hyp in sp.decode(hyp_tokens)]


def warn_non_finite_features(features: torch.Tensor, cut_ids: List[str], test_set_name: str) -> None:
    """A NaN/inf in an utterance's features decodes to an empty or wrong hypothesis: say which cut."""
    finite = torch.isfinite(features).flatten(1).all(dim=1)
    for cut_id, ok in zip(cut_ids, finite.tolist()):
        if not ok:
            logging.warning(
                f"[{test_set_name}] cut {cut_id} has non-finite (NaN/inf) features: its hypothesis is meaningless; "
                "recompute its features"
            )


def decode_dataset(
    dl: torch.utils.data.DataLoader,
    params: AttributeDict,
    model: nn.Module,
    sp: spm.SentencePieceProcessor,
    test_set_name: str,
    recipe: DecodingRecipe,
) -> List[Result]:
    """Decode every batch of `dl` inside the recipe's batch_context; the results in the loader's order."""
    results: List[Result] = []
    start = time.time()
    audio_seconds = 0.0
    for batch_idx, batch in enumerate(dl):
        cut_ids = [cut.id for cut in batch["supervisions"]["cut"]]
        refs = batch["supervisions"]["text"]
        warn_non_finite_features(batch["inputs"], cut_ids, test_set_name)
        with recipe.batch_context(model, batch):
            hyps = decode_batch(params, model, sp, batch)
        for cut_id, ref, hyp in zip(cut_ids, refs, hyps):
            results.append((cut_id, ref.split(), hyp))
        audio_seconds += batch["supervisions"]["num_frames"].sum().item() * 0.01
        if batch_idx % 20 == 0:
            elapsed = time.time() - start
            logging.info(
                f"[{test_set_name}] batch {batch_idx}, {len(results)} utterances, "
                f"real-time factor {elapsed / max(audio_seconds, 1e-9):.4f}"
            )
    elapsed = time.time() - start
    logging.info(
        f"[{test_set_name}] decoded {len(results)} utterances ({audio_seconds / 3600:.2f} h) in {elapsed:.1f} s, "
        f"real-time factor {elapsed / max(audio_seconds, 1e-9):.4f}"
    )
    return results


def save_results(
    params: AttributeDict, test_set_name: str, results: List[Result], key: str, suffix: str
) -> float:
    """Write recogs-, errs- and wer-summary- files; return the WER in percent."""
    res_dir = params.res_dir
    store_transcripts(filename=res_dir / f"recogs-{test_set_name}-{key}-{suffix}.txt", results=results)
    errs_filename = res_dir / f"errs-{test_set_name}-{key}-{suffix}.txt"
    with atomic_open(errs_filename) as f:
        wer = write_error_stats(f, f"{test_set_name}-{key}", results, enable_log=True)
    logging.info(f"Wrote detailed error stats to {errs_filename}")
    test_set_wers = {key: wer}
    write_wer_summary(res_dir / f"wer-summary-{test_set_name}-{key}-{suffix}.txt", test_set_wers)
    log_wer_summary(test_set_name, test_set_wers)
    return wer


def check_chunk_flags(params: AttributeDict, given: frozenset, full_context_by_default: bool = True) -> bool:
    """Check the latency flags of a causal model (a single chunk size and left context, or none);
    return whether it decodes in full context because none was typed (decode.py and pretrained.py
    do so by default; the streaming scripts need a latency)."""
    full_context = full_context_by_default and full_context_unless_given(params, given)
    if params.causal:
        decoding_chunk_config(params)
    return full_context


class DecodingSession:
    """Everything decoding needs, set up once: params, model, BPE model, test sets.

    Results go to exp_dir/<results_subdir>/<decoding_method>; a subclass may decode a test set
    differently by overriding decode_test_set.
    """

    results_subdir = ""
    # A causal model without a latency on the command line decodes in full context (streaming: no).
    full_context_by_default = True

    def __init__(self, recipe: DecodingRecipe, args: argparse.Namespace, given: frozenset = frozenset()) -> None:
        """`given`: the flags typed on the command line (zipformer.checkpoints.config.flags_given)."""
        params = AttributeDict(frontend_params())
        params.update(vars(args))
        params.exp_dir = Path(params.exp_dir)
        self.recipe = recipe
        check_decoding_method(params)
        if params.num_threads > 0:
            torch.set_num_threads(params.num_threads)
        self.sp = load_bpe_model(params.bpe_model)
        # The configuration stored with the weights names the result files, so it comes first.
        loader = ModelLoader(params, recipe, given, bpe_token_table(self.sp, params.bpe_model))
        full_context = check_chunk_flags(params, given, self.full_context_by_default)
        method_dir = params.decoding_method + params.get("res_dir_suffix", "")
        params.res_dir = params.exp_dir / self.results_subdir / method_dir
        params.res_dir.mkdir(parents=True, exist_ok=True)
        self.suffix = result_suffix(params, recipe)
        setup_logger(params.res_dir / f"log-decode-{self.suffix}")
        logging.info("Decoding started")
        if full_context:
            logging.info(FULL_CONTEXT_NOTE)
        self.device = torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")
        logging.info(f"Device: {self.device}")
        self.model = loader.build()
        self.model.to(self.device)
        logging.info(params)
        self.params = params
        self.data = AsrDataModule(params)
        self.test_sets = self.data.load_test_cuts()

    def decode_all(self, suffix: str, names: Optional[Sequence[str]] = None) -> Dict[str, float]:
        """Decode every test set (or those in `names`) and write its result files; return {test_set_name: WER %}."""
        wers = {}
        with torch.no_grad():
            for name, cuts in self.test_sets.items():
                if names is not None and name not in names:
                    continue
                wers[name] = self.save_test_set(name, self.decode_test_set(name, cuts), suffix)
        return wers

    def save_test_set(self, name: str, results: List[Result], suffix: str) -> float:
        """Score one test set's results (GigaSpeech-normalised if asked) and write its files; the WER %."""
        if self.params.gigaspeech_scoring:
            results = normalize_gigaspeech_results(results)
        return save_results(self.params, name, results, result_key(self.params), suffix)

    def decode_test_set(self, name: str, cuts) -> List[Result]:
        return decode_dataset(self.data.test_dataloaders(cuts), self.params, self.model, self.sp, name, self.recipe)


def main(recipe: DecodingRecipe) -> None:
    """decode.py of a recipe."""
    parser = get_parser(recipe)
    args = parser.parse_args()
    with exit_on_user_error():
        session = DecodingSession(recipe, args, flags_given(parser))
        session.decode_all(session.suffix)
        logging.info("Done!")
