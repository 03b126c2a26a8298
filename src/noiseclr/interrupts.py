"""Ctrl-C and SIGTERM, handled alike.

Cluster schedulers (Slurm, Kubernetes) and ``timeout`` stop a job with SIGTERM, and a few seconds
later SIGKILL. Python's default for SIGTERM is to die at once, so a discovery run would lose
everything since its last checkpoint. :func:`terminate_as_interrupt` turns SIGTERM into a
:class:`Terminated` (a ``KeyboardInterrupt``), so the code that saves a checkpoint on Ctrl-C runs
for both; :func:`hold_interrupts` defers either signal while an optimizer step is applied, so a
step is never half done.

Both only act in the main thread (signal handlers can only be set there) and restore the
previous handlers afterwards; a handler the user installed for SIGTERM is left alone.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from typing import Any

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Terminated(KeyboardInterrupt):
    """SIGTERM was received (treated like Ctrl-C)."""

    exit_code = 128 + signal.SIGTERM


def _raise_terminated(signum: int, frame: Any) -> None:
    raise Terminated(f"terminated by signal {signum}")


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


@contextlib.contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """Inside the block, SIGTERM raises :class:`Terminated` (unless a handler of the user's is set)."""
    if not _main_thread() or signal.getsignal(signal.SIGTERM) not in (signal.SIG_DFL, None, _raise_terminated):
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def hold_interrupts() -> Iterator[None]:
    """Defer Ctrl-C and SIGTERM until the block ends, then deliver the first one received."""
    if not _main_thread():
        yield
        return
    received: list[tuple[int, Any]] = []
    previous = {signum: signal.getsignal(signum) for signum in SIGNALS}
    for signum in SIGNALS:
        signal.signal(signum, lambda number, frame: received.append((number, frame)))
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        if received:
            signum, frame = received[0]
            handler = previous[signum]
            if callable(handler):
                handler(signum, frame)
            elif signum == signal.SIGTERM and handler == signal.SIG_DFL:
                raise Terminated(f"terminated by signal {signum}")
            elif signum == signal.SIGINT:
                raise KeyboardInterrupt
