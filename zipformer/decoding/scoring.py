"""Scoring and result files of a decoding run, in icefall's formats.

- recogs-*.txt: `store_transcripts`, read back by `read_hypotheses`
- errs-*.txt: `write_error_stats` (and the `[{set}-{key}] %WER ...` log line)
- wer-summary-*.txt: `write_wer_summary`, and `log_wer_summary` for the log
- GigaSpeech's scoring normalisation: `normalize_gigaspeech_text`, `normalize_gigaspeech_results`

A result is (cut_id, reference words, hypothesis words).

WER is 100 * (insertions + deletions + substitutions) / (reference words). When the references hold
no words at all, it is defined as 0.0 if the hypotheses are empty too, and +inf otherwise (any
inserted word against nothing is an unbounded error rate), instead of failing on a division by zero.
"""
import ast
import logging
from collections import Counter
from pathlib import Path
from typing import Dict, List, Sequence, TextIO, Tuple, Union

import kaldialign

from zipformer.core.atomic import atomic_open

Result = Tuple[str, List[str], List[str]]
PathLike = Union[str, Path]

# The epsilon of the alignment: a "*" side is an insertion (ref) or a deletion (hyp).
EPS = "*"

# Tokens GigaSpeech's scoring ignores, compared after uppercasing.
GIGASPEECH_CONVERSATIONAL_FILLERS = tuple("UH UHH UM EH MM HM AH HUH HA ER OOF HEE ACH EEE EW".split())
GIGASPEECH_UNK_TAGS = ("<UNK>",)  # <unk> too: uppercasing comes first
GIGASPEECH_PUNCTUATION_TAGS = ("<COMMA>", "<PERIOD>", "<QUESTIONMARK>", "<EXCLAMATIONPOINT>")
GIGASPEECH_GARBAGE_TAGS = ("<SIL>", "<NOISE>", "<MUSIC>", "<OTHER>")
GIGASPEECH_NON_SCORING_TOKENS = frozenset(
    GIGASPEECH_CONVERSATIONAL_FILLERS + GIGASPEECH_UNK_TAGS + GIGASPEECH_PUNCTUATION_TAGS + GIGASPEECH_GARBAGE_TAGS
)


def _sorted_by_cut_id(results: Sequence[Result]) -> List[Result]:
    return sorted(results, key=lambda result: result[0])


def store_transcripts(filename: PathLike, results: Sequence[Result]) -> None:
    """Write a recogs file: per utterance, sorted by cut_id, the lines
    `{cut_id}:\\tref={ref words as a Python list}` and `{cut_id}:\\thyp={hyp words as a Python list}`."""
    with atomic_open(filename) as f:
        for cut_id, ref, hyp in _sorted_by_cut_id(results):
            print(f"{cut_id}:\tref={list(ref)}", file=f)
            print(f"{cut_id}:\thyp={list(hyp)}", file=f)


def read_hypotheses(filename: PathLike) -> Dict[str, List[str]]:
    """{cut_id: hypothesis words} of a recogs file written by store_transcripts."""
    hyps = {}
    for line in Path(filename).read_text().splitlines():
        cut_id, rest = line.split(":\t", 1)
        if rest.startswith("hyp="):
            hyps[cut_id] = ast.literal_eval(rest[len("hyp="):])
    return hyps


def word_error_rate(num_errors: int, num_ref_words: int) -> float:
    """WER in percent; for an empty reference see the module docstring."""
    if num_ref_words == 0:
        return 0.0 if num_errors == 0 else float("inf")
    return 100.0 * num_errors / num_ref_words


def _error_fraction(num_errors: int, num_ref_words: int) -> float:
    # Computed as errors / N (not WER / 100) so that the log line rounds exactly as icefall's does.
    if num_ref_words == 0:
        return word_error_rate(num_errors, num_ref_words)
    return num_errors / num_ref_words


def _merge_error_runs(alignment: List[Tuple[str, str]]) -> str:
    """Correct words as they are; each run of consecutive errors as `(ref words->hyp words)`, `*` for an empty side."""
    pieces: List[str] = []
    run_ref: List[str] = []
    run_hyp: List[str] = []
    in_run = False

    def close_run() -> None:
        pieces.append(f"({' '.join(run_ref) or EPS}->{' '.join(run_hyp) or EPS})")
        run_ref.clear()
        run_hyp.clear()

    for ref_word, hyp_word in alignment:
        if ref_word == hyp_word:
            if in_run:
                close_run()
                in_run = False
            pieces.append(ref_word)
            continue
        in_run = True
        if ref_word != EPS:
            run_ref.append(ref_word)
        if hyp_word != EPS:
            run_hyp.append(hyp_word)
    if in_run:
        close_run()
    return " ".join(pieces)


def _by_count_descending(counts: Counter) -> list:
    """Items by count, largest first; ties in reverse order of the key (icefall's sort of (count, key) tuples)."""
    return sorted(((count, key) for key, count in counts.items()), reverse=True)


