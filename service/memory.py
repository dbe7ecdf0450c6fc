"""The server's memory: which allocator Arrow uses, and giving freed memory back to the
operating system.

The allocators under pyarrow (jemalloc in `quarry serve` and `quarry export`, see
`use_jemalloc`) and DuckDB (the C library's malloc) keep memory that was freed, for reuse. An
export frees hundreds of MB when it ends (its windows), and so does loading the companies for
exports (the text they were coded from); without `give_back_memory` the server's resident
memory stays at its high-water mark (measured: 150-250 MB more after each export).
"""

from __future__ import annotations

import ctypes
import ctypes.util

import pyarrow as pa

_libc_name = ctypes.util.find_library("c")
try:
    _malloc_trim = ctypes.CDLL(_libc_name).malloc_trim if _libc_name else None
except (OSError, AttributeError):  # not glibc: nothing to trim
    _malloc_trim = None


def give_back_memory() -> None:
    pa.default_memory_pool().release_unused()
    if _malloc_trim is not None:
        _malloc_trim(0)


def use_jemalloc() -> None:
    """Arrow's allocations from jemalloc instead of pyarrow's default, mimalloc: exports run
    as fast, and their peak is 0.05-0.1 GiB lower (mimalloc keeps more freed pages while an
    export runs; README, Exports). A pyarrow built without jemalloc keeps its default."""
    try:
        pa.set_memory_pool(pa.jemalloc_memory_pool())
    except NotImplementedError:
        pass
