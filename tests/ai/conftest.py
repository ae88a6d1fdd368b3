"""Shared fixtures of the neural-side tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(scope="package", autouse=True)
def one_torch_thread() -> Iterator[None]:
    """One torch intra-op thread for every test here (and the module fixtures that run torch).

    On shared 2-core machines, intra-op threads fight the other processes and run 10-30x slower.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
