"""Sentences from Debian's `fortunes` files, normalised like LibriSpeech transcripts, per language.

Each fortune entry is cut into sentences; a sentence is kept only when a TTS engine will say exactly
its words: plain words of the language's alphabet (apostrophes inside words allowed), 4-20 words, no
symbols, abbreviations, acronyms or stray single letters, no digits (a language that spells numbers,
German, has them in words first: local/languages.py). Two forms are kept per sentence:
  spoken: what the TTS engine reads (original casing and punctuation, for natural prosody);
  text:   the transcript, LibriSpeech style: upper case, no punctuation except in-word apostrophes;
          English in a-z, German with its ä, ö, ü and ß.

Every normalised sentence appears at most once in a domain's own topics, so splits and domains never
share a sentence (except where a domain is told to add an earlier domain's train text to its own).
The split of each domain's sentences into dev / test / train partitions depends only on the seed
and the topic lists (not on how many utterances are synthesized).
"""
import logging
import random
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

from local.languages import ENGLISH, Language, spell_numbers
from zipformer.core.errors import UserError

FORTUNES_DIR = Path("/usr/share/games/fortunes")
MIN_WORDS, MAX_WORDS = 4, 20

_OVERSTRIKE = re.compile(r".\x08")  # "X<backspace>" pairs used for bold/underline in old fortunes


@dataclass(frozen=True)
class Sentence:
    spoken: str  # what the TTS engine reads
    text: str  # normalised transcript (upper case words)


def normalize_text(text: str, language: Language = ENGLISH) -> str:
    """LibriSpeech-style transcript: upper case words; apostrophes kept only inside words."""
    return " ".join(language.upper(w) for w in language.word.findall(text.replace("-", " ")))


def fortune_entries(path: Path) -> Iterable[str]:
    """The entries of one fortunes file (separated by lines holding a single '%'), attributions dropped."""
    raw = path.read_bytes().decode("utf-8", errors="replace")
    for entry in raw.split("\n%\n"):
        lines = []
        for line in _OVERSTRIKE.sub("", entry).splitlines():
            if line.strip().startswith("--"):
                break  # attribution ("-- Mark Twain") and anything after it
            lines.append(line.strip())
        text = " ".join(lines).strip()
        if text:
            yield text


def spoken_form(sentence: str, language: Language = ENGLISH) -> str:
    """Cleaned text for the TTS engine: quotes dropped, dashes become pauses, numbers in words."""
    sentence = sentence.replace("--", ", ").replace('"', " ").replace("`", " ").replace("''", " ")
    for quote in language.extra_quotes:
        sentence = sentence.replace(quote, " ")
    return spell_numbers(re.sub(r"\s+", " ", sentence).strip(" ,;:-"), language)


def rejection(sentence: str, language: Language = ENGLISH) -> Optional[str]:
    """Why a TTS engine would not read exactly the words of normalize_text(sentence), or None."""
    if not language.allowed_chars.match(sentence):
        return "digits" if re.search(r"\d", sentence) else f"characters outside the {language.name} alphabet"
    tokens = sentence.replace("-", " ").split()
    words = []
    for token in tokens:
        word = token.strip("'\",.;:!?`")
        if not word:
            continue
        if not language.word.fullmatch(word):
            return "odd tokens"  # e.g. "rock'n'roll'"
        bare = word.replace("'", "")
        if bare.lower() in language.abbreviations:
            return "abbreviations"
        if len(bare) > 1 and bare.isupper():
            return "acronyms"  # TTS may spell it letter by letter
        if len(bare) == 1 and bare not in language.single_letter_words:
            return "single letters"
        words.append(word)
    if not MIN_WORDS <= len(words) <= MAX_WORDS:
        return f"fewer than {MIN_WORDS} or more than {MAX_WORDS} words"
    return None


def is_speakable(sentence: str, language: Language = ENGLISH) -> bool:
    """True when a TTS engine reads exactly the words of normalize_text(sentence)."""
    return rejection(sentence, language) is None


