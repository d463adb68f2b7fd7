"""Checkpoint selection under a forgetting budget: the choice, its file, and decode/export reading it."""
import json
from pathlib import Path

import pytest
from test_adapter import base_ckpt, decode_adapters, finetune, hyps_of  # noqa: F401 (base_ckpt: a fixture)

from zipformer.core.errors import UserError
from zipformer.core.params import AttributeDict
from zipformer.tuners.recipes import TunerDecodingRecipe
from zipformer.tuners.selection import (
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
from zipformer_adapter.adapter import AdapterTuner

from conftest import data_flags, run_script

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


def test_use_selected_with_a_tuner_only_file_is_refused(tmp_path: Path):
    params = AttributeDict(use_selected=True, tuner_ckpt="adapter-epoch-3.pt", exp_dir=tmp_path, iter=0)
    with pytest.raises(UserError, match="takes the checkpoint from selected-checkpoint.json: drop --adapter-ckpt"):
        TunerDecodingRecipe(AdapterTuner()).load_state_dict(params)


def test_a_missing_or_foreign_selection_is_one_line(tmp_path: Path):
    with pytest.raises(UserError, match=f"--use-selected 1 needs {tmp_path / SELECTION_FILE}, which does not exist"):
        read_selection(tmp_path)
    (tmp_path / SELECTION_FILE).write_text(json.dumps({"epoch": 3}))
    with pytest.raises(UserError, match="is not a checkpoint selection"):
        read_selection(tmp_path)


# ---- the scripts, on a tiny adapter fine-tune ---------------------------------------------------

@pytest.fixture(scope="module")
def selected_exp(tiny_corpus, base_ckpt: Path, tmp_path_factory) -> Path:
    """A 2-epoch tiny adapter fine-tune on which select_checkpoint.py has run."""
    exp_dir = tmp_path_factory.mktemp("selection_exp")
    finetune(tiny_corpus, base_ckpt, exp_dir)
    proc = run_script(
        "zipformer_adapter/select_checkpoint.py", "--exp-dir", exp_dir, "--avg-candidates", "1",
        "--max-source-rise", "100", "--source-dev", tiny_corpus["source_dev"], "--target-dev", tiny_corpus["target_test"],
        *selection_data_flags(tiny_corpus),
    )
    (exp_dir / "select-stdout.txt").write_text(proc.stdout)
    return exp_dir


def selection_data_flags(corpus: dict) -> list:
    """data_flags without --test-cuts, which select_checkpoint.py sets itself."""
    flags = data_flags(corpus)
    i = flags.index("--test-cuts")
    return flags[:i] + flags[i + 2 :]


@pytest.mark.slow
def test_select_checkpoint_prints_the_table_and_writes_the_choice(selected_exp: Path):
    stdout = (selected_exp / "select-stdout.txt").read_text().splitlines()
    rows = [line.split("\t") for line in stdout if line[:1].isdigit()]
    # epochs 1 and 2, --avg 1, plain and averaged (epoch 1 has no averaged model: it needs epoch-0.pt)
    assert [row[:3] for row in rows] == [["1", "1", "0"], ["2", "1", "0"], ["2", "1", "1"]]
    assert all(row[6].startswith("yes") for row in rows)
    record = read_selection(selected_exp)
    chosen = [row for row in rows if row[6].endswith("*")]
    assert len(chosen) == 1
    assert chosen[0][:3] == [str(record["epoch"]), str(record["avg"]), str(int(record["use_averaged_model"]))]
    assert float(chosen[0][3]) == pytest.approx(record["target_dev_wer"], abs=0.005)
    assert stdout[-1].startswith("chosen: --epoch") and "--use-selected 1" in stdout[-1]


@pytest.mark.slow
def test_decode_and_export_use_the_selected_checkpoint(tiny_corpus, selected_exp: Path, tmp_path: Path):
    record = read_selection(selected_exp)
    name = f"epoch-{record['epoch']}-avg-{record['avg']}"
    averaged = "-use-averaged-model" if record["use_averaged_model"] else ""
    proc = decode_adapters(tiny_corpus, selected_exp, "--use-selected", "1", "--epoch", "30", "--avg", "15")
    # Said once, in the log (a log line before the log is set up would double every later line).
    assert proc.stderr.count(f"chosen in {selected_exp / SELECTION_FILE}") == 1
    hyps = hyps_of(selected_exp / "greedy_search", f"recogs-target-*{name}-*adapters-dim-4{averaged}.txt")
    # The selection swapped adapter tensors into one model; a fresh load decodes the same.
    assert hyps == hyps_of(selected_exp / "selection" / "greedy_search", f"recogs-target-*{name}-*adapters-dim-4{averaged}.txt")
    run_script("zipformer_adapter/export-onnx.py", "--tokens", tiny_corpus["tokens"], "--exp-dir", selected_exp,
               "--use-selected", "1")
    assert (selected_exp / f"encoder-{name}.onnx").is_file() and (selected_exp / f"joiner-{name}.int8.onnx").is_file()

    proc = decode_adapters(tiny_corpus, tmp_path, "--use-selected", "1", check=False)
    assert proc.returncode != 0
    assert proc.stderr.strip().splitlines()[-1] == (
        f"error: --use-selected 1 needs {tmp_path / SELECTION_FILE}, which does not exist: run select_checkpoint.py "
        f"on {tmp_path} first, or pass --use-selected 0 with --epoch/--avg/--use-averaged-model"
    )
