"""write_atomic: whole content or nothing, no temp files left behind."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from enforcer.atomicfile import write_atomic


def test_replaces_content_and_sets_mode(tmp_path: Path) -> None:
    target = tmp_path / "f.json"
    target.write_text("old")
    write_atomic(str(target), b"new", mode=0o640, tag="x")
    assert target.read_bytes() == b"new"
    assert target.stat().st_mode & 0o777 == 0o640
    assert os.listdir(tmp_path) == ["f.json"]


def test_a_stale_temp_of_a_dead_writer_with_our_pid_is_replaced(tmp_path: Path) -> None:
    stale = tmp_path / f".tmp-x.{os.getpid()}"
    stale.write_text("half")
    write_atomic(str(tmp_path / "f"), b"whole", tag="x", fsync=True)
    assert (tmp_path / "f").read_bytes() == b"whole"
    assert not stale.exists()


def test_failure_leaves_the_old_file_and_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "dir-in-the-way"
    target.mkdir()
    (target / "child").write_text("x")
    with pytest.raises(OSError):
        write_atomic(str(target), b"data", tag="x")  # rename over a non-empty dir fails
    assert sorted(os.listdir(tmp_path)) == ["dir-in-the-way"]