def read_sentences(path: Path, language: Language = ENGLISH) -> Tuple[List[Sentence], Counter]:
    """The speakable sentences of one fortunes file, and the reasons the others were dropped, counted."""
    found, dropped = [], Counter()
    for entry in fortune_entries(path):
        for piece in language.sentence_end.split(entry):
            spoken = spoken_form(piece, language)
            if not spoken:
                continue
            reason = rejection(spoken, language)
            if reason is None:
                found.append(Sentence(spoken=spoken, text=normalize_text(spoken, language)))
            else:
                dropped[reason] += 1
    return found, dropped


def sentences_from_file(path: Path, language: Language = ENGLISH) -> List[Sentence]:
    """The speakable sentences of one fortunes file."""
    return read_sentences(path, language)[0]


def topic_path(topic: str, fortunes_dir: Path = FORTUNES_DIR) -> Path:
    path = fortunes_dir / topic
    if not path.is_file():
        raise UserError(
            f"fortunes file {path} not found: install Debian's fortunes packages with ./local/setup.sh "
            "(apt-get install fortunes fortunes-min fortunes-de) or remove the topic from the corpus config"
        )
    return path


def build_text_pools(
    topics_by_domain: Dict[str, Sequence[str]],
    reserve_by_domain: Dict[str, Dict[str, int]],
    seed: int,
    fortunes_dir: Path = FORTUNES_DIR,
    extra_train_from: Optional[Dict[str, Optional[str]]] = None,
    languages: Optional[Dict[str, Language]] = None,
) -> Dict[str, Dict[str, List[Sentence]]]:
    """Sentence partitions {domain: {"dev": [...], "test": [...], "train": [...]}}.

    Domains are processed in the order given; a normalised sentence already taken by an earlier
    domain (or split) is skipped, so no two dev/test partitions share a sentence with any other
    partition. A domain named in `extra_train_from` ({domain: earlier domain}) also trains on the
    earlier domain's train sentences (shuffled into its own): the only partitions that may overlap.
    Adding a domain at the end leaves the partitions of the earlier ones unchanged. A domain's
    sentences follow the rules of its language in `languages` ({domain: Language}; default English).
    Logs, per domain, the sentences kept and why the other pieces of text were dropped.
    """
    seen = set()
    pools = {}
    for index, (domain, topics) in enumerate(topics_by_domain.items()):
        language = (languages or {}).get(domain, ENGLISH)
        unique, dropped = [], Counter()
        for topic in topics:
            sentences, topic_dropped = read_sentences(topic_path(topic, fortunes_dir), language)
            dropped += topic_dropped
            for sentence in sentences:
                if sentence.text not in seen:
                    seen.add(sentence.text)
                    unique.append(sentence)
                else:
                    dropped["repeats"] += 1
        logging.info(
            f"{domain}: {len(unique)} {language.name} sentences ({len(topics)} fortunes files); dropped "
            f"{sum(dropped.values())} pieces: {', '.join(f'{n} {reason}' for reason, n in dropped.most_common())}"
        )
        random.Random(seed * 1000 + index).shuffle(unique)
        reserve = reserve_by_domain[domain]
        n_dev, n_test = reserve["dev"], reserve["test"]
        if len(unique) < n_dev + n_test + 1:
            raise UserError(
                f"{domain}: only {len(unique)} usable sentences in topics {', '.join(topics)}; "
                f"add topics or lower text_reserve in the corpus config"
            )
        train = unique[n_dev + n_test :]
        donor = (extra_train_from or {}).get(domain)
        if donor is not None:
            train = train + pools[donor]["train"]
            random.Random(f"extra-train-{seed}-{domain}").shuffle(train)
        pools[domain] = {"dev": unique[:n_dev], "test": unique[n_dev : n_dev + n_test], "train": train}
    return pools
