"""Ctrl-C / SIGTERM during a run: raised only outside the event log and numba's loader."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable

import pytest

from ivsim.sim import interrupts
from ivsim.sim.interrupts import caused_by_interrupt, in_unsafe_code, interrupts_at_safe_points

UNSAFE = "<unsafe code for the test>"


def _unsafe(body: str) -> Callable[[list[str]], None]:
    """A function whose code counts as unsafe (its file name is patched in as the event log's)."""
    namespace: dict = {"signal": signal, "time": time}
    exec(compile(f"def f(trace):\n{body}\n", UNSAFE, "exec"), namespace)  # noqa: S102 - a fixed test body
    return namespace["f"]


RAISE_THEN_WORK = """
    trace.append("unsafe start")
    signal.raise_signal(signal.SIGINT)
    t = time.perf_counter()
    while time.perf_counter() - t < 0.05:
        pass
    trace.append("unsafe end")
"""


def _spin(trace: list[str], seconds: float = 2.0) -> None:
    t = time.perf_counter()
    while time.perf_counter() - t < seconds:
        time.sleep(0.001)
    trace.append("spun out")


@pytest.fixture
def unsafe_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(interrupts, "_EVENTLOG_FILE", UNSAFE)


@pytest.fixture(autouse=True)
def _default_handlers() -> None:
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGALRM)}
    signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    for s, h in before.items():
        signal.signal(s, h)
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)


def test_signal_in_unsafe_code_waits_until_it_is_left(unsafe_file: None) -> None:
    trace: list[str] = []
    with pytest.raises(KeyboardInterrupt), interrupts_at_safe_points() as guard:
        _unsafe(RAISE_THEN_WORK)(trace)
        trace.append("waiting" if guard.waiting else "not waiting")
        _spin(trace)
    assert trace == ["unsafe start", "unsafe end", "waiting"]  # raised in the spin, well before its end
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    assert signal.getsignal(signal.SIGALRM) in (signal.SIG_DFL, None)


def test_signal_in_safe_code_raises_at_once() -> None:
    trace: list[str] = []
    with pytest.raises(KeyboardInterrupt), interrupts_at_safe_points():
        _unsafe(RAISE_THEN_WORK)(trace)  # its file name is not patched: safe
    assert trace == ["unsafe start"]


def test_sigterm_is_an_interrupt_too(unsafe_file: None) -> None:
    trace: list[str] = []
    body = RAISE_THEN_WORK.replace("SIGINT", "SIGTERM")
    with pytest.raises(KeyboardInterrupt), interrupts_at_safe_points():
        _unsafe(body)(trace)
        _spin(trace)
    assert trace == ["unsafe start", "unsafe end"]
    with pytest.raises(KeyboardInterrupt), interrupts_at_safe_points():
        signal.raise_signal(signal.SIGTERM)
        _spin(trace)


def test_second_signal_while_waiting_raises_at_once(unsafe_file: None) -> None:
    trace: list[str] = []
    body = RAISE_THEN_WORK.replace('    trace.append("unsafe end")', '    signal.raise_signal(signal.SIGINT)\n    trace.append("unsafe end")')
    with pytest.raises(KeyboardInterrupt), interrupts_at_safe_points():
        _unsafe(body)(trace)
    assert trace == ["unsafe start"]


def test_signal_still_waiting_at_the_end_raises_there(unsafe_file: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(interrupts, "RETRY_S", 10.0)  # the timer does not come back before the block ends
    trace: list[str] = []
    with pytest.raises(KeyboardInterrupt), interrupts_at_safe_points():
        _unsafe(RAISE_THEN_WORK)(trace)
        trace.append("block end")
    assert trace == ["unsafe start", "unsafe end", "block end"]


def test_ignored_sigint_stays_ignored() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    with interrupts_at_safe_points():
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
        signal.raise_signal(signal.SIGINT)
        time.sleep(0.01)
    assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN


def test_unsafe_code_is_the_event_log_and_numba(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    import sys
    from pathlib import Path

    import numba

    from ivsim.sim import eventlog

    seen: list[bool] = []
    write_part = eventlog._write_part

    def probe(table, path) -> None:
        seen.append(in_unsafe_code(sys._getframe()))
        write_part(table, path)

    monkeypatch.setattr(eventlog, "_write_part", probe)
    log = eventlog.EventLog(tmp_path / "run", "r")
    log.log("note", 0.0, "x", message="m")
    log.flush()
    log.close()
    assert seen == [True]
    assert not in_unsafe_code(sys._getframe())
    inside_numba = str(Path(numba.__file__).parent / "core" / "dispatcher.py")
    namespace: dict = {"sys": sys, "check": in_unsafe_code}
    exec(compile("def f():\n    return check(sys._getframe())\n", inside_numba, "exec"), namespace)  # noqa: S102
    assert namespace["f"]()


def test_caused_by_interrupt_follows_the_chain() -> None:
    try:
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt as ki:
            raise SystemError("returned a result with an exception set") from ki
    except SystemError as exc:
        assert caused_by_interrupt(exc)
    try:
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt:
            raise ValueError("shape mismatch")
    except ValueError as exc:
        assert caused_by_interrupt(exc)
    assert not caused_by_interrupt(RuntimeError("evaluator broke"))
