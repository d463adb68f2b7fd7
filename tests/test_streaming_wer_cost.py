"""local/benchmarks/streaming_wer_cost.py: the table of WER against chunk size, from decode.py's result files."""
import subprocess
import sys
from pathlib import Path

from local.benchmarks import streaming_wer_cost
from local.benchmarks.streaming_wer_cost import get_parser, read_wers, table


def write_summary(res_dir: Path, test_set: str, suffix: str, wer: float) -> None:
    res_dir.mkdir(parents=True, exist_ok=True)
    (res_dir / f"wer-summary-{test_set}-greedy_search-{suffix}.txt").write_text(f"settings\tWER\ngreedy_search\t{wer}\n")


def test_read_wers_takes_each_test_set_of_one_setting(tmp_path: Path):
    write_summary(tmp_path, "source", "epoch-9-avg-1-chunk-16-left-context-128-context-2", 20.5)
    write_summary(tmp_path, "target-b", "epoch-9-avg-1-chunk-16-left-context-128-context-2", 40.0)
    write_summary(tmp_path, "source", "epoch-9-avg-1-chunk-32-left-context-128-context-2", 19.0)
    assert read_wers(tmp_path, "epoch-9-avg-1-chunk-16-left-context-128-") == {"source": 20.5, "target-b": 40.0}


def test_table_gives_latency_and_the_change_against_full_context():
    lines = table({"source": 15.0, "target": 50.0}, {8: {"source": 18.5}, 32: {"source": 16.0, "target": 51.25}}, 128)
    assert lines[0] == "| chunk (audio) | algorithmic latency, ms | source WER % | target WER % |"
    assert lines[2] == "| full context | — | 15.00 | 50.00 |"
    # 8 frames of 50 Hz are 160 ms of audio; plus 130 ms of look-ahead.
    assert lines[3] == "| 8 (160 ms), left 128 | 290 | 18.50 (+3.50) | — |"
    assert lines[4] == "| 32 (640 ms), left 128 | 770 | 16.00 (+1.00) | 51.25 (+1.25) |"


def test_the_decodes_run_with_this_interpreter_and_the_extra_flags(monkeypatch):
    # Not the scripts' shebang: a .venv that is not activated must still be the one used.
    commands = []
    monkeypatch.setattr(subprocess, "run", lambda command, check: commands.append(command))
    args = get_parser().parse_args(["--exp-dir", "exp/base", "--epoch", "99", "--test-cuts", "a=a.jsonl.gz"])
    streaming_wer_cost.decode("streaming_decode.py", args, 16, 128, ["--num-threads", "1"])
    (command,) = commands
    assert command[0] == sys.executable and command[1].endswith("zipformer/streaming_decode.py")
    assert command[-2:] == ["--num-threads", "1"] and "--chunk-size" in command
