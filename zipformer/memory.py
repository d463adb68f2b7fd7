"""Keeping a long CPU training's memory flat: give freed heap memory back to the system.

Every batch has its own shape, so PyTorch's CPU tensors are malloc'ed and freed in ever new sizes.
glibc keeps what is freed: its mmap threshold rises to the largest freed block (up to 32 MB), after
which activations come from the heap, and the heap is rarely handed back. Resident memory then
grows epoch after epoch although nothing is kept. A fixed threshold sends large blocks to mmap
(returned on free) and `release_freed_memory` trims the heap at epoch ends. Both are no-ops where
the C library is not glibc.
"""
import ctypes
import ctypes.util
import gc
from typing import Optional

_M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter
_MMAP_THRESHOLD_BYTES = 128 * 1024  # glibc's initial default, kept fixed


def _glibc() -> Optional[ctypes.CDLL]:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name)
    except OSError:
        return None
    return libc if hasattr(libc, "malloc_trim") and hasattr(libc, "mallopt") else None


_LIBC = _glibc()


def fix_mmap_threshold() -> bool:
    """Keep glibc from raising its mmap threshold (call once, early); True when it took effect."""
    return _LIBC is not None and _LIBC.mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_BYTES) == 1


def release_freed_memory() -> None:
    """Collect garbage and return the free parts of the heap to the system (glibc's malloc_trim)."""
    gc.collect()
    if _LIBC is not None:
        _LIBC.malloc_trim(0)
