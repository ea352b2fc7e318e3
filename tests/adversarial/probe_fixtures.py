"""The compiled probe program (tests/probes/probe.c) for the attack tests
that run through `enforcer run --policy restricted` for real."""

from __future__ import annotations

from typing import Iterator

import pytest

from run_helpers import built_probe


@pytest.fixture(scope="module")
def probe() -> Iterator[tuple[str, str]]:
    """(probe program, Plan cache directory)."""
    with built_probe("enforcer-advprobe-") as built:
        yield built
