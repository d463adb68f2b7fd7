"""The languages of the embedded corpus's sentences: each one's letters, upper-casing, numbers and abbreviations.

English (the source, target and target_b domains) keeps the rules the corpus was built with: the
letters a-z and in-word apostrophes, a sentence with digits is dropped. German (the german domain)
keeps its own letters in the transcripts instead of folding them (ä, ö, ü, ß: "GRÖßE", not "GROESSE";
ß has no capital in use and stays ß when the rest is upper-cased) and spells numbers with
num2words(lang="de") in the text the TTS engine reads, so that what it says and the transcript agree:
  "Er wurde 90." -> spoken "Er wurde neunzig.", transcript "ER WURDE NEUNZIG"
  "1.000 Mann"   -> "eintausend Mann" (German groups thousands with "."); "3,5" -> "drei Komma fünf";
  "bis 1822"     -> "bis achtzehnhundertzweiundzwanzig" (1100-1999 unseparated: read as years).
A number it cannot read with certainty stays digits, and the sentence is then dropped: an ordinal
("am 3. Mai"), a leading zero, a number glued to letters or signs ("5%", "20:15", "1990-2000", "IPv6").
"""
import re
from dataclasses import dataclass
from decimal import Decimal
from functools import cached_property
from typing import Callable, Dict, FrozenSet, Pattern

from num2words import num2words

from zipformer.core.errors import UserError

# Characters the spoken form may hold besides the letters: punctuation that shapes prosody only.
_PUNCTUATION = "' ,.;:!?\"`-"


@dataclass(frozen=True)
class Language:
    """How the sentences of one language become (spoken form, transcript) pairs."""

    code: str  # ISO 639-1; num2words' and espeak-ng's name of the language
    name: str  # lhotse's SupervisionSegment.language, and the log's name of the alphabet
    extra_letters: str  # lower-case letters besides a-z (their capitals are added)
    abbreviations: FrozenSet[str]  # lower-case words without their dots: read differently from their letters
    single_letter_words: FrozenSet[str]  # the one-letter words (any other single letter is an abbreviation)
    extra_quotes: str = ""  # typographic quotes dropped from the spoken form, as '"' is
    ordinal_period: bool = False  # "3. Mai": a period after digits marks an ordinal, not a sentence end

    @cached_property
    def letters(self) -> str:
        """Every letter of the alphabet, both cases ("ß" has no capital in use)."""
        lower = "abcdefghijklmnopqrstuvwxyz" + self.extra_letters
        return lower + "".join(sorted({c.upper() for c in lower if len(c.upper()) == 1} - set(lower)))

    @cached_property
    def word(self) -> Pattern:
        """A word: letters, apostrophes only inside ("don't", "geht's")."""
        letter = f"[{re.escape(self.letters)}]"
        return re.compile(f"{letter}+(?:'{letter}+)*")

    @cached_property
    def allowed_chars(self) -> Pattern:
        """A spoken form made only of the alphabet and punctuation."""
        return re.compile(f"^[{re.escape(self.letters + _PUNCTUATION)}]+$")

    @cached_property
    def sentence_end(self) -> Pattern:
        """Where an entry is cut into sentences: after . ! ? and white space."""
        return re.compile(r"(?<=[.!?])(?<!\d\.)\s+" if self.ordinal_period else r"(?<=[.!?])\s+")

    def upper(self, word: str) -> str:
        """`word` in capitals, with the letters that have no capital in use ("ß") kept."""
        return "".join(c if len(c.upper()) > 1 else c.upper() for c in word)


ENGLISH = Language(
    code="en",
    name="English",
    extra_letters="",
    # Abbreviations end in "." and would be read differently from their normalised transcript.
    abbreviations=frozenset({
        "mr", "mrs", "ms", "dr", "st", "jr", "sr", "vs", "etc", "eg", "ie", "prof", "gen", "col", "lt",
        "sgt", "capt", "rev", "inc", "ltd", "co", "wm", "mt", "ft", "no", "vol", "ch", "pp", "approx",
    }),
    single_letter_words=frozenset({"a", "A", "I"}),
)

GERMAN = Language(
    code="de",
    name="German",
    extra_letters="äöüß",
    # Abbreviations that are no German word: they end a sentence piece ("Das sagte Dr.") and would be
    # read as letters. Words that double as names or nouns (Max, Franz, Jan, Kap) are left out.
    abbreviations=frozenset({
        "abs", "abt", "allg", "bd", "bsp", "bspw", "bzgl", "bzw", "ca", "chr", "dh", "dr", "dt", "ehem",
        "eigtl", "engl", "etc", "evtl", "feb", "ff", "fr", "frl", "geb", "gest", "ggf", "hr", "hrn",
        "hrsg", "inkl", "insb", "jh", "jhd", "jhs", "jr", "jun", "lat", "mio", "mrd", "nr", "okt", "od",
        "prof", "sen", "sog", "std", "str", "st", "tel", "ua", "usf", "usw", "uvm", "verh", "vgl", "vs",
        "zb", "zt", "zzgl", "dez", "nov", "sept",
    }),
    single_letter_words=frozenset(),
    extra_quotes="»«„“”",
    ordinal_period=True,
)

LANGUAGES = {language.code: language for language in (ENGLISH, GERMAN)}


def language_named(code: str) -> Language:
    """The Language of an ISO 639-1 code ("en", "de"); a UserError names the known ones."""
    if code not in LANGUAGES:
        raise UserError(f"unknown language '{code}': use one of {', '.join(LANGUAGES)} (local/languages.py)")
    return LANGUAGES[code]


# A German number: grouped thousands ("10.000") or plain digits, an optional decimal part ("3,5");
# not glued to a word, a sign or other digits, and followed by white space, one punctuation mark
# and white space, or a sentence's final period (a period before more text marks an ordinal).
_GERMAN_NUMBER = re.compile(r"(?<![\w.,:/+-])(\d{1,3}(?:\.\d{3})+|\d+)(?:,(\d+))?(?=[,;:!?\")]?(?:\s|$)|\.$)")


def _german_number(match: re.Match) -> str:
    whole, decimals = match.group(1).replace(".", ""), match.group(2)
    if len(whole) > 1 and whole.startswith("0"):
        return match.group(0)  # "007": read digit by digit, not as a number
    if decimals:
        return num2words(Decimal(f"{whole}.{decimals}"), lang="de")
    if match.group(1) == whole and 1100 <= int(whole) <= 1999:
        return num2words(int(whole), lang="de", to="year")
    return num2words(int(whole), lang="de")


# How each language that spells its numbers reads them; the others keep their digits.
_NUMBER_READERS: Dict[str, Callable[[str], str]] = {"de": lambda text: _GERMAN_NUMBER.sub(_german_number, text)}


def spell_numbers(text: str, language: Language) -> str:
    """`text` with its numbers in words, for a language that spells them (German); unchanged otherwise."""
    reader = _NUMBER_READERS.get(language.code)
    return reader(text) if reader else text
