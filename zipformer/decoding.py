"""Decoding shared by every recipe: flags, checkpoint averaging, searches over cut sets, result files.

A recipe customises it through `DecodingRecipe` (how the model is built and how weights are
loaded into it), so the adapter recipe's decode.py stays a few lines.
"""
import argparse
import logging
import time
from pathlib import Path
from typing import Dict, List, Tuple

import sentencepiece as spm
import torch
from torch import nn

from zipformer.asr_datamodule import AsrDataModule
from zipformer.beam_search import beam_search, greedy_search, greedy_search_batch, modified_beam_search
from zipformer.checkpoint import load_averaged_state_dict
from zipformer.model_args import add_model_arguments, get_model
from zipformer.atomic import atomic_open
from zipformer.scoring import (
    log_wer_summary,
    normalize_gigaspeech_results,
    store_transcripts,
    write_error_stats,
    write_wer_summary,
)
from zipformer.training import load_bpe_model
from zipformer.utils import AttributeDict, UserError, count_parameters, exit_on_user_error, setup_logger, str2bool

SEARCH_METHODS = ("greedy_search", "beam_search", "modified_beam_search")
K2_METHODS = ("fast_beam_search", "fast_beam_search_nbest", "fast_beam_search_nbest_LG", "fast_beam_search_nbest_oracle")

# (cut_id, reference words, hypothesis words)
Result = Tuple[str, List[str], List[str]]


class DecodingRecipe:
    """Hooks a recipe may override. The base recipe decodes a plain model."""

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """Flags of this recipe, beyond the shared decoding/model/data flags."""

    def get_model(self, params: AttributeDict) -> nn.Module:
        return get_model(params)

    def load_state_dict(self, params: AttributeDict) -> Tuple[Dict[str, torch.Tensor], str]:
        """The weights to decode with (averaged per --epoch/--iter/--avg) and their description."""
        return load_averaged_state_dict(params, device=torch.device("cpu"))

    def load_weights(self, model: nn.Module, state_dict: Dict[str, torch.Tensor], params: AttributeDict) -> None:
        model.load_state_dict(state_dict, strict=True)

    def describe(self, params: AttributeDict) -> str:
        """Extra words for the result-file suffix."""
        return ""


def add_checkpoint_arguments(group, default_exp_dir: str, verb: str, exp_dir_help: str) -> None:
    """--epoch/--iter/--avg/--use-averaged-model/--exp-dir: which weights a script uses."""
    group.add_argument("--epoch", type=int, default=30, help=f"{verb} epoch-{{epoch}}.pt (and earlier ones for --avg).")
    group.add_argument("--iter", type=int, default=0, help=f"If > 0, {verb.lower()} checkpoint-{{iter}}.pt instead of --epoch.")
    group.add_argument("--avg", type=int, default=15, help="Number of checkpoints to average.")
    group.add_argument(
        "--use-averaged-model",
        type=str2bool,
        default=True,
        help="Average with the running model_avg of the checkpoints (see README) rather than a plain mean.",
    )
    group.add_argument("--exp-dir", type=Path, default=Path(default_exp_dir), help=exp_dir_help)


def checkpoint_suffix(params: AttributeDict) -> str:
    """epoch-{e}-avg-{a} or iter-{i}-avg-{a}, as icefall names result and exported files."""
    which = f"iter-{params.iter}" if params.iter > 0 else f"epoch-{params.epoch}"
    return f"{which}-avg-{params.avg}"


def add_decoding_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("Decoding options")
    add_checkpoint_arguments(group, "zipformer/exp", "Decode", "Checkpoints are read and results written here.")
    group.add_argument("--bpe-model", type=str, default="data/lang_bpe_500/bpe.model")
    group.add_argument("--lang-dir", type=Path, default=Path("data/lang_bpe_500"))
    group.add_argument(
        "--decoding-method",
        type=str,
        default="greedy_search",
        help=f"One of {', '.join(SEARCH_METHODS)}; {', '.join(K2_METHODS)} need k2.",
    )
    group.add_argument("--beam-size", type=int, default=4, help="Beam of beam_search and modified_beam_search.")
    group.add_argument("--context-size", type=int, default=2, help="Decoder left context: 1 bigram, 2 trigram.")
    group.add_argument("--max-sym-per-frame", type=int, default=1, help="Symbols per frame in greedy_search.")
    group.add_argument(
        "--gigaspeech-scoring",
        type=str2bool,
        default=False,
        help="Normalise references and hypotheses as GigaSpeech's scoring does (fillers, tags, hyphens).",
    )
    group.add_argument(
        "--num-threads", type=int, default=0, help="CPU threads for PyTorch (0: its default, one per core)."
    )