def write_error_stats(f: TextIO, test_set_name: str, results: Sequence[Result], enable_log: bool = True) -> float:
    """Write the errs-* report for `results` to `f` and return the WER in percent, rounded to 2 decimals.

    The report (icefall's layout): `%WER = x.xx`; the Errors line; the "Search below" line; then the
    sections PER-UTT DETAILS (utterances sorted by cut_id, runs of errors merged), SUBSTITUTIONS,
    DELETIONS, INSERTIONS (by count, largest first) and PER-WORD STATS (by total errors, largest
    first), each after a blank line. Ties sort in reverse alphabetical order, as in icefall.
    Alignment is kaldialign's with `*` as epsilon.
    With `enable_log`, logs `[{test_set_name}] %WER 12.34% [errs / N, i ins, d del, s sub ]`.
    """
    results = _sorted_by_cut_id(results)
    substitutions: Counter = Counter()
    deletions: Counter = Counter()
    insertions: Counter = Counter()
    # Per word: correct, substituted in ref, substituted in hyp, inserted, deleted.
    word_counts: Dict[str, List[int]] = {}
    num_correct = 0
    alignments = []
    for _, ref, hyp in results:
        alignment = kaldialign.align(ref, hyp, EPS)
        alignments.append(alignment)
        for ref_word, hyp_word in alignment:
            if ref_word == EPS:
                insertions[hyp_word] += 1
                word_counts.setdefault(hyp_word, [0] * 5)[3] += 1
            elif hyp_word == EPS:
                deletions[ref_word] += 1
                word_counts.setdefault(ref_word, [0] * 5)[4] += 1
            elif ref_word != hyp_word:
                substitutions[(ref_word, hyp_word)] += 1
                word_counts.setdefault(ref_word, [0] * 5)[1] += 1
                word_counts.setdefault(hyp_word, [0] * 5)[2] += 1
            else:
                word_counts.setdefault(ref_word, [0] * 5)[0] += 1
                num_correct += 1

    num_ref_words = sum(len(ref) for _, ref, _ in results)
    num_subs = sum(substitutions.values())
    num_dels = sum(deletions.values())
    num_ins = sum(insertions.values())
    num_errors = num_subs + num_dels + num_ins
    wer = word_error_rate(num_errors, num_ref_words)
    if enable_log:
        logging.info(
            f"[{test_set_name}] %WER {_error_fraction(num_errors, num_ref_words):.2%} "
            f"[{num_errors} / {num_ref_words}, {num_ins} ins, {num_dels} del, {num_subs} sub ]"
        )

    print(f"%WER = {wer:.2f}", file=f)
    print(
        f"Errors: {num_ins} insertions, {num_dels} deletions, {num_subs} substitutions, "
        f"over {num_ref_words} reference words ({num_correct} correct)",
        file=f,
    )
    print(
        "Search below for sections starting with PER-UTT DETAILS:, SUBSTITUTIONS:, DELETIONS:, INSERTIONS:, "
        "PER-WORD STATS:",
        file=f,
    )
    print("", file=f)
    print("PER-UTT DETAILS: corr or (ref->hyp)  ", file=f)
    for (cut_id, _, _), alignment in zip(results, alignments):
        print(f"{cut_id}:\t{_merge_error_runs(alignment)}", file=f)

    print("", file=f)
    print("SUBSTITUTIONS: count ref -> hyp", file=f)
    for count, (ref_word, hyp_word) in _by_count_descending(substitutions):
        print(f"{count}   {ref_word} -> {hyp_word}", file=f)

    print("", file=f)
    print("DELETIONS: count ref", file=f)
    for count, ref_word in _by_count_descending(deletions):
        print(f"{count}   {ref_word}", file=f)

    print("", file=f)
    print("INSERTIONS: count hyp", file=f)
    for count, hyp_word in _by_count_descending(insertions):
        print(f"{count}   {hyp_word}", file=f)

    print("", file=f)
    print("PER-WORD STATS: word  corr tot_errs count_in_ref count_in_hyp", file=f)
    per_word = sorted(((sum(c[1:]), word, c) for word, c in word_counts.items()), reverse=True)
    for total_errors, word, (corr, ref_sub, hyp_sub, ins, dels) in per_word:
        print(f"{word}   {corr} {total_errors} {corr + ref_sub + dels} {corr + hyp_sub + ins}", file=f)
    return float(f"{wer:.2f}")


def _best_first(test_set_wers: Dict[str, float]) -> List[Tuple[str, float]]:
    return sorted(test_set_wers.items(), key=lambda item: item[1])


def write_wer_summary(filename: PathLike, test_set_wers: Dict[str, float]) -> None:
    """Write `settings\\tWER`, then `{key}\\t{wer}` per setting, lowest WER first."""
    with atomic_open(filename) as f:
        print("settings\tWER", file=f)
        for key, wer in _best_first(test_set_wers):
            print(f"{key}\t{wer}", file=f)


def log_wer_summary(test_set_name: str, test_set_wers: Dict[str, float]) -> None:
    """Log `For {set}, WER of different settings are:` and `{key}\\t{wer}` lines, lowest first,
    the first tagged `\\tbest for {set}`."""
    lines = [f"\nFor {test_set_name}, WER of different settings are:"]
    for rank, (key, wer) in enumerate(_best_first(test_set_wers)):
        note = f"\tbest for {test_set_name}" if rank == 0 else ""
        lines.append(f"{key}\t{wer}{note}")
    logging.info("\n".join(lines) + "\n")


def normalize_gigaspeech_text(text: str) -> str:
    """GigaSpeech's scoring normalisation (icefall's `asr_text_post_processing`): uppercase, every
    '-' becomes a space, and fillers, <UNK> and the punctuation and garbage tags are dropped."""
    words = text.upper().replace("-", " ").split()
    return " ".join(word for word in words if word not in GIGASPEECH_NON_SCORING_TOKENS)


def normalize_gigaspeech_results(results: Sequence[Result]) -> List[Result]:
    """Apply `normalize_gigaspeech_text` to both sides of every result, before scoring and recogs."""
    return [
        (cut_id, normalize_gigaspeech_text(" ".join(ref)).split(), normalize_gigaspeech_text(" ".join(hyp)).split())
        for cut_id, ref, hyp in results
    ]
