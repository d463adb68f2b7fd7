"""Result files and scoring: errs-*, recogs-*, wer-summary-* formats, GigaSpeech normalisation."""
import io
import logging
import math

import pytest

from zipformer.decoding.scoring import (
    log_wer_summary,
    normalize_gigaspeech_results,
    normalize_gigaspeech_text,
    read_hypotheses,
    store_transcripts,
    write_error_stats,
    write_wer_summary,
)

# Every alignment below is the unique minimum-edit one, so the expected text does not depend on
# kaldialign's tie-breaking. Given out of order: the report sorts by cut_id.
RESULTS = [
    ("u3", "HELLO BIG BIG WORLD".split(), []),
    ("u1", "THE CAT SAT ON THE MAT".split(), "THE CAT SAT IN THE HAT".split()),
    ("u5", "ON ON".split(), "IN IN".split()),
    ("u2", "A B C D".split(), "A C D E".split()),
    ("u4", "GO NOW".split(), "GO FAR AWAY NOW".split()),
    ("u6", [], []),
]

# By hand: N = 6 + 4 + 4 + 2 + 2 + 0 = 18 reference words.
# subs: ON->IN x3 (u1, u5 twice), MAT->HAT = 4; dels: B, HELLO, BIG x2, WORLD = 5;
# ins: E, FAR, AWAY = 3; correct = 18 - 4 - 5 = 9. WER = 12 / 18 = 66.666...% -> 66.67.
EXPECTED_ERRS = """\
%WER = 66.67
Errors: 3 insertions, 5 deletions, 4 substitutions, over 18 reference words (9 correct)
Search below for sections starting with PER-UTT DETAILS:, SUBSTITUTIONS:, DELETIONS:, INSERTIONS:, PER-WORD STATS:

PER-UTT DETAILS: corr or (ref->hyp)  
u1:\tTHE CAT SAT (ON->IN) THE (MAT->HAT)
u2:\tA (B->*) C D (*->E)
u3:\t(HELLO BIG BIG WORLD->*)
u4:\tGO (*->FAR AWAY) NOW
u5:\t(ON ON->IN IN)
u6:\t

SUBSTITUTIONS: count ref -> hyp
3   ON -> IN
1   MAT -> HAT

DELETIONS: count ref
2   BIG
1   WORLD
1   HELLO
1   B

INSERTIONS: count hyp
1   FAR
1   E
1   AWAY

PER-WORD STATS: word  corr tot_errs count_in_ref count_in_hyp
ON   0 3 3 0
IN   0 3 0 3
BIG   0 2 2 0
WORLD   0 1 1 0
MAT   0 1 1 0
HELLO   0 1 1 0
HAT   0 1 0 1
FAR   0 1 0 1
E   0 1 0 1
B   0 1 1 0
AWAY   0 1 0 1
THE   2 0 2 2
SAT   1 0 1 1
NOW   1 0 1 1
GO   1 0 1 1
D   1 0 1 1
CAT   1 0 1 1
C   1 0 1 1
A   1 0 1 1
"""


def errs_text(results, name="test-clean-greedy_search"):
    f = io.StringIO()
    wer = write_error_stats(f, name, results, enable_log=True)
    return f.getvalue(), wer


def test_errs_file_matches_hand_derived_text(caplog):
    with caplog.at_level(logging.INFO):
        text, wer = errs_text(RESULTS)
    assert text == EXPECTED_ERRS
    assert wer == 66.67
    assert "[test-clean-greedy_search] %WER 66.67% [12 / 18, 3 ins, 5 del, 4 sub ]" in caplog.text


def test_log_line_can_be_disabled(caplog):
    with caplog.at_level(logging.INFO):
        wer = write_error_stats(io.StringIO(), "x", RESULTS, enable_log=False)
    assert wer == 66.67
    assert "%WER" not in caplog.text


def test_sub_next_to_deletion_merges_into_one_run():
    # Which word kaldialign calls substituted is a tie; the merged run is the same either way.
    text, wer = errs_text([("a", "I LIKE RED APPLES".split(), "I LOVE APPLES".split())])
    assert "a:\tI (LIKE RED->LOVE) APPLES\n" in text
    assert wer == 50.0


def test_perfect_hypothesis():
    text, wer = errs_text([("a", ["HI", "THERE"], ["HI", "THERE"])])
    assert wer == 0.0
    assert text.startswith("%WER = 0.00\nErrors: 0 insertions, 0 deletions, 0 substitutions, over 2 reference words (2 correct)\n")
    assert "a:\tHI THERE\n" in text
    assert text.endswith("PER-WORD STATS: word  corr tot_errs count_in_ref count_in_hyp\nTHERE   1 0 1 1\nHI   1 0 1 1\n")