def get_parser(recipe: DecodingRecipe) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_decoding_arguments(parser)
    add_model_arguments(parser)
    AsrDataModule.add_arguments(parser)
    recipe.add_arguments(parser)
    return parser


def check_decoding_method(params: AttributeDict) -> None:
    method = params.decoding_method
    if method in K2_METHODS:
        try:
            import k2  # noqa: F401
        except ImportError:
            raise UserError(
                f"--decoding-method {method} needs k2, which is not installed: "
                f"use one of {', '.join(SEARCH_METHODS)}"
            ) from None
        raise UserError(f"--decoding-method {method} is not implemented in this recipe: use one of {', '.join(SEARCH_METHODS)}")
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
    suffix = checkpoint_suffix(params)
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
) -> List[Result]:
    results: List[Result] = []
    start = time.time()
    audio_seconds = 0.0
    for batch_idx, batch in enumerate(dl):
        cut_ids = [cut.id for cut in batch["supervisions"]["cut"]]
        refs = batch["supervisions"]["text"]
        warn_non_finite_features(batch["inputs"], cut_ids, test_set_name)
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


def check_vocabulary(state_dict: Dict[str, torch.Tensor], params: AttributeDict, flag: str = "--bpe-model") -> None:
    """The checkpoint's vocabulary must be params.vocab_size, which came from the file of `flag`."""
    embedding = state_dict.get("decoder.embedding.weight")
    if embedding is not None and embedding.shape[0] != params.vocab_size:
        source = params[flag.removeprefix("--").replace("-", "_")]
        raise UserError(
            f"the checkpoint was trained with {embedding.shape[0]} tokens but {source} has "
            f"{params.vocab_size}: pass the {flag} the model was trained with"
        )


def load_model(params: AttributeDict, recipe: DecodingRecipe, device: torch.device) -> nn.Module:
    model = recipe.get_model(params)
    logging.info(f"Number of model parameters: {count_parameters(model)}")
    state_dict, description = recipe.load_state_dict(params)
    logging.info(f"Using {description}")
    check_vocabulary(state_dict, params)
    try:
        recipe.load_weights(model, state_dict, params)
    except RuntimeError as e:
        first_line = str(e).strip().splitlines()[-1].strip()
        raise UserError(f"the checkpoint does not fit the model ({first_line}): check the model-shape flags") from None
    model.to(device)
    model.eval()
    return model


class DecodingSession:
    """Everything decoding needs, set up once: params, model, BPE model, test sets."""

    def __init__(self, recipe: DecodingRecipe, args: argparse.Namespace) -> None:
        params = AttributeDict({"feature_dim": 80, "subsampling_factor": 4})
        params.update(vars(args))
        params.exp_dir = Path(params.exp_dir)
        check_decoding_method(params)
        params.res_dir = params.exp_dir / params.decoding_method
        params.res_dir.mkdir(parents=True, exist_ok=True)
        self.suffix = result_suffix(params, recipe)
        setup_logger(params.res_dir / f"log-decode-{self.suffix}")
        logging.info("Decoding started")

        self.device = torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")
        logging.info(f"Device: {self.device}")
        if params.num_threads > 0:
            torch.set_num_threads(params.num_threads)
        self.sp = load_bpe_model(params.bpe_model)
        params.blank_id = self.sp.piece_to_id("<blk>")
        params.vocab_size = self.sp.get_piece_size()
        logging.info(params)
        self.params = params
        self.model = load_model(params, recipe, self.device)
        self.data = AsrDataModule(params)
        self.test_sets = self.data.load_test_cuts()

    def decode_all(self, suffix: str) -> Dict[str, float]:
        """Decode every test set and write its result files; return {test_set_name: WER %}."""
        params = self.params
        key = result_key(params)
        wers = {}
        with torch.no_grad():
            for name, cuts in self.test_sets.items():
                results = decode_dataset(self.data.test_dataloaders(cuts), params, self.model, self.sp, name)
                if params.gigaspeech_scoring:
                    results = normalize_gigaspeech_results(results)
                wers[name] = save_results(params, name, results, key, suffix)
        return wers


def run(recipe: DecodingRecipe, args: argparse.Namespace) -> Dict[str, float]:
    """Decode every test set; return {test_set_name: WER in percent}."""
    session = DecodingSession(recipe, args)
    wers = session.decode_all(session.suffix)
    logging.info("Done!")
    return wers


def main(recipe: DecodingRecipe) -> None:
    args = get_parser(recipe).parse_args()
    with exit_on_user_error():
        run(recipe, args)
