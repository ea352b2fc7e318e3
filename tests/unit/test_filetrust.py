"""enforcer/filetrust.py: what a privileged loader trusts, checked on the
opened descriptors (one small test per rule)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from enforcer.filetrust import UntrustedFile, open_trusted, read_trusted

OTHER = 65534


@pytest.fixture
def root_dir(tmp_path: Path) -> Path:
    if os.geteuid() != 0:
        pytest.skip("chown to another user needs root")
    d = tmp_path / "trusted"
    d.mkdir(mode=0o755)
    d.chmod(0o755)
    return d


def policy(d: Path, mode: int = 0o644, uid: int | None = None, name: str = "p.yaml") -> Path:
    p = d / name
    p.write_text("name: p\n")
    p.chmod(mode)
    if uid is not None:
        os.chown(p, uid, -1)
    return p


def test_root_owned_file_in_root_owned_dirs_is_read(root_dir: Path) -> None:
    # The walk passes /tmp (1777: sticky) on the way: allowed.
    assert read_trusted(str(policy(root_dir)), privileged=True) == b"name: p\n"


@pytest.mark.parametrize("mode, why", [(0o666, "writable by others"), (0o646, "writable by others"),
                                       (0o664, "writable by its group")])
def test_writable_file_is_refused(root_dir: Path, mode: int, why: str) -> None:
    with pytest.raises(UntrustedFile, match=why):
        open_trusted(str(policy(root_dir, mode)), privileged=True)


def test_file_of_another_owner_is_refused(root_dir: Path) -> None:
    with pytest.raises(UntrustedFile, match=f"owned by uid {OTHER}"):
        open_trusted(str(policy(root_dir, uid=OTHER)), privileged=True)


def test_writable_directory_without_sticky_bit_is_refused(root_dir: Path) -> None:
    p = policy(root_dir)
    root_dir.chmod(0o777)
    with pytest.raises(UntrustedFile, match=f"its directory {root_dir} is writable by others"):
        open_trusted(str(p), privileged=True)


def test_sticky_writable_directory_is_allowed_for_an_owned_entry(root_dir: Path) -> None:
    p = policy(root_dir)
    root_dir.chmod(0o1777)
    os.close(open_trusted(str(p), privileged=True))


def test_directory_of_another_owner_is_refused(root_dir: Path) -> None:
    p = policy(root_dir)
    os.chown(root_dir, OTHER, -1)
    with pytest.raises(UntrustedFile, match=f"its directory {root_dir} is owned by uid {OTHER}"):
        open_trusted(str(p), privileged=True)


def test_symlink_is_judged_by_its_target(root_dir: Path) -> None:
    target = policy(root_dir, 0o666, name="real.yaml")
    (root_dir / "link.yaml").symlink_to(target)
    with pytest.raises(UntrustedFile, match="real.yaml is writable by others"):
        open_trusted(str(root_dir / "link.yaml"), privileged=True)


def test_fifo_and_directory_are_not_policy_files(root_dir: Path) -> None:
    os.mkfifo(root_dir / "fifo.yaml", 0o644)
    with pytest.raises(UntrustedFile, match="not a regular file"):  # and the open did not block
        open_trusted(str(root_dir / "fifo.yaml"), privileged=True)
    with pytest.raises(IsADirectoryError):
        open_trusted(str(root_dir), privileged=True)


def test_unprivileged_loader_skips_the_ownership_rules(root_dir: Path) -> None:
    # It has no more privilege than whoever could write the file.
    assert read_trusted(str(policy(root_dir, 0o666, uid=OTHER)), privileged=False) == b"name: p\n"


def test_size_limit_is_checked_before_reading(root_dir: Path) -> None:
    with pytest.raises(ValueError, match="file is 8 bytes"):
        read_trusted(str(policy(root_dir)), limit=4, privileged=True)


def test_a_component_swapped_for_a_symlink_is_not_followed(root_dir: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """The path is resolved once, then walked with O_NOFOLLOW: if a directory
    becomes a symlink in between (the swap an attacker races), the open fails
    instead of reading the file the symlink leads to."""
    sub = root_dir / "sub"
    sub.mkdir()
    p = policy(sub)
    elsewhere = root_dir / "elsewhere"
    elsewhere.mkdir()
    policy(elsewhere, 0o666)
    from enforcer import filetrust

    real_resolve = filetrust.resolved_path

    def swap_after_resolving(path: str) -> str:
        resolved = real_resolve(path)
        os.rename(sub, root_dir / "old-sub")
        os.symlink(elsewhere, sub)
        return resolved

    monkeypatch.setattr(filetrust, "resolved_path", swap_after_resolving)
    with pytest.raises(OSError) as info:
        open_trusted(str(p), privileged=True)
    assert info.value.errno in (40, 20)  # ELOOP, ENOTDIR


def test_resolved_path_matches_realpath(root_dir: Path) -> None:
    from enforcer.filetrust import resolved_path

    p = policy(root_dir)
    (root_dir / "l1.yaml").symlink_to(p)
    (root_dir / "sub").symlink_to(root_dir)
    for path in (p, root_dir / "l1.yaml", root_dir / "sub" / "sub" / "l1.yaml", root_dir / "missing"):
        assert resolved_path(str(path)) == os.path.realpath(path)
