"""Giving freed heap back to the operating system after a burst of connections.

glibc's malloc keeps memory freed in its main heap for reuse, so the resident size after a burst of
handshakes (OpenSSL's per-connection state) stays at its peak long after the connections are gone.
``malloc_trim(0)`` returns what is free at the top of the heap and in whole free pages; it costs a
walk of the heap, so the listener calls it once a burst is over, not per connection.
"""

from __future__ import annotations

import ctypes
import ctypes.util

_libc_name = ctypes.util.find_library("c")
_malloc_trim = getattr(ctypes.CDLL(_libc_name), "malloc_trim", None) if _libc_name else None


def release_free_heap() -> bool:
    """Return free heap pages to the OS where the C library can (glibc); ``False`` elsewhere."""
    if _malloc_trim is None:
        return False
    _malloc_trim(0)
    return True
