#!/usr/bin/env python3
"""Train the BPE model (sentencepiece unigram) and write tokens.txt, as icefall's lang_bpe_500.

Usage:
  ./local/prepare_lang.py --lang-dir data/lang_bpe_500 --vocab-size 500 --text data/local/text/source_train.tsv
  ./local/prepare_lang.py --lang-dir data/lang_bpe_500 --cuts data/manifests/librispeech_supervisions_train-clean-100.jsonl.gz

--text: one sentence per line (for a .tsv, the first TAB-separated field); --cuts: the `text` of every
supervision of lhotse supervision or cut manifests. Writes {lang-dir}/transcript_words.txt,
unigram_{V}.model, bpe.model (a copy) and tokens.txt ("symbol id" per line). Ids: <blk>=0,
<sos/eos>=1, <unk>=2. Skipped when bpe.model and tokens.txt are newer than the input text.
"""
import argparse
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterable, List, Sequence

import sentencepiece as spm
from lhotse import load_manifest_lazy
from sentencepiece import sentencepiece_model_pb2

from local.manifest_io import up_to_date
from zipformer.core.atomic import atomic_write_text
from zipformer.core.errors import UserError, exit_on_user_error

SPECIAL_SYMBOLS = ("<blk>", "<sos/eos>")
UNK = "<unk>"


def read_text_lines(paths: Sequence[Path]) -> List[str]:
    lines = []
    for path in paths:
        if not Path(path).is_file():
            raise UserError(f"text file {path} not found: run the text/manifest stage first")
        for line in Path(path).read_text().splitlines():
            sentence = line.split("\t", 1)[0].strip()
            if sentence:
                lines.append(sentence)
    return lines


def read_manifest_texts(paths: Sequence[Path]) -> List[str]:
    lines = []
    for path in paths:
        if not Path(path).is_file():
            raise UserError(f"manifest {path} not found: run the manifest stage first")
        for item in load_manifest_lazy(path):
            supervisions = getattr(item, "supervisions", None)
            for sup in supervisions if supervisions is not None else [item]:
                if sup.text and sup.text.strip():
                    lines.append(sup.text.strip())
    return lines


def _drop_training_paths(model: Path, vocab_size: int) -> None:
    """Replace the absolute temp paths sentencepiece records in the model, so that the same text
    always gives a byte-identical bpe.model (the shipped base model depends on it)."""
    proto = sentencepiece_model_pb2.ModelProto()
    proto.ParseFromString(model.read_bytes())
    proto.trainer_spec.input[:] = ["transcript_words.txt"]
    proto.trainer_spec.model_prefix = f"unigram_{vocab_size}"
    model.write_bytes(proto.SerializeToString())


def train_bpe(sentences: Iterable[str], lang_dir: Path, vocab_size: int = 500) -> Path:
    """Train `unigram_{vocab_size}.model`, copy it to bpe.model, write tokens.txt; returns bpe.model."""
    sentences = list(sentences)
    if not sentences:
        raise UserError("no training text for the BPE model: check the text/manifests given")
    lang_dir = Path(lang_dir)
    lang_dir.mkdir(parents=True, exist_ok=True)
    transcript = lang_dir / "transcript_words.txt"
    atomic_write_text(transcript, "".join(f"{s}\n" for s in sentences))
    with tempfile.TemporaryDirectory(dir=lang_dir, prefix=".tmp-bpe-") as tmp:
        prefix = Path(tmp) / f"unigram_{vocab_size}"
        try:
            spm.SentencePieceTrainer.train(
                input=str(transcript),
                model_prefix=str(prefix),
                model_type="unigram",
                vocab_size=vocab_size,
                character_coverage=1.0,
                user_defined_symbols=list(SPECIAL_SYMBOLS),
                unk_id=len(SPECIAL_SYMBOLS),
                unk_piece=UNK,
                bos_id=-1,
                eos_id=-1,
                input_sentence_size=100_000_000,
                num_threads=1,  # deterministic result for a given text
                minloglevel=2,
            )
        except RuntimeError as e:
            raise UserError(
                f"sentencepiece could not train a {vocab_size}-token model on {len(sentences)} "
                f"sentences ({e}); give it more text or a smaller --vocab-size"
            ) from None
        model = prefix.with_suffix(".model")
        _drop_training_paths(model, vocab_size)
        sp = spm.SentencePieceProcessor(model_file=str(model))
        tokens = "".join(f"{sp.id_to_piece(i)} {i}\n" for i in range(sp.get_piece_size()))
        os.replace(model, lang_dir / model.name)
    tmp_bpe = lang_dir / ".tmp-bpe.model"
    shutil.copyfile(lang_dir / f"unigram_{vocab_size}.model", tmp_bpe)
    os.replace(tmp_bpe, lang_dir / "bpe.model")
    atomic_write_text(lang_dir / "tokens.txt", tokens)
    check_lang_dir(lang_dir, vocab_size)
    return lang_dir / "bpe.model"


def check_lang_dir(lang_dir: Path, vocab_size: int) -> None:
    """UserError unless bpe.model and tokens.txt agree and have the special ids icefall expects."""
    sp = spm.SentencePieceProcessor(model_file=str(lang_dir / "bpe.model"))
    expected = {"<blk>": 0, "<sos/eos>": 1, UNK: 2}
    for symbol, token_id in expected.items():
        if sp.piece_to_id(symbol) != token_id:
            raise UserError(f"{lang_dir}/bpe.model: {symbol} has id {sp.piece_to_id(symbol)}, expected {token_id}")
    if sp.get_piece_size() != vocab_size:
        raise UserError(f"{lang_dir}/bpe.model has {sp.get_piece_size()} tokens, expected {vocab_size}")
    lines = (lang_dir / "tokens.txt").read_text().splitlines()
    if len(lines) != vocab_size:
        raise UserError(f"{lang_dir}/tokens.txt has {len(lines)} lines, expected {vocab_size}: delete it and rerun")


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lang-dir", type=Path, default=Path("data/lang_bpe_500"))
    parser.add_argument("--vocab-size", type=int, default=500)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--text", type=Path, nargs="+", help="text files, one sentence per line")
    source.add_argument("--cuts", type=Path, nargs="+", help="lhotse supervision/cut manifests")
    return parser


def main() -> None:
    args = get_parser().parse_args()
    logging.basicConfig(format="%(asctime)s %(levelname)s [%(filename)s:%(lineno)d] %(message)s", level=logging.INFO)
    with exit_on_user_error():
        inputs = args.text or args.cuts
        if up_to_date([args.lang_dir / "bpe.model", args.lang_dir / "tokens.txt"], inputs):
            check_lang_dir(args.lang_dir, args.vocab_size)
            logging.info(f"{args.lang_dir}/bpe.model and tokens.txt are up to date, skipping")
            return
        sentences = read_text_lines(args.text) if args.text else read_manifest_texts(args.cuts)
        model = train_bpe(sentences, args.lang_dir, args.vocab_size)
        logging.info(f"trained {model} on {len(sentences)} sentences")


if __name__ == "__main__":
    main()
