"""English sentences from Debian's `fortunes` files, normalised like LibriSpeech transcripts.

Each fortune entry is cut into sentences; a sentence is kept only when a TTS engine will say exactly
its words: plain alphabetic words (apostrophes inside words allowed), 4-20 words, no digits, symbols,
abbreviations, acronyms or stray single letters. Two forms are kept per sentence:
  spoken: what the TTS engine reads (original casing and punctuation, for natural prosody);
  text:   the transcript, LibriSpeech style: upper case, no punctuation except in-word apostrophes.

Every normalised sentence appears at most once in a domain's own topics, so splits and domains never
share a sentence (except where a domain is told to add an earlier domain's train text to its own).
The split of each domain's sentences into dev / test / train partitions depends only on the seed
and the topic lists (not on how many utterances are synthesized).
"""
import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence

from zipformer.core.errors import UserError

FORTUNES_DIR = Path("/usr/share/games/fortunes")
MIN_WORDS, MAX_WORDS = 4, 20

# Abbreviations end in "." and would be read differently from their normalised transcript.
_ABBREVIATIONS = {
    "mr", "mrs", "ms", "dr", "st", "jr", "sr", "vs", "etc", "eg", "ie", "prof", "gen", "col", "lt",
    "sgt", "capt", "rev", "inc", "ltd", "co", "wm", "mt", "ft", "no", "vol", "ch", "pp", "approx",
}
_ALLOWED_CHARS = re.compile(r"^[A-Za-z' ,.;:!?\"`-]+$")
_OVERSTRIKE = re.compile(r".\x08")  # "X<backspace>" pairs used for bold/underline in old fortunes
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
_WORD = re.compile(r"[A-Za-z]+(?:'[A-Za-z]+)*")


@dataclass(frozen=True)
class Sentence:
    spoken: str  # what the TTS engine reads
    text: str  # normalised transcript (upper case words)


def normalize_text(text: str) -> str:
    """LibriSpeech-style transcript: upper case words; apostrophes kept only inside words."""
    return " ".join(w.upper() for w in _WORD.findall(text.replace("-", " ")))


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


def spoken_form(sentence: str) -> str:
    """Cleaned text for the TTS engine: quotes dropped, dashes become pauses."""
    sentence = sentence.replace("--", ", ").replace('"', " ").replace("`", " ").replace("''", " ")
    return re.sub(r"\s+", " ", sentence).strip(" ,;:-")


def is_speakable(sentence: str) -> bool:
    """True when a TTS engine reads exactly the words of normalize_text(sentence)."""
    if not _ALLOWED_CHARS.match(sentence):
        return False
    tokens = sentence.replace("-", " ").split()
    words = []
    for token in tokens:
        word = token.strip("'\",.;:!?`")
        if not word:
            continue
        if not _WORD.fullmatch(word):
            return False  # e.g. "rock'n'roll'" or other odd tokens
        bare = word.replace("'", "")
        if bare.lower() in _ABBREVIATIONS:
            return False
        if len(bare) > 1 and bare.isupper():
            return False  # acronym: TTS may spell it letter by letter
        if len(bare) == 1 and bare not in ("a", "A", "I"):
            return False
        words.append(word)
    return MIN_WORDS <= len(words) <= MAX_WORDS


def sentences_from_file(path: Path) -> List[Sentence]:
    found = []
    for entry in fortune_entries(path):
        for piece in _SENTENCE_END.split(entry):
            spoken = spoken_form(piece)
            if spoken and is_speakable(spoken):
                found.append(Sentence(spoken=spoken, text=normalize_text(spoken)))
    return found


def topic_path(topic: str, fortunes_dir: Path = FORTUNES_DIR) -> Path:
    path = fortunes_dir / topic
    if not path.is_file():
        raise UserError(
            f"fortunes file {path} not found: install Debian's fortunes packages with ./local/setup.sh "
            "(apt-get install fortunes fortunes-min) or remove the topic from the corpus config"
        )
    return path


def build_text_pools(
    topics_by_domain: Dict[str, Sequence[str]],
    reserve_by_domain: Dict[str, Dict[str, int]],
    seed: int,
    fortunes_dir: Path = FORTUNES_DIR,
    extra_train_from: Optional[Dict[str, Optional[str]]] = None,
) -> Dict[str, Dict[str, List[Sentence]]]:
    """Sentence partitions {domain: {"dev": [...], "test": [...], "train": [...]}}.

    Domains are processed in the order given; a normalised sentence already taken by an earlier
    domain (or split) is skipped, so no two dev/test partitions share a sentence with any other
    partition. A domain named in `extra_train_from` ({domain: earlier domain}) also trains on the
    earlier domain's train sentences (shuffled into its own): the only partitions that may overlap.
    Adding a domain at the end leaves the partitions of the earlier ones unchanged.
    """
    seen = set()
    pools = {}
    for index, (domain, topics) in enumerate(topics_by_domain.items()):
        unique = []
        for topic in topics:
            for sentence in sentences_from_file(topic_path(topic, fortunes_dir)):
                if sentence.text not in seen:
                    seen.add(sentence.text)
                    unique.append(sentence)
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
