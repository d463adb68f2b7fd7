#!/usr/bin/env python3
"""Print cuts, hours and speakers of cut manifests.

Usage: ./local/summarize_cuts.py data/fbank/source_cuts_train.jsonl.gz [more.jsonl.gz ...]
"""
import gzip
import json
import sys
from pathlib import Path
from typing import Dict, Sequence


def summarize(path: Path) -> Dict[str, float]:
    """Reads the JSON lines directly: importing lhotse (and torch) would take longer than this."""
    cuts = hours = 0
    speakers = set()
    with gzip.open(path, "rt") as f:
        for line in f:
            cut = json.loads(line)
            cuts += 1
            hours += cut["duration"] / 3600
            speakers.update(s["speaker"] for s in cut.get("supervisions", []) if s.get("speaker"))
    return {"cuts": cuts, "hours": hours, "speakers": len(speakers)}


def main(paths: Sequence[str]) -> None:
    width = max(len(Path(p).name) for p in paths)
    print(f"{'cut file':<{width}}  {'cuts':>8}  {'hours':>8}  {'speakers':>8}")
    for path in paths:
        stats = summarize(Path(path))
        print(f"{Path(path).name:<{width}}  {stats['cuts']:>8}  {stats['hours']:>8.3f}  {stats['speakers']:>8}")


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    main(sys.argv[1:])
