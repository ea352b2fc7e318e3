"""The compiled probe program (tests/probes/probe.c) for the attack tests
that run through `enforcer run --policy restricted` for real."""

from __future__ import annotations

import os
import shutil
from typing import Iterator

import pytest

from tests import session

from run_helpers import build_probe, require_root, scratch_dir


@pytest.fixture(scope="module")
def probe() -> Iterator[tuple[str, str]]:
    """(probe program, Plan cache directory)."""
    require_root()
    if shutil.which("gcc") is None:
        pytest.skip("gcc not installed")
    d = scratch_dir("enforcer-advprobe-")
    yield build_probe(d), os.path.join(d, "cache")
    session.remove_tree(d)
