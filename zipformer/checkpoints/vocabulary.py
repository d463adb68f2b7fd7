"""The model's vocabulary: loading the BPE model, and a fingerprint that ties checkpoints to it.

A transducer's output ids only mean something with the token table it was trained with: decoding
with another BPE model of the same size gives garbage without any error. Every checkpoint and
tuner file therefore stores `{"size": V, "fingerprint": F}`, where F hashes the V pieces in id
order. bpe.model and tokens.txt of one model give the same F, so decoding (bpe.model) and ONNX
export (tokens.txt) check the same thing.
"""
import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import sentencepiece as spm

from zipformer.core.errors import UserError

Vocabulary = dict[str, Any]

_warned_unchecked: set[str] = set()


def load_bpe_model(path: str) -> spm.SentencePieceProcessor:
    if not Path(path).is_file():
        raise UserError(f"BPE model {path} not found: run ./prepare.sh or pass --bpe-model")
    sp = spm.SentencePieceProcessor()
    try:
        sp.load(str(path))
    except (OSError, RuntimeError):
        raise UserError(f"{path} is not a sentencepiece model: pass the bpe.model written by prepare.sh") from None
    return sp


def vocabulary_of(pieces: Sequence[str]) -> Vocabulary:
    """{"size": V, "fingerprint": sha256 of the pieces in id order, 16 hex digits}."""
    digest = hashlib.sha256("\n".join(pieces).encode("utf-8")).hexdigest()[:16]
    return {"size": len(pieces), "fingerprint": digest}


def bpe_vocabulary(sp: spm.SentencePieceProcessor) -> Vocabulary:
    return vocabulary_of([sp.id_to_piece(i) for i in range(sp.get_piece_size())])


def tokens_vocabulary(table: Mapping[int, str]) -> Vocabulary:
    """The vocabulary of a tokens.txt table {id: symbol} (zipformer.deploy.inference.read_tokens)."""
    return vocabulary_of([table[i] for i in range(len(table))])


@dataclass(frozen=True)
class TokenTable:
    """The token table a script was given, as the model loader checks a checkpoint against it."""

    vocabulary: Vocabulary  # {"size", "fingerprint"}
    blank_id: int
    flag: str  # where it came from, for messages, e.g. "--bpe-model data/lang_bpe_500/bpe.model"

    @property
    def size(self) -> int:
        return self.vocabulary["size"]


def bpe_token_table(sp: spm.SentencePieceProcessor, path: str) -> TokenTable:
    """The token table of a loaded BPE model (`path`: its --bpe-model); <blk> is the blank."""
    return TokenTable(bpe_vocabulary(sp), sp.piece_to_id("<blk>"), f"--bpe-model {path}")


def tokens_token_table(table: Mapping[int, str], path: str, blank_id: int) -> TokenTable:
    """The token table of a tokens.txt {id: symbol} (`path`: its --tokens)."""
    return TokenTable(tokens_vocabulary(table), blank_id, f"--tokens {path}")


def check_vocabulary(stored: Optional[Mapping[str, Any]], actual: Vocabulary, source: str, flag: str) -> None:
    """Refuse a token table other than the one the checkpoint `source` was trained with.

    `flag` names where `actual` came from (e.g. "--bpe-model data/lang_bpe_500/bpe.model").
    A checkpoint without a stored vocabulary (icefall's pretrained.pt) is warned about once.
    """
    if not stored:
        if source not in _warned_unchecked:
            _warned_unchecked.add(source)
            logging.warning(
                f"{source} records no vocabulary fingerprint (e.g. icefall's pretrained.pt): "
                f"cannot check that {flag} is the one it was trained with"
            )
        return
    if stored["size"] != actual["size"]:
        raise UserError(
            f"{source} was trained with {stored['size']} tokens but {flag} has {actual['size']}: "
            "pass the BPE model / tokens.txt the model was trained with"
        )
    if stored["fingerprint"] != actual["fingerprint"]:
        raise UserError(
            f"{source} was trained with another BPE model of the same size (vocabulary fingerprint "
            f"{stored['fingerprint']}, {flag} has {actual['fingerprint']}): pass the BPE model / tokens.txt "
            "the model was trained with"
        )
