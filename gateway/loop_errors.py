"""Bounded reporting of the errors an event loop and the interpreter would print on their own.

asyncio's default exception handler logs a full traceback for every failed callback, and CPython
prints every unraisable exception (one raised inside a C callback, such as OpenSSL's) to stderr. A
peer that can trigger either could write stderr without bound (rule 3). Both go instead to a
rate-limited log line per exception type, with the count of the lines it held back.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

from gateway.logs.rate_limit import RateLimitedLog
from gateway.logs.setup import get_logger

_log = RateLimitedLog(get_logger("gateway"), rate=1.0, burst=10)


def _loop_error(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    exc = context.get("exception")
    _log.warning(
        "event loop error",
        reason=type(exc).__name__ if exc is not None else "no_exception",
        message=str(context.get("message", ""))[:200],
        error=str(exc)[:200] if exc is not None else None,
    )


def _unraisable(unraisable: Any) -> None:
    _log.warning(
        "unraisable exception",
        reason=unraisable.exc_type.__name__,
        error=str(unraisable.exc_value)[:200],
        where=str(unraisable.err_msg or "")[:200],
    )


def install(loop: asyncio.AbstractEventLoop) -> None:
    """Route ``loop``'s and the interpreter's unhandled errors to the bounded log."""
    loop.set_exception_handler(_loop_error)
    sys.unraisablehook = _unraisable
