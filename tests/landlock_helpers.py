"""Shared pieces of the Landlock tests: a scratch tree with granted and
ungranted places, the policy that names them, and the probe script a
workload runs to try each access once (tests/integration/test_run_landlock.py,
tests/e2e/test_shim_landlock.py)."""

from __future__ import annotations

import os
import shutil
import socket
import struct

# A Python script the workload runs: one line per attempt, "NAME ok" or
# "NAME ERRNONAME". Arguments come from the environment so the same script
# serves every runner (root, nobody, a container).
PROBE_SCRIPT = r"""
import errno, os, socket, subprocess, sys
E = os.environ
def attempt(name, fn):
    try:
        fn()
        print(name, "ok")
    except OSError as e:
        print(name, errno.errorcode.get(e.errno, str(e.errno)))
def read(path):
    with open(path) as f:
        f.read()
def write(path):
    with open(path, "w") as f:
        f.write("x")
def run(path):
    subprocess.run([path], check=True)
def bind(port):
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))
def connect(port):
    with socket.create_connection(("127.0.0.1", port), timeout=5):
        pass
def signal_child():
    p = subprocess.Popen(["/usr/bin/sleep", "30"])
    os.kill(p.pid, 15)
    p.wait()
def abstract_own():
    name = "\0" + E["LL_ABSTRACT"] + "-inside"
    with socket.socket(socket.AF_UNIX) as srv, socket.socket(socket.AF_UNIX) as c:
        srv.bind(name); srv.listen(1); c.connect(name)
def abstract_outside():
    with socket.socket(socket.AF_UNIX) as c:
        c.connect("\0" + E["LL_ABSTRACT"])
root = E["LL_ROOT"]
attempt("read_granted", lambda: read(root + "/ro/file"))
attempt("read_denied", lambda: read(root + "/other/file"))
attempt("list_denied", lambda: os.listdir(root + "/other"))
attempt("write_granted", lambda: write(root + "/rw/new"))
attempt("write_denied", lambda: write(root + "/other/new"))
attempt("write_ro_denied", lambda: write(root + "/ro/file"))
attempt("exec_granted", lambda: run("/usr/bin/true"))
attempt("exec_denied", lambda: run(root + "/bin/true"))
attempt("bind_granted", lambda: bind(int(E["LL_BIND_OK"])))
attempt("bind_denied", lambda: bind(int(E["LL_BIND_DENIED"])))
attempt("connect_granted", lambda: connect(int(E["LL_CONNECT_OK"])))
attempt("connect_denied", lambda: connect(int(E["LL_CONNECT_DENIED"])))
attempt("signal_granted", signal_child)
attempt("signal_denied", lambda: os.kill(int(E["LL_OUTSIDE_PID"]), 0))
attempt("abstract_granted", abstract_own)
attempt("abstract_denied", abstract_outside)
"""

# What each attempt must give under the policy of `policy_yaml` ...
EXPECTED = {
    "read_granted": "ok", "read_denied": "EACCES", "list_denied": "EACCES",
    "write_granted": "ok", "write_denied": "EACCES", "write_ro_denied": "EACCES",
    "exec_granted": "ok", "exec_denied": "EACCES",
    "bind_granted": "ok", "bind_denied": "EACCES",
    "connect_granted": "ok", "connect_denied": "EACCES",
    "signal_granted": "ok", "signal_denied": "EPERM",
    "abstract_granted": "ok", "abstract_denied": "EPERM",
}
# ... and without it (everything succeeds: the denials above are Landlock's).
UNCONFINED = {name: "ok" for name in EXPECTED}


def parse_results(stdout: str) -> dict[str, str]:
    out = {}
    for line in stdout.splitlines():
        name, _, result = line.partition(" ")
        if name in EXPECTED:
            out[name] = result
    return out


