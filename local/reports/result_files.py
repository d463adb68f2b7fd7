"""Reading back what the stages wrote: WERs from wer-summary-* files, hypotheses from recogs-*
files, trainable parameters, epoch times and memory from training logs; and how the reports print them."""
import re
from pathlib import Path
from typing import Dict, List, Optional

GREEDY = "greedy_search"


def read_wer(res_dir: Path, test_set: str, suffix_pattern: str) -> Optional[float]:
    """WER % from the one wer-summary file matching the pattern, or None if it is not there."""
    files = sorted(res_dir.glob(f"wer-summary-{test_set}-{GREEDY}-{suffix_pattern}.txt"))
    if not files:
        return None
    value = files[-1].read_text().splitlines()[1].split("\t")[1]
    return float(value)


def read_hyps(res_dir: Path, test_set: str, suffix_pattern: str) -> Optional[List[str]]:
    files = sorted(res_dir.glob(f"recogs-{test_set}-{GREEDY}-{suffix_pattern}.txt"))
    if not files:
        return None
    return [line for line in files[-1].read_text().splitlines() if "\thyp=" in line]


def training_stats(exp_dir: Path) -> Dict[str, str]:
    """Trainable parameters, mean seconds per epoch, throughput and peak memory from the train log."""
    logs = sorted((exp_dir / "log").glob("log-train-*"))
    if not logs:
        return {}
    text = logs[-1].read_text()
    stats = {}
    trainable = re.search(r"A total of (\d+) trainable parameters \(([\d.]+)% of the whole model\)", text)
    if trainable:
        stats["trainable"] = f"{int(trainable.group(1)):,} ({trainable.group(2)}%)"
    epochs = re.findall(r"Epoch \d+ done in ([\d.]+) s: ([\d.]+) s of audio/s, peak memory (\d+) MB", text)
    if epochs:
        seconds = [float(e[0]) for e in epochs]
        rates = [float(e[1]) for e in epochs]
        stats["s_per_epoch"] = f"{sum(seconds) / len(seconds):.0f}"
        stats["throughput"] = f"{sum(rates) / len(rates):.1f}"
        stats["peak_mb"] = str(max(int(e[2]) for e in epochs))
    return stats


def same_hyps(dir_a: Path, dir_b: Path, pattern_a: str, pattern_b: str, test_set: str = "source") -> str:
    """"yes" when both decodes of `test_set` gave the same hypotheses (recogs files are sorted by cut
    id), "NO" if not, "—" if one is missing."""
    hyps_a, hyps_b = read_hyps(dir_a, test_set, pattern_a), read_hyps(dir_b, test_set, pattern_b)
    if hyps_a is None or hyps_b is None:
        return "—"
    return "yes" if hyps_a == hyps_b else "NO"


def fmt(wer: Optional[float]) -> str:
    return "—" if wer is None else f"{wer:.2f}"


def relative(before: Optional[float], after: Optional[float]) -> str:
    if before is None or after is None or before == 0:
        return "—"
    return f"{(after - before) / before * 100:+.1f}%"
