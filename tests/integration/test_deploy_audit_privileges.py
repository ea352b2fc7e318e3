"""The facts behind the monitor DaemonSet's privileges, checked on the real
kernel (deploy/kubernetes/monitor.yaml cites them):

- hostNetwork: a socket joined to the audit multicast group in another
  network namespace binds fine but receives nothing, while one in the
  initial namespace gets every record;
- CAP_AUDIT_READ: without it, joining the group fails with EPERM, even as
  root; with it and nothing else, it works;
- no user namespace: inside one, the bind fails with EPERM.

Every process here is a short-lived child; namespaces die with them.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap

import pytest

pytestmark = [pytest.mark.root]

# Joins AUDIT_NLGRP_READLOG (after unsharing what argv[1] names), prints
# "bound" or the bind error, then counts seccomp records (type 1326) of the
# pid given on stdin until stdin closes.
LISTENER = textwrap.dedent("""
    import ctypes, os, select, socket, struct, sys
    libc = ctypes.CDLL(None, use_errno=True)
    flags = {"none": 0, "net": 0x40000000, "user+net": 0x10000000 | 0x40000000}[sys.argv[1]]
    if flags and libc.unshare(flags) != 0:
        print("unshare failed", ctypes.get_errno(), flush=True); sys.exit(0)
    s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 9)
    try:
        s.bind((0, 1))
    except OSError as e:
        print("bind", e.errno, flush=True); sys.exit(0)
    print("bound", flush=True)
    pid = sys.stdin.readline().strip().encode()
    import time
    n, deadline = 0, time.monotonic() + 3
    while time.monotonic() < deadline:
        r, _, _ = select.select([s], [], [], 0.2)
        if not r:
            continue
        data = s.recv(65536)
        length, kind = struct.unpack_from("=IH", data)
        if kind == 1326 and b" pid=" + pid + b" " in data:
            n += 1
    print("records", n, flush=True)
""")

VIOLATOR = textwrap.dedent("""
    import ctypes, errno, pyseccomp as sc
    f = sc.SyscallFilter(sc.ALLOW); f.set_attr(sc.Attr.CTL_LOG, 1)
    f.add_rule(sc.ERRNO(errno.EPERM), "getcwd"); f.load()
    for _ in range(5):
        ctypes.CDLL(None).syscall(79, 0, 0)
""")


def start_listener(mode: str, prefix: list[str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen([*(prefix or []), sys.executable, "-c", LISTENER, mode],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)


@pytest.mark.skipif(os.uname().machine != "x86_64", reason="the violator uses the x86_64 getcwd number")
def test_audit_multicast_reaches_the_initial_network_namespace_only() -> None:
    host, netns = start_listener("none"), start_listener("net")
    try:
        assert host.stdout and netns.stdout and host.stdin and netns.stdin
        assert host.stdout.readline().strip() == "bound"
        assert netns.stdout.readline().strip() == "bound", "the bind itself succeeds in a new netns"
        violator = subprocess.Popen([sys.executable, "-c", VIOLATOR])
        for stdin in (host.stdin, netns.stdin):
            stdin.write(f"{violator.pid}\n")
            stdin.flush()
        assert violator.wait(30) == 0
        assert host.stdout.readline().split() == ["records", "5"]
        assert netns.stdout.readline().split() == ["records", "0"]
    finally:
        for p in (host, netns):
            p.kill()
            p.wait()


def test_joining_needs_cap_audit_read_and_nothing_more() -> None:
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("setpriv (util-linux) is not installed")
    # Root with every capability but AUDIT_READ: refused.
    without = start_listener("none", [setpriv, "--inh-caps=-all", "--bounding-set=-audit_read"])
    # Only AUDIT_READ, no_new_privs (the DaemonSet's container): allowed.
    only = start_listener("none", [setpriv, "--inh-caps=-all", "--bounding-set=-all,+audit_read",
                                   "--no-new-privs"])
    try:
        assert without.stdout and only.stdout
        assert without.stdout.readline().split() == ["bind", "1"]  # EPERM
        assert only.stdout.readline().strip() == "bound"
    finally:
        for p in (without, only):
            p.kill()
            p.wait()


def test_a_user_namespace_cannot_join() -> None:
    p = start_listener("user+net")
    try:
        assert p.stdout
        line = p.stdout.readline().split()
        if line[:2] == ["unshare", "failed"]:
            pytest.skip("user namespaces are disabled here")
        assert line == ["bind", "1"]  # EPERM: the capability counts in the initial user namespace
    finally:
        p.kill()
        p.wait()
