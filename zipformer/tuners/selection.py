"""Checkpoint selection under a forgetting budget: the choice, its table and its file.

A fine-tune with a tuner is judged on two dev sets: the target domain (where it should improve)
and the source domain (where, with the tuner on, it should not degrade much). Among candidate
checkpoints (epoch, --avg, averaged model or not) the choice is the best target-dev WER among
those whose source-dev WER rises by at most `budget` absolute WER points over the base model's
(the tuner off); ties go to fewer epochs. The choice is written to {exp_dir}/selected-checkpoint.json,
which decode.py and export-onnx.py read with --use-selected 1 instead of --epoch/--avg/--use-averaged-model.
The decoding that produces the WERs is in zipformer.tuners.select_main (select_checkpoint.py).
"""
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence

from zipformer.core.atomic import atomic_write_text
from zipformer.core.errors import UserError
from zipformer.core.params import AttributeDict

SELECTION_FILE = "selected-checkpoint.json"
SELECTION_FORMAT = 1


@dataclass(frozen=True)
class Candidate:
    """A checkpoint as decode.py's --epoch/--avg/--use-averaged-model name it."""

    epoch: int
    avg: int
    use_averaged_model: bool

    def describe(self) -> str:
        return f"--epoch {self.epoch} --avg {self.avg} --use-averaged-model {int(self.use_averaged_model)}"


@dataclass(frozen=True)
class Row:
    """One candidate's dev WERs (%); `rise` is its source-dev WER minus the base model's, in points."""

    candidate: Candidate
    target_wer: float
    source_wer: float
    rise: float
    within_budget: bool


def list_candidates(epochs: Iterable[int], avgs: Iterable[int], averaged: Iterable[bool]) -> List[Candidate]:
    """Every combination that can exist: an averaged model from epoch e over avg a needs epoch e - a >= 1
    (its start point), a plain mean needs epochs e - a + 1 .. e >= 1."""
    found = []
    for epoch in sorted(set(epochs)):
        for avg in sorted(set(avgs)):
            for use_averaged in sorted(set(averaged)):
                first_needed = epoch - avg if use_averaged else epoch - avg + 1
                if first_needed >= 1:
                    found.append(Candidate(epoch, avg, use_averaged))
    return found


def make_row(candidate: Candidate, target_wer: float, source_wer: float, base_source_wer: float, budget: float) -> Row:
    rise = source_wer - base_source_wer
    # Rounded as the table shows it, so a rise printed as the budget is within it.
    return Row(candidate, target_wer, source_wer, rise, round(rise, 2) <= budget)


def choose(rows: Sequence[Row], budget: float) -> Row:
    """The best target-dev WER among the rows within budget; ties: fewer epochs, then fewer averaged,
    then the plain mean. UserError naming the smallest rise when no row is within budget."""
    if not rows:
        raise UserError("no candidate checkpoints: check --exp-dir, --epoch-candidates and --avg-candidates")
    within = [row for row in rows if row.within_budget]
    if not within:
        least = min(rows, key=lambda row: row.rise)
        raise UserError(
            f"no candidate keeps the source-dev WER within +{budget:g} points of the base model's: the smallest "
            f"rise is {least.rise:+.2f} points ({least.candidate.describe()}); raise --max-source-rise to at "
            f"least {least.rise:.2f} or fine-tune with fewer epochs or a lower --base-lr"
        )
    return min(
        within,
        key=lambda row: (row.target_wer, row.candidate.epoch, row.candidate.avg, row.candidate.use_averaged_model),
    )


def format_table(rows: Sequence[Row], chosen: Optional[Row], base_source_wer: float, budget: float) -> str:
    """The table the choice was made from, one row per candidate, the chosen one (if any) marked with '*'."""
    lines = [
        f"base model (tuner off): source-dev WER {base_source_wer:.2f}%; budget: a rise of at most {budget:.2f} points",
        "epoch\tavg\taveraged\ttarget-dev WER\tsource-dev WER\trise\twithin budget",
    ]
    for row in rows:
        c = row.candidate
        mark = "  *" if row == chosen else ""
        lines.append(
            f"{c.epoch}\t{c.avg}\t{int(c.use_averaged_model)}\t{row.target_wer:.2f}\t{row.source_wer:.2f}\t"
            f"{row.rise:+.2f}\t{'yes' if row.within_budget else 'no'}{mark}"
        )
    return "\n".join(lines) + "\n"


def write_selection(
    exp_dir: Path, chosen: Row, rows: Sequence[Row], base_source_wer: float, budget: float, dev_sets: Dict[str, str]
) -> Path:
    """{exp_dir}/selected-checkpoint.json, atomically: the choice, its WERs, the budget and the table."""
    record = {
        "format": SELECTION_FORMAT,
        **asdict(chosen.candidate),
        "target_dev_wer": chosen.target_wer,
        "source_dev_wer": chosen.source_wer,
        "base_source_dev_wer": base_source_wer,
        "source_rise": chosen.rise,
        "max_source_rise": budget,
        "dev_sets": dev_sets,
        "table": [{**asdict(row.candidate), **{k: v for k, v in asdict(row).items() if k != "candidate"}} for row in rows],
    }
    path = Path(exp_dir) / SELECTION_FILE
    atomic_write_text(path, json.dumps(record, indent=2) + "\n")
    return path


def read_selection(exp_dir: Path) -> Dict[str, Any]:
    """The record write_selection wrote; UserError when it is missing or unreadable."""
    path = Path(exp_dir) / SELECTION_FILE
    if not path.is_file():
        raise UserError(
            f"--use-selected 1 needs {path}, which does not exist: run select_checkpoint.py on {exp_dir} "
            "first, or pass --use-selected 0 with --epoch/--avg/--use-averaged-model"
        )
    try:
        record = json.loads(path.read_text())
        Candidate(int(record["epoch"]), int(record["avg"]), bool(record["use_averaged_model"]))
    except (ValueError, KeyError, TypeError) as e:
        raise UserError(f"{path} is not a checkpoint selection ({type(e).__name__}: {e}): run select_checkpoint.py again") from None
    return record


def apply_selection(params: AttributeDict, other_sources: Dict[str, str]) -> Candidate:
    """Put the selected checkpoint of params.exp_dir into params.epoch/avg/use_averaged_model (iter 0).

    `other_sources`: {flag: dest} of the flags that would pick weights otherwise (an error when set).
    """
    for flag, dest in {"--checkpoint": "checkpoint", "--iter": "iter", **other_sources}.items():
        if params.get(dest):
            raise UserError(f"--use-selected 1 takes the checkpoint from {SELECTION_FILE}: drop {flag}")
    record = read_selection(params.exp_dir)
    chosen = Candidate(int(record["epoch"]), int(record["avg"]), bool(record["use_averaged_model"]))
    params.update(iter=0, **asdict(chosen))
    return chosen