def test_empty_hypothesis_is_all_deletions():
    text, wer = errs_text([("a", ["HI", "THERE"], [])])
    assert wer == 100.0
    assert "a:\t(HI THERE->*)\n" in text
    assert "Errors: 0 insertions, 2 deletions, 0 substitutions, over 2 reference words (0 correct)" in text


def test_empty_reference_within_a_set_counts_insertions():
    text, wer = errs_text([("a", [], ["UH"]), ("b", ["YES"], ["YES"])])
    assert wer == 100.0  # 1 insertion over 1 reference word
    assert "a:\t(*->UH)\n" in text


def test_all_references_empty_gives_zero_or_inf(caplog):
    text, wer = errs_text([("a", [], [])])
    assert wer == 0.0
    assert text.startswith("%WER = 0.00\n")
    with caplog.at_level(logging.INFO):
        text, wer = errs_text([("a", [], ["NOISE", "WORD"])])
    assert math.isinf(wer)
    assert text.startswith("%WER = inf\nErrors: 2 insertions, 0 deletions, 0 substitutions, over 0 reference words")
    assert "%WER inf% [2 / 0, 2 ins, 0 del, 0 sub ]" in caplog.text


def test_wer_rounds_like_icefall():
    # 1 / 3 -> 33.33 in the file and the return value, 33.33% in the log.
    _, wer = errs_text([("a", ["A", "B", "C"], ["A", "B", "X"])])
    assert wer == 33.33


def test_recogs_format_sorted_by_cut_id(tmp_path):
    path = tmp_path / "recogs-test-clean-greedy_search-x.txt"
    store_transcripts(path, [("b-2", ["HELLO", "WORLD"], ["HELLO"]), ("a-1", ["IT'S"], [])])
    assert path.read_text() == (
        "a-1:\tref=[\"IT'S\"]\n"
        "a-1:\thyp=[]\n"
        "b-2:\tref=['HELLO', 'WORLD']\n"
        "b-2:\thyp=['HELLO']\n"
    )
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary file left behind
    assert read_hypotheses(path) == {"a-1": [], "b-2": ["HELLO"]}


def test_wer_summary_best_first(tmp_path):
    path = tmp_path / "wer-summary-test-clean-beam_size_4-x.txt"
    write_wer_summary(path, {"beam_size_4": 5.1, "greedy_search": 2.23, "beam_size_8": 3.0})
    assert path.read_text() == "settings\tWER\ngreedy_search\t2.23\nbeam_size_8\t3.0\nbeam_size_4\t5.1\n"


def test_log_wer_summary_tags_the_best(caplog):
    with caplog.at_level(logging.INFO):
        log_wer_summary("test-other", {"beam_size_4": 5.1, "greedy_search": 4.96})
    message = caplog.records[-1].getMessage()
    assert message == (
        "\nFor test-other, WER of different settings are:\n"
        "greedy_search\t4.96\tbest for test-other\n"
        "beam_size_4\t5.1\n"
    )


@pytest.mark.parametrize(
    "text, expected",
    [
        ("hello world", "HELLO WORLD"),  # case
        ("uh i mean um yes", "I MEAN YES"),  # fillers, after uppercasing
        ("UHH MM HM AH HUH HA ER OOF HEE ACH EEE EW EH UM UH OK", "OK"),  # every filler
        ("state-of-the-art e-commerce", "STATE OF THE ART E COMMERCE"),  # hyphens
        ("well <COMMA> it is <PERIOD> is it <QUESTIONMARK> yes <EXCLAMATIONPOINT>", "WELL IT IS IS IT YES"),
        ("<SIL> <NOISE> a <MUSIC> b <OTHER>", "A B"),  # garbage tags
        ("an <unk> and an <UNK>", "AN AND AN"),
        ("uh-huh", ""),  # '-' splits first, then both halves are fillers
        ("UHM HUMM ERR", "UHM HUMM ERR"),  # only exact matches are dropped
        ("  spaced   out\twords ", "SPACED OUT WORDS"),
        ("", ""),
    ],
)
def test_gigaspeech_normalisation(text, expected):
    assert normalize_gigaspeech_text(text) == expected


def test_gigaspeech_normalisation_of_results_touches_both_sides():
    results = [("c", ["uh", "e-mail", "<COMMA>"], ["UM", "E", "mail"])]
    assert normalize_gigaspeech_results(results) == [("c", ["E", "MAIL"], ["E", "MAIL"])]
