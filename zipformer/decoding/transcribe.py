"""pretrained.py's machinery: audio files -> the 80-dim Fbank of training -> a batch -> the search.

`main(recipe)` is the whole pretrained.py of a recipe; `pretrained_params`, `transcribe`,
`print_texts` and `load_checkpoint_model` serve the streaming and tuner variants.
"""
import argparse
import logging
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import sentencepiece as spm
import torch
from lhotse import Fbank, FbankConfig, Recording
from lhotse.augmentation.resample import resample

from zipformer.checkpoints.config import flags_given
from zipformer.checkpoints.loader import DecodingRecipe, ModelLoader
from zipformer.checkpoints.vocabulary import bpe_token_table, load_bpe_model
from zipformer.core.errors import UserError, exit_on_user_error
from zipformer.core.params import AttributeDict
from zipformer.decoding.session import check_chunk_flags, decode_batch
from zipformer.model.flags import add_model_arguments, add_search_arguments
from zipformer.model.frontend import FEATURE_DIM, LOG_EPS, SAMPLE_RATE, frontend_params
from zipformer.model.streaming import FULL_CONTEXT_NOTE


def get_parser(recipe: Optional[DecodingRecipe] = None) -> argparse.ArgumentParser:
    """The flags of pretrained.py; a tuner recipe's add its own (default: the base recipe)."""
    recipe = recipe or DecodingRecipe()
    parser = argparse.ArgumentParser(formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--checkpoint", type=str, required=True, help="A file with {'model': state_dict}.")
    parser.add_argument("--bpe-model", type=str, default="data/lang_bpe_500/bpe.model")
    parser.add_argument(
        "--method",
        type=str,
        default="greedy_search",
        choices=("greedy_search", "modified_beam_search", "beam_search"),
    )
    add_search_arguments(parser)
    parser.add_argument("sound_files", type=str, nargs="+", help="Audio files (wav, flac, ...).")
    add_model_arguments(parser)
    recipe.add_arguments(parser)
    return parser


def read_features(filenames: List[str]) -> List[torch.Tensor]:
    extractor = Fbank(FbankConfig(num_mel_bins=FEATURE_DIM))
    features = []
    for name in filenames:
        if not Path(name).is_file():
            raise UserError(f"audio file {name} not found")
        try:
            recording = Recording.from_file(name)
        except Exception as e:  # lhotse raises several types for unreadable audio
            raise UserError(f"cannot read audio file {name} ({e}): pass a wav/flac file") from None
        # Recording.resample would need scipy or torchaudio; lhotse's own resampler needs only torch.
        samples = torch.from_numpy(recording.load_audio()).mean(dim=0, keepdim=True)
        if recording.sampling_rate != SAMPLE_RATE:
            samples = resample(samples, recording.sampling_rate, SAMPLE_RATE)
        if samples.shape[-1] < 0.1 * SAMPLE_RATE:
            raise UserError(f"{name} is shorter than 0.1 s: nothing to transcribe")
        features.append(torch.from_numpy(extractor.extract(samples.numpy(), SAMPLE_RATE)))
    return features


def load_checkpoint_model(
    params: AttributeDict, recipe: DecodingRecipe, given: frozenset = frozenset(), streaming: bool = False
) -> Tuple[torch.nn.Module, spm.SentencePieceProcessor]:
    """The model of --checkpoint in eval mode, and the BPE model (sets blank_id, vocab_size).

    `given`: the flags typed on the command line (zipformer.checkpoints.config.flags_given). Unless
    `streaming`, a causal model given no latency decodes in full context.
    """
    sp = load_bpe_model(params.bpe_model)
    loader = ModelLoader(params, recipe, given, bpe_token_table(sp, params.bpe_model))
    if check_chunk_flags(params, given, full_context_by_default=not streaming):
        logging.info(FULL_CONTEXT_NOTE)
    return loader.build(), sp


def transcribe(params: AttributeDict, recipe: DecodingRecipe, given: frozenset = frozenset()) -> List[str]:
    """The text of each sound file: the files decoded as one batch, inside the recipe's batch_context."""
    model, sp = load_checkpoint_model(params, recipe, given)
    features = read_features(params.sound_files)
    batch = {
        "inputs": torch.nn.utils.rnn.pad_sequence(features, batch_first=True, padding_value=LOG_EPS),
        "supervisions": {"num_frames": torch.tensor([f.shape[0] for f in features])},
    }
    params.decoding_method = params.method
    with torch.no_grad(), recipe.batch_context(model, batch):
        hyps = decode_batch(params, model, sp, batch)
    return [" ".join(words) for words in hyps]


def pretrained_params(recipe: DecodingRecipe) -> Tuple[AttributeDict, frozenset]:
    """The flags of pretrained.py (get_parser(recipe)) as params, and the flags typed; logs to stderr."""
    logging.basicConfig(format="%(asctime)s %(levelname)s [%(filename)s:%(lineno)d] %(message)s", level=logging.INFO)
    parser = get_parser(recipe)
    params = AttributeDict(vars(parser.parse_args()))
    params.update(frontend_params())
    return params, flags_given(parser)


def print_texts(sound_files: Sequence[str], texts: Sequence[str]) -> None:
    for name, text in zip(sound_files, texts):
        print(f"{name}:\n{text}\n")


def main(recipe: DecodingRecipe) -> None:
    """pretrained.py of a recipe."""
    params, given = pretrained_params(recipe)
    with exit_on_user_error():
        texts = transcribe(params, recipe, given)
    print_texts(params.sound_files, texts)

