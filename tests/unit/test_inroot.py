"""enforcer.inroot: paths resolved inside a tree can never leave it.

The kernel's resolution (openat2 RESOLVE_IN_ROOT) and the component walk
that stands in for it where openat2 is missing must agree on every path of
a tree full of hostile links; each case also says where it must land.
"""

from __future__ import annotations

import errno
import os

import pytest

from enforcer import inroot


@pytest.fixture
def tree(tmp_path):
    """A root with the links an image author could ship, and a host dir beside it."""
    root = tmp_path / "root"
    host = tmp_path / "host"
    for d in ("etc", "var/lib/app", "run/app", "usr/lib"):
        (root / d).mkdir(parents=True)
    host.mkdir()
    (root / "etc" / "passwd").write_text("root:x:0:0::/:/bin/sh\n")
    links = {
        "var/cache": "/etc",                    # absolute: the tree's /etc
        "var/run": "../run",                    # relative, stays inside
        "up": "../../../../../../..",           # climbs past the top
        "escape": str(host),                    # absolute host path
        "via-up": "up/" + str(host).lstrip("/"),
        "loop-a": "loop-b",
        "loop-b": "loop-a",
        "lib": "usr/lib",
        "file-link": "/etc/passwd",
        "proc-self": "/proc/self/root",
    }
    for name, target in links.items():
        os.symlink(target, root / name)
    fd = os.open(root, os.O_PATH | os.O_DIRECTORY)
    yield fd, str(host)
    os.close(fd)


CASES = [
    ("/var/cache", "/etc"),
    ("var/cache/../var/lib/app", "/var/lib/app"),
    ("/var/run/app", "/run/app"),
    ("/up", "/"),
    ("/up/etc", "/etc"),
    ("/../../../etc", "/etc"),
    ("/lib", "/usr/lib"),
    ("/", "/"),
    ("", "/"),
    ("/./var//lib/./app/", "/var/lib/app"),
]

ERRORS = [
    ("/escape", errno.ENOENT),          # the host path does not exist inside
    ("/via-up", errno.ENOENT),
    ("/loop-a", errno.ELOOP),
    ("/nope", errno.ENOENT),
    ("/file-link", errno.ENOTDIR),      # asked for a directory
    ("/etc/passwd/x", errno.ENOTDIR),
    ("/proc-self", errno.ENOENT),       # no /proc in the tree: never the host's
]


@pytest.fixture(params=["openat2", "walk"])
def resolver(request, monkeypatch):
    if request.param == "walk":
        monkeypatch.setattr(inroot, "_openat2", [None])
    else:
        inroot._load_openat2()
        if inroot._openat2[0] is None:
            pytest.skip("this kernel has no openat2")
    return request.param


@pytest.mark.parametrize("path, lands", CASES)
def test_paths_resolve_inside_the_tree(tree, resolver, path, lands) -> None:
    root, _host = tree
    fd = inroot.open_in_root(root, path, directory=True)
    try:
        assert inroot.path_in_root(root, fd) == lands
    finally:
        os.close(fd)


@pytest.mark.parametrize("path, code", ERRORS)
def test_paths_that_would_leave_or_cannot_resolve_fail(tree, resolver, path, code) -> None:
    root, host = tree
    with pytest.raises(OSError) as err:
        os.close(inroot.open_in_root(root, path, directory=True))
    assert err.value.errno == code
    assert err.value.filename == path
    assert os.listdir(host) == []


def test_a_file_resolves_when_no_directory_is_asked_for(tree, resolver) -> None:
    root, _host = tree
    fd = inroot.open_in_root(root, "/file-link")
    try:
        assert inroot.path_in_root(root, fd) == "/etc/passwd"
        assert os.readlink(f"/proc/self/fd/{fd}").endswith("/root/etc/passwd")
    finally:
        os.close(fd)


def test_the_walk_leaks_no_descriptor(tree, monkeypatch) -> None:
    monkeypatch.setattr(inroot, "_openat2", [None])
    root, _host = tree
    before = set(os.listdir("/proc/self/fd"))
    for path, _ in CASES:
        os.close(inroot.open_in_root(root, path, directory=True))
    for path, _ in ERRORS:
        with pytest.raises(OSError):
            inroot.open_in_root(root, path, directory=True)
    assert set(os.listdir("/proc/self/fd")) == before
