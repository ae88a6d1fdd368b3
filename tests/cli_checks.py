"""Helpers shared by test modules (tests/ is on sys.path under pytest's default import mode)."""

from __future__ import annotations

import pytest


def one_line_error(capsys: pytest.CaptureFixture[str], code: int) -> str:
    """Assert a command failed with exit code 2 and one line on stderr, no traceback; return that line."""
    out = capsys.readouterr()
    assert code == 2, out.err
    lines = out.err.strip().splitlines()
    assert len(lines) == 1, out.err
    assert "Traceback" not in out.err
    return lines[0]
