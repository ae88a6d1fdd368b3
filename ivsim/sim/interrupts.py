"""Ctrl-C and SIGTERM during a run, turned into ``KeyboardInterrupt`` only where it is safe.

Python raises ``KeyboardInterrupt`` at whatever bytecode the main thread is running. Two places
cannot take that:

* the event log, in the middle of appending a row or flushing a part: a row half appended
  leaves its columns with different lengths, and a flush cut short can write a part twice;
* numba's dispatcher, loading a cached kernel on its first call: the interrupt comes out as a
  ``SystemError`` ("returned a result with an exception set"), not as an interrupt.

While a run goes, :class:`interrupts_at_safe_points` handles SIGINT and SIGTERM itself: when
the signal finds the main thread inside one of those places, it looks again every few
milliseconds (a SIGALRM timer) and raises once the thread has left it. Nothing is added to the
hot path: the check walks the interrupted stack only when a signal arrives. A second signal
while one waits raises at once (the way out of a stuck flush). Where there is no SIGALRM
(Windows) the signal raises at once, as Python's own handler does.
"""

from __future__ import annotations

import signal
import sys
from pathlib import Path
from types import FrameType, TracebackType
from typing import Self

RETRY_S = 0.005
"""How often a deferred interrupt looks again whether the main thread is out of unsafe code."""

_EVENTLOG_FILE = str(Path(__file__).with_name("eventlog.py"))


def _numba_dir() -> str | None:
    numba = sys.modules.get("numba")
    file = getattr(numba, "__file__", None)
    return str(Path(file).parent) if file else None


def in_unsafe_code(frame: FrameType | None) -> bool:
    """Whether ``frame`` or a frame below it runs the event log or numba's own Python code."""
    numba_dir = _numba_dir()
    while frame is not None:
        name = frame.f_code.co_filename
        if name == _EVENTLOG_FILE or (numba_dir is not None and name.startswith(numba_dir)):
            return True
        frame = frame.f_back
    return False


def caused_by_interrupt(exc: BaseException) -> bool:
    """Whether ``exc`` is a ``KeyboardInterrupt`` or was raised while handling / because of one."""
    seen: set[int] = set()
    stack: list[BaseException | None] = [exc]
    while stack:
        e = stack.pop()
        if e is None or id(e) in seen:
            continue
        if isinstance(e, KeyboardInterrupt):
            return True
        seen.add(id(e))
        stack += [e.__cause__, e.__context__]
    return False


class interrupts_at_safe_points:  # used as a context manager, named like one
    """Handle SIGINT (unless it is ignored or already handled elsewhere) and SIGTERM while in the block.

    Both raise ``KeyboardInterrupt`` in the main thread once it is outside unsafe code (see the module
    docstring). In any thread but the main one this does nothing (signals go to the main thread). A signal
    still waiting when the block ends normally raises ``KeyboardInterrupt`` there.
    """

    def __init__(self) -> None:
        self._saved: dict[int, object] = {}
        self._waiting = False
        self._old_timer: tuple[float, float] | None = None

    def __enter__(self) -> Self:
        try:
            if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
                self._saved[signal.SIGINT] = signal.signal(signal.SIGINT, self._on_signal)
            self._saved[signal.SIGTERM] = signal.signal(signal.SIGTERM, self._on_signal)
        except ValueError:  # not the main thread
            self._restore()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        waiting = self._waiting
        self._restore()
        if waiting and kind is None:
            raise KeyboardInterrupt

    @property
    def waiting(self) -> bool:
        """Whether a signal has arrived and waits for the main thread to leave unsafe code."""
        return self._waiting

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if self._waiting or not hasattr(signal, "setitimer") or not in_unsafe_code(frame):
            self._raise()
        self._waiting = True
        if signal.SIGALRM not in self._saved:
            self._saved[signal.SIGALRM] = signal.signal(signal.SIGALRM, self._on_timer)
            self._old_timer = signal.setitimer(signal.ITIMER_REAL, RETRY_S)
        else:
            signal.setitimer(signal.ITIMER_REAL, RETRY_S)

    def _on_timer(self, signum: int, frame: FrameType | None) -> None:
        if not self._waiting:
            return
        if in_unsafe_code(frame):
            signal.setitimer(signal.ITIMER_REAL, RETRY_S)
            return
        self._raise()

    def _raise(self) -> None:
        self._waiting = False
        raise KeyboardInterrupt

    def _restore(self) -> None:
        self._waiting = False
        if signal.SIGALRM in self._saved:
            signal.setitimer(signal.ITIMER_REAL, *(self._old_timer or (0.0, 0.0)))
        for signum, handler in self._saved.items():
            signal.signal(signum, handler)  # type: ignore[arg-type]
        self._saved.clear()
