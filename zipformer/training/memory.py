"""Keeping a long CPU training's memory flat (give freed heap memory back to the system), and measuring it.

Every batch has its own shape, so PyTorch's CPU tensors are malloc'ed and freed in ever new sizes.
glibc keeps what is freed: its mmap threshold rises to the largest freed block (up to 32 MB), after
which activations come from the heap, and a fragmented heap is rarely handed back. Resident memory
then grows epoch after epoch although nothing is kept. `release_freed_memory` trims the heap
(training calls it after each epoch and each validation); a no-op where the C library is not glibc.
A fixed mmap threshold would keep memory lower still, but measured 50% more CPU time per batch.
The log lines of training report peak_memory_mb and resident_memory_mb.
"""
import ctypes
import ctypes.util
import gc
import os
import resource
from pathlib import Path
from typing import Optional

import torch


def _glibc() -> Optional[ctypes.CDLL]:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name)
    except OSError:
        return None
    return libc if hasattr(libc, "malloc_trim") else None


_LIBC = _glibc()


def release_freed_memory() -> None:
    """Collect garbage and return the free parts of the heap to the system (glibc's malloc_trim)."""
    gc.collect()
    if _LIBC is not None:
        _LIBC.malloc_trim(0)


def resident_memory_mb() -> float:
    """This process's resident memory now (Linux; 0 elsewhere): unlike the peak, it can go down."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return 0.0
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def reset_peak_resident() -> None:
    """Start measuring a new peak for peak_resident_mb (Linux: writing 5 to clear_refs resets VmHWM)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def peak_resident_mb() -> Optional[float]:
    """The peak resident memory since reset_peak_resident (or the start); None where /proc has no VmHWM."""
    try:
        status = Path("/proc/self/status").read_text()
    except OSError:
        return None
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return None


def peak_memory_mb(device: torch.device) -> float:
    """The peak of this epoch (GPU memory allocated, or resident memory); the process's peak where not measurable."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    peak = peak_resident_mb()
    return peak if peak is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux

