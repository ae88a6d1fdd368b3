"""Shared fixtures: network blocked, a SimPy env, a seeded rng, the bundled maps."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
import simpy
from pytest_socket import disable_socket, enable_socket

REPO = Path(__file__).resolve().parents[1]
SCENARIOS = REPO / "scenarios"
NYC_DRIVE = SCENARIOS / "maps" / "nyc_lower_manhattan_brooklyn_drive.osm.bz2"


def pytest_configure(config: pytest.Config) -> None:
    """Built maps are cached in a folder of this test session (subprocesses inherit it), never in the user's."""
    from ivsim.world.maps import MAP_CACHE_ENV

    os.environ[MAP_CACHE_ENV] = tempfile.mkdtemp(prefix="ivsim-test-cache-")


def pytest_unconfigure(config: pytest.Config) -> None:
    from ivsim.world.maps import MAP_CACHE_ENV

    shutil.rmtree(os.environ.pop(MAP_CACHE_ENV, ""), ignore_errors=True)


def pytest_runtest_setup(item: pytest.Item) -> None:
    """Block every network socket (unix sockets stay allowed) for every test."""
    disable_socket(allow_unix_socket=True)


def pytest_runtest_teardown(item: pytest.Item) -> None:
    enable_socket()


@pytest.fixture
def env() -> simpy.Environment:
    return simpy.Environment()


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(12345)


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO
