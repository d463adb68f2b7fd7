"""Checkpoint selection under a forgetting budget: the choice, its file, and decode/export reading it."""
import json
from pathlib import Path

import pytest

from conftest import run_script
from zipformer.selection import (
    SELECTION_FILE,
    Candidate,
    apply_selection,
    choose,
    format_table,
    list_candidates,
    make_row,
    read_selection,
    write_selection,
)
from zipformer.utils import AttributeDict, UserError

BASE_SOURCE = 30.0


def rows_of(table, budget=1.0):
    """table: (epoch, avg, averaged, target WER, source WER) tuples."""
    return [make_row(Candidate(e, a, bool(m)), t, s, BASE_SOURCE, budget) for e, a, m, t, s in table]


def test_candidates_are_only_those_whose_files_can_exist():
    found = list_candidates([1, 2, 3], [1, 2], [False, True])
    assert found == [
        Candidate(1, 1, False),
        Candidate(2, 1, False),
        Candidate(2, 1, True),
        Candidate(2, 2, False),
        Candidate(3, 1, False),
        Candidate(3, 1, True),
        Candidate(3, 2, False),
        Candidate(3, 2, True),
    ]


def test_the_best_target_wer_within_budget_is_chosen():
    rows = rows_of(
        [
            (2, 1, 0, 50.0, 30.5),
            (4, 1, 0, 45.0, 32.0),  # best target, but the source rose 2 points
            (4, 2, 1, 47.0, 31.0),  # a rise of exactly the budget is within it
            (3, 1, 0, 48.0, 30.2),
        ]
    )
    assert [row.within_budget for row in rows] == [True, False, True, True]
    assert rows[1].rise == pytest.approx(2.0)
    assert choose(rows, 1.0) == rows[2]
    # A wider budget lets the best target WER in.
    assert choose(rows_of([(2, 1, 0, 50.0, 30.5), (4, 1, 0, 45.0, 32.0)], budget=2.0), 2.0).candidate.epoch == 4


def test_a_tie_goes_to_fewer_epochs():
    rows = rows_of([(5, 1, 0, 47.0, 30.0), (3, 2, 1, 47.0, 30.4), (4, 1, 0, 47.0, 30.1)])
    assert choose(rows, 1.0).candidate == Candidate(3, 2, True)


def test_none_within_budget_is_one_line_naming_the_smallest_rise():
    rows = rows_of([(2, 1, 0, 50.0, 32.5), (3, 1, 1, 48.0, 31.75), (4, 1, 0, 45.0, 34.0)])
    with pytest.raises(UserError) as e:
        choose(rows, 1.0)
    message = str(e.value)
    assert "\n" not in message
    assert "+1.75 points (--epoch 3 --avg 1 --use-averaged-model 1)" in message
    assert "--max-source-rise" in message


def test_the_table_lists_every_candidate_and_marks_the_choice():
    rows = rows_of([(2, 1, 0, 50.0, 30.5), (4, 1, 0, 45.0, 32.0)])
    table = format_table(rows, rows[0], BASE_SOURCE, 1.0).splitlines()
    assert table[0].startswith("base model (tuner off): source-dev WER 30.00%")
    assert table[2].split("\t") == ["2", "1", "0", "50.00", "30.50", "+0.50", "yes  *"]
    assert table[3].split("\t") == ["4", "1", "0", "45.00", "32.00", "+2.00", "no"]


def test_the_choice_is_written_and_read_back(tmp_path: Path):
    rows = rows_of([(2, 1, 0, 50.0, 30.5), (4, 2, 1, 47.0, 31.0)])
    path = write_selection(tmp_path, rows[1], rows, BASE_SOURCE, 1.0, {"source": "s.jsonl.gz", "target": "t.jsonl.gz"})
    assert path == tmp_path / SELECTION_FILE
    assert [p.name for p in tmp_path.iterdir()] == [SELECTION_FILE]  # no temp file left
    record = read_selection(tmp_path)
    assert (record["epoch"], record["avg"], record["use_averaged_model"]) == (4, 2, True)
    assert (record["target_dev_wer"], record["source_dev_wer"], record["max_source_rise"]) == (47.0, 31.0, 1.0)
    assert record["base_source_dev_wer"] == BASE_SOURCE
    assert len(record["table"]) == 2 and record["table"][0]["target_wer"] == 50.0

    params = AttributeDict(exp_dir=tmp_path, epoch=30, avg=15, use_averaged_model=False, iter=0)
    assert apply_selection(params, {}) == Candidate(4, 2, True)
    assert (params.epoch, params.avg, params.use_averaged_model) == (4, 2, True)
    with pytest.raises(UserError, match="drop --iter"):
        apply_selection(AttributeDict(params, iter=100), {})


def test_a_missing_or_foreign_selection_is_one_line(tmp_path: Path):
    with pytest.raises(UserError, match=f"--use-selected 1 needs {tmp_path / SELECTION_FILE}, which does not exist"):
        read_selection(tmp_path)
    (tmp_path / SELECTION_FILE).write_text(json.dumps({"epoch": 3}))
    with pytest.raises(UserError, match="is not a checkpoint selection"):
        read_selection(tmp_path)
