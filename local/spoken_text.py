"""Own-data transcripts to LibriSpeech-style words, without losing what a speaker said.

Accents fold to their base letters ("café" -> CAFE); numbers, currency, percentages, clock times
and ordinals become words with num2words ("$5.50 at 3pm" -> FIVE DOLLARS FIFTY CENTS AT THREE P M).
A transcript that still holds something with no spoken form here (digits glued to letters, other
scripts, symbols) is dropped with a reason instead of being split into wrong words. The
`NormalizationReport` counts every kind of change and every reason to drop, with an example each.
"""
import re
import unicodedata
from collections import Counter
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Dict, List, Optional, Tuple

from num2words import num2words

from local.text_corpus import normalize_text

# Letters that Unicode decomposition leaves whole.
_LETTER_FOLDS = {"ß": "ss", "æ": "ae", "Æ": "AE", "œ": "oe", "Œ": "OE", "ø": "o", "Ø": "O", "ł": "l", "Ł": "L",
                 "đ": "d", "Đ": "D", "þ": "th", "Þ": "TH", "ð": "d", "Ð": "D", "ı": "i"}
_TYPOGRAPHY = {"’": "'", "‘": "'", "“": '"', "”": '"', "–": " - ", "—": " - ", "…": " ", "\u00a0": " "}
_CURRENCIES = {"$": ("dollar", "dollars", "cent", "cents"), "€": ("euro", "euros", "cent", "cents"),
               "£": ("pound", "pounds", "penny", "pence")}
# Punctuation that is not spoken; anything else that is not a letter, digit or apostrophe is not understood.
_SILENT = set(" \t.,;:!?\"()[]{}-/'")

_NUMBER = r"\d{1,3}(?:,\d{3})+|\d+"
_CURRENCY = re.compile(rf"([$€£])\s?({_NUMBER})(?:\.(\d\d))?(?![\d.,]*\d)")
_TIME = re.compile(r"(?<![\w:])(\d{1,2})(?::(\d\d))?\s?([ap])\.?m\b\.?", re.IGNORECASE)
_CLOCK = re.compile(r"(?<![\w:])(\d{1,2}):(\d\d)(?![\w:])")
_ORDINAL = re.compile(r"(?<![\w.,])(\d+)(st|nd|rd|th)\b", re.IGNORECASE)
_PERCENT = re.compile(rf"(?<![\w.,])({_NUMBER})(\.\d+)?\s?%")
_PLAIN_NUMBER = re.compile(rf"(?<![\w.,])({_NUMBER})(\.\d+)?(?![\w]|[.,]\d)")


def _cardinal(digits: str, decimals: Optional[str] = None) -> str:
    value = Decimal(digits.replace(",", "") + (decimals or ""))
    return num2words(value)


def _currency(match: re.Match) -> str:
    one, many, sub_one, sub_many = _CURRENCIES[match.group(1)]
    whole = int(match.group(2).replace(",", ""))
    cents = int(match.group(3) or 0)
    words = f"{num2words(whole)} {one if whole == 1 else many}"
    if cents:
        words += f" {num2words(cents)} {sub_one if cents == 1 else sub_many}"
    return f" {words} "


def _clock(hour: str, minute: Optional[str]) -> str:
    words = num2words(int(hour))
    if minute and int(minute):
        words += (" oh " if minute.startswith("0") else " ") + num2words(int(minute))
    return words


def _time(match: re.Match) -> str:
    return f" {_clock(match.group(1), match.group(2))} {match.group(3).lower()} m "


# (kind of change, pattern, replacement), applied in this order: a "$5.50" is currency, not a number.
_RULES = (
    ("currency", _CURRENCY, _currency),
    ("times", _TIME, _time),
    ("times", _CLOCK, lambda m: f" {_clock(m.group(1), m.group(2))} "),
    ("ordinals", _ORDINAL, lambda m: f" {num2words(int(m.group(1)), to='ordinal')} "),
    ("percentages", _PERCENT, lambda m: f" {_cardinal(m.group(1), m.group(2))} percent "),
    ("numbers", _PLAIN_NUMBER, lambda m: f" {_cardinal(m.group(1), m.group(2))} "),
    ("ampersands", re.compile(r"\s&\s"), lambda m: " and "),
)


def fold_accents(text: str) -> str:
    """Letters with diacritics to their base letters; other characters unchanged."""
    text = "".join(_LETTER_FOLDS.get(c, c) for c in text)
    decomposed = unicodedata.normalize("NFKD", text)
    return unicodedata.normalize("NFC", "".join(c for c in decomposed if not unicodedata.combining(c)))


def _unspoken(text: str) -> str:
    """The characters of `text` that have no spoken form here, in order of appearance."""
    seen: Dict[str, None] = {}
    for c in text:
        if not (c in _SILENT or (c.isascii() and c.isalpha())):
            seen[c] = None
    return "".join(seen)


def to_spoken_words(text: str) -> Tuple[Optional[str], List[str], Optional[str]]:
    """(normalised transcript or None, kinds of change made, reason to drop it or None)."""
    kinds = []
    for before, after in _TYPOGRAPHY.items():
        text = text.replace(before, after)
    folded = fold_accents(text)
    if folded != text:
        kinds.append("accents folded")
    text = folded
    for kind, pattern, replace in _RULES:
        text, count = pattern.subn(replace, text)
        if count and kind not in kinds:
            kinds.append(kind)
    if re.search(r"\d", text):
        return None, kinds, "digits inside a word"
    unspoken = _unspoken(text)
    if unspoken:
        return None, kinds, f"characters with no spoken form ({unspoken[:10]})"
    return normalize_text(text), kinds, None


@dataclass
class NormalizationReport:
    """What normalisation did to a set of transcripts: counts by kind, one example each."""

    changed: Counter = field(default_factory=Counter)
    change_examples: Dict[str, Tuple[str, str]] = field(default_factory=dict)
    dropped: Counter = field(default_factory=Counter)
    drop_examples: Dict[str, Tuple[str, str]] = field(default_factory=dict)
    total: int = 0

    def normalize(self, utterance_id: str, text: str) -> Optional[str]:
        """The normalised transcript, or None when the utterance must be dropped; records what happened."""
        self.total += 1
        result, kinds, reason = to_spoken_words(text)
        if reason is not None:
            self.dropped[reason] += 1
            self.drop_examples.setdefault(reason, (utterance_id, text))
            return None
        for kind in kinds:
            self.changed[kind] += 1
            self.change_examples.setdefault(kind, (text, result))
        return result

    def summary(self) -> List[str]:
        """Lines for the log: one per kind of change and one per reason to drop."""
        lines = [f"text normalisation: {self.total} transcripts, {sum(self.dropped.values())} dropped"]
        for kind, count in self.changed.most_common():
            before, after = self.change_examples[kind]
            lines.append(f"  {kind}: {count} transcripts, e.g. '{before}' -> '{after}'")
        for reason, count in self.dropped.most_common():
            utterance_id, text = self.drop_examples[reason]
            lines.append(f"  dropped, {reason}: {count} utterances, e.g. {utterance_id}: '{text}'")
        return lines
