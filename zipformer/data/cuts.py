"""Cut sets from files: read and validated with one-line errors, named by flags, filtered for training.

`load_cuts` reads a lhotse CutSet lazily and turns a damaged or foreign file into a UserError at
the first cut read; `parse_named_paths` reads `name=path,...` flags; `filter_cuts` drops cuts that
cannot train (too short or long, or fewer frames after subsampling than BPE tokens) and logs why.
"""
import logging
import zlib
from collections import Counter, OrderedDict
from pathlib import Path
from typing import Any, Iterable, Iterator, Optional, Union

from lhotse import CutSet
from lhotse.cut import Cut
from lhotse.utils import compute_num_frames

from zipformer.core.errors import UserError
from zipformer.model.frontend import FRAME_SHIFT

# Errors that reading a damaged or foreign JSONL(.gz) file raises inside lhotse:
# truncated gzip (EOFError), bad gzip (OSError, zlib.error), bad JSON (ValueError),
# JSON that is not a cut (KeyError, TypeError, ValueError).
_MANIFEST_READ_ERRORS = (OSError, EOFError, zlib.error, ValueError, KeyError, TypeError)



class _CheckedManifest:
    """Lazy, re-iterable cuts of one JSONL manifest that turns read errors into a UserError naming the file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.cuts = CutSet.from_jsonl_lazy(path)

    def __iter__(self) -> Iterator[Cut]:
        num_read = 0
        cuts = iter(self.cuts)
        while True:
            try:
                cut = next(cuts)
            except StopIteration:
                return
            except _MANIFEST_READ_ERRORS as e:
                reason = " ".join(f"{type(e).__name__}: {e}".split())
                raise UserError(
                    f"cut manifest {self.path} is corrupt or incomplete ({reason}; {num_read} cuts read before "
                    f"the error): delete it and re-run the ./prepare.sh stage that writes it"
                ) from e
            num_read += 1
            yield cut


def load_cuts(path: Union[str, Path], flag: str = "") -> CutSet:
    """Open a lhotse cut manifest (.jsonl or .jsonl.gz) lazily.

    The first cut is read at once, so a missing, empty or foreign file fails here; damage further in
    (a truncated gzip, a malformed line) raises UserError when iteration reaches it.
    `flag` names the command-line flag the path came from, for the error message.
    """
    path = Path(path)
    via = f" (from {flag})" if flag else ""
    if not path.is_file():
        raise UserError(
            f"cut manifest not found: {path}{via}: run ./prepare.sh to create it, or pass the path of "
            f"existing lhotse cuts (relative paths are taken from the current directory {Path.cwd()})"
        )
    manifest = _CheckedManifest(path)
    if next(iter(manifest), None) is None:
        raise UserError(f"cut manifest {path}{via} holds no cuts: re-run ./prepare.sh or pass another file")
    return CutSet(manifest)


def parse_named_paths(spec: str) -> "OrderedDict[str, Path]":
    """Parse "name=path,name2=path2" (or plain "path", named after the file) into an ordered dict.

    >>> parse_named_paths("dev=a/dev.jsonl.gz,b/x_cuts.jsonl.gz")
    OrderedDict([('dev', PosixPath('a/dev.jsonl.gz')), ('x_cuts', PosixPath('b/x_cuts.jsonl.gz'))])
    """
    named: "OrderedDict[str, Path]" = OrderedDict()
    for item in spec.split(","):
        item = item.strip()
        if not item:
            raise UserError(f"empty entry in cut list '{spec}': use name=path[,name=path...]")
        if "=" in item:
            name, path = (s.strip() for s in item.split("=", 1))
            if not name or not path:
                raise UserError(f"bad entry '{item}' in cut list '{spec}': use name=path")
        else:
            path = item
            name = Path(item).name.split(".")[0]
        if name in named:
            raise UserError(f"name '{name}' appears twice in cut list '{spec}': give each set its own name=")
        named[name] = Path(path)
    return named


def num_subsampled_frames(num_frames: int) -> int:
    """Encoder output length T_sub for `num_frames` input frames (Conv2dSubsampling, factor 4)."""
    return ((num_frames - 7) // 2 + 1) // 2


class CutFilter:
    """Decides which cuts are fit for transducer training, and counts the rejected ones by reason.

    Keeps min_duration <= duration <= max_duration and cuts whose T_sub covers their BPE tokens
    (the pruned RNN-T loss needs T_sub >= number of tokens).
    """

    def __init__(self, sp: Any, min_duration: float, max_duration: float) -> None:
        self.sp = sp
        self.min_duration = min_duration
        self.max_duration = max_duration

    def reject_reason(self, cut: Cut) -> Optional[str]:
        """None to keep `cut`, otherwise a short reason."""
        if cut.duration < self.min_duration:
            return f"shorter than {self.min_duration} s"
        if cut.duration > self.max_duration:
            return f"longer than {self.max_duration} s"
        text = " ".join(s.text for s in cut.supervisions if s.text)
        if not text.strip():
            return "no transcript"
        num_frames = cut.num_frames if cut.has_features else compute_num_frames(
            cut.duration, FRAME_SHIFT, cut.sampling_rate
        )
        if num_subsampled_frames(num_frames) < len(self.sp.encode(text)):
            return "more BPE tokens than encoder frames"
        return None


def _log_filter_summary(counts: Counter) -> None:
    kept = counts.pop("kept", 0)
    removed = sum(counts.values())
    reasons = ", ".join(f"{n} {reason}" for reason, n in counts.most_common())
    logging.info(f"filter_cuts: kept {kept} cuts, removed {removed}" + (f" ({reasons})" if removed else ""))


class _FilteredCuts:
    """Lazy filtering that logs the removal counts once, at the end of the first complete pass."""

    def __init__(self, source: Iterable[Cut], cut_filter: CutFilter) -> None:
        self.source = source
        self.cut_filter = cut_filter
        self.reported = False

    def __iter__(self) -> Iterator[Cut]:
        counts: Counter = Counter()
        for cut in self.source:
            reason = self.cut_filter.reject_reason(cut)
            if reason is None:
                counts["kept"] += 1
                yield cut
            else:
                counts[reason] += 1
                logging.debug(f"Excluding cut {cut.id} (duration {cut.duration:.2f} s): {reason}")
        if not self.reported:
            self.reported = True
            _log_filter_summary(counts)


def filter_cuts(cuts: CutSet, sp: Any, min_duration: float = 1.0, max_duration: float = 20.0) -> CutSet:
    """Drop cuts unfit for training (see CutFilter); `sp` is anything with `encode(text) -> list`.

    A lazy CutSet stays lazy: the counts are logged after the first complete pass over it.
    An eager CutSet is filtered at once and the counts logged now.
    """
    cut_filter = CutFilter(sp, min_duration, max_duration)
    filtered = _FilteredCuts(cuts, cut_filter)
    if cuts.is_lazy:
        return CutSet(filtered)
    return CutSet.from_cuts(list(filtered))