def pt_interp(path: str) -> str | None:
    """The program interpreter (PT_INTERP) an ELF binary names, or None for a
    static binary."""
    with open(path, "rb") as f:
        data = f.read()
    assert data[:4] == b"\x7fELF" and data[4] == 2, f"{path}: not a 64-bit ELF file"
    endian = "<" if data[5] == 1 else ">"
    phoff, = struct.unpack_from(endian + "Q", data, 0x20)
    phentsize, phnum = struct.unpack_from(endian + "HH", data, 0x36)
    for i in range(phnum):
        p_type, _flags, p_offset, _vaddr, _paddr, p_filesz = struct.unpack_from(
            endian + "IIQQQQ", data, phoff + i * phentsize)
        if p_type == 3:  # PT_INTERP
            return data[p_offset:p_offset + p_filesz].rstrip(b"\0").decode()
    return None


def elf_interpreter(path: str) -> str:
    """The dynamic loader of a binary, resolved: executing a dynamically
    linked program needs the execute right on it too."""
    interp = pt_interp(path)
    assert interp is not None, f"{path} has no PT_INTERP (statically linked?)"
    return os.path.realpath(interp)


def make_tree(root: str, owner: int | None = None) -> None:
    """ro/file (granted read), rw/ (granted write), other/file (readable by
    permissions, granted nothing), bin/true (a program outside execute)."""
    for sub in ("ro", "rw", "other", "bin"):
        os.makedirs(os.path.join(root, sub), exist_ok=True)
    for sub in ("ro", "other"):
        with open(os.path.join(root, sub, "file"), "w") as f:
            f.write("data\n")
    shutil.copy("/usr/bin/true", os.path.join(root, "bin", "true"))
    for dirpath, dirnames, filenames in os.walk(root):
        os.chmod(dirpath, 0o777)
        for name in filenames:
            os.chmod(os.path.join(dirpath, name), 0o777)
        if owner is not None:
            os.chown(dirpath, owner, owner)
            for name in filenames:
                os.chown(os.path.join(dirpath, name), owner, owner)


def policy_yaml(name: str, root: str, bind_ok: int, connect_ok: int, python: str) -> str:
    """The policy the probe script is written against: read the system and
    ro/, write rw/, execute /usr/bin and the loaders, bind and connect one
    port each, both scopes. Everything else is denied."""
    loaders = sorted({elf_interpreter(python), elf_interpreter("/usr/bin/true")})
    return f"""name: {name}
landlock:
  filesystem:
    read: [/usr, /etc, /proc, /dev, {{path: /lib, optional: true}}, {{path: /lib64, optional: true}}, {root}/ro]
    write: [{root}/rw, /dev/null]
    execute: [/usr/bin, {', '.join(loaders)}]
  network:
    bind: [{bind_ok}]
    connect: [{connect_ok}]
  scope: [signal, abstract-unix-socket]
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Outside:
    """What lives outside the workload's domain: two TCP listeners (one it
    may connect to, one it may not), an abstract unix socket and a process
    it may not signal, all run by `uid` so only Landlock stands in the way."""

    def __init__(self, abstract_name: str, uid: int) -> None:
        self.listeners = [socket.socket(), socket.socket()]
        for s in self.listeners:
            s.bind(("127.0.0.1", 0))
            s.listen(8)
        self.abstract = socket.socket(socket.AF_UNIX)
        self.abstract.bind("\0" + abstract_name)
        self.abstract.listen(8)
        self.abstract_name = abstract_name
        import subprocess

        def become() -> None:
            os.setgid(uid)
            os.setuid(uid)

        self.sleeper = subprocess.Popen(["/usr/bin/sleep", "120"],
                                        preexec_fn=become if uid != os.geteuid() else None)

    def env(self, root: str, bind_ok: int, bind_denied: int) -> dict[str, str]:
        return {"LL_ROOT": root, "LL_BIND_OK": str(bind_ok), "LL_BIND_DENIED": str(bind_denied),
                "LL_CONNECT_OK": str(self.listeners[0].getsockname()[1]),
                "LL_CONNECT_DENIED": str(self.listeners[1].getsockname()[1]),
                "LL_OUTSIDE_PID": str(self.sleeper.pid), "LL_ABSTRACT": self.abstract_name}

    @property
    def connect_ok(self) -> int:
        return int(self.listeners[0].getsockname()[1])

    def close(self) -> None:
        self.sleeper.kill()
        self.sleeper.wait()
        for s in [*self.listeners, self.abstract]:
            s.close()
