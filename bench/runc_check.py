"""Check bench/docker_profile.py against runc itself.

Starts a throwaway busybox container with `runc run`, giving it the OCI
seccomp object dockerd would send for Docker's default profile, reads the
filter the kernel holds for the container's process with
ptrace(PTRACE_SECCOMP_GET_FILTER), and compares it with the BPF this bench
compiles. The comparison is exact for libseccomp's part; for runc's ENOSYS
stub the order of the per-architecture sections comes from a Go map (random
per run), so the stub is compared as a multiset of instructions and both
programs are replayed on a set of syscalls (they must decide alike).

Needs root, runc and a static busybox. Leaves nothing behind: the container
is deleted and the bundle removed even on failure.

    python bench/runc_check.py [PROFILE.json]
"""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from typing import Any

import bpf_tools as bt
import docker_profile as dp

PTRACE_ATTACH, PTRACE_DETACH, PTRACE_SECCOMP_GET_FILTER = 16, 17, 0x420C
BUSYBOX = next((p for p in ("/bin/busybox", "/usr/bin/busybox") if os.path.exists(p)), None)


def available() -> str | None:
    """None if the check can run here, else why not."""
    if os.geteuid() != 0:
        return "needs root"
    if shutil.which("runc") is None:
        return "runc is not installed"
    if BUSYBOX is None:
        return "busybox (static) is not installed"
    return None


def _ptrace_filter(pid: int) -> bytes:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.ptrace.restype = ctypes.c_long
    libc.ptrace.argtypes = (ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p)
    if libc.ptrace(PTRACE_ATTACH, pid, None, None) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"ptrace(PTRACE_ATTACH, {pid}): {os.strerror(err)}")
    try:
        os.waitpid(pid, 0)  # wait for the attach stop (runc's init is not our child: __WALL)
        count = libc.ptrace(PTRACE_SECCOMP_GET_FILTER, pid, ctypes.c_void_p(0), None)
        if count < 0:
            err = ctypes.get_errno()
            raise OSError(err, f"ptrace(PTRACE_SECCOMP_GET_FILTER): {os.strerror(err)}")
        buf = ctypes.create_string_buffer(count * 8)
        got = libc.ptrace(PTRACE_SECCOMP_GET_FILTER, pid, ctypes.c_void_p(0), buf)
        if got != count:
            raise OSError(ctypes.get_errno(), "PTRACE_SECCOMP_GET_FILTER returned a short filter")
        return buf.raw
    finally:
        libc.ptrace(PTRACE_DETACH, pid, None, None)


def runc_loaded_filter(oci_seccomp: dict[str, Any]) -> bytes:
    """The BPF runc loads for `oci_seccomp`, read back from the kernel."""
    cid = f"enforcer-bench-{uuid.uuid4().hex[:8]}"
    bundle = tempfile.mkdtemp(prefix="enforcer-bench-runc-")
    try:
        rootfs = os.path.join(bundle, "rootfs")
        os.makedirs(os.path.join(rootfs, "bin"))
        assert BUSYBOX is not None
        shutil.copy2(BUSYBOX, os.path.join(rootfs, "bin", "busybox"))
        subprocess.run(["runc", "spec", "--bundle", bundle], check=True, capture_output=True)
        cfg_path = os.path.join(bundle, "config.json")
        with open(cfg_path) as f:
            cfg = json.load(f)
        cfg["process"]["terminal"] = False
        cfg["process"]["args"] = ["/bin/busybox", "sleep", "60"]
        cfg["linux"]["seccomp"] = oci_seccomp
        with open(cfg_path, "w") as f:
            json.dump(cfg, f)
        # Detached: the container inherits runc's stdio, so give it files,
        # not pipes (a pipe would stay open for as long as the container runs).
        with open(os.path.join(bundle, "runc.log"), "w+") as log:
            r = subprocess.run(["runc", "run", "-d", "--bundle", bundle, cid],
                               stdin=subprocess.DEVNULL, stdout=log, stderr=log, timeout=60)
            if r.returncode != 0:
                log.seek(0)
                raise OSError(f"runc run failed: {log.read().strip()[-300:]}")
        state = json.loads(subprocess.run(["runc", "state", cid], check=True,
                                          capture_output=True, text=True).stdout)
        pid = int(state["pid"])
        for _ in range(50):  # until runc's init has exec'd busybox (filter loaded)
            if os.readlink(f"/proc/{pid}/exe").endswith("busybox"):
                break
            time.sleep(0.05)
        return _ptrace_filter(pid)
    finally:
        subprocess.run(["runc", "delete", "-f", cid], capture_output=True)
        shutil.rmtree(bundle, ignore_errors=True)


def compare(ours: bytes, theirs: bytes, stub_len: int) -> list[str]:
    """Differences between our BPF and runc's (empty list: equivalent)."""
    a, b = bt.parse(ours), bt.parse(theirs)
    problems = []
    if len(a) != len(b):
        problems.append(f"length: ours {len(a)} instructions, runc's {len(b)}")
    if a[stub_len:] != b[stub_len:]:
        problems.append("libseccomp part differs")
    def shape(prog: list[bt.Insn]) -> Counter[tuple[int, int]]:
        # Jump distances depend on the section order; compare what is tested.
        return Counter((i.code, 0 if i.code == 0x05 else i.k) for i in prog[:stub_len])

    if shape(a) != shape(b):
        problems.append("ENOSYS stub has different instructions")
    probes = [("x86_64", nr, ()) for nr in range(0, 470)] + [
        ("x86", nr, ()) for nr in range(0, 460)] + [("x32", nr, ()) for nr in range(0, 560)] + [
        ("x86_64", 135, (v,)) for v in (0, 8, 0x20000, 0xFFFFFFFF, 1)] + [
        ("x86_64", 56, (f,)) for f in (0x11, 0x10000000, 0x20000000)]
    for arch, nr, args in probes:
        ra, rb = bt.run(a, arch, nr, args)[0], bt.run(b, arch, nr, args)[0]
        if ra != rb:
            problems.append(f"{arch} nr {nr} args {args}: ours {bt.action_name(ra)}, "
                            f"runc's {bt.action_name(rb)}")
            if len(problems) > 10:
                break
    return problems


def check(profile: str) -> tuple[bool, str]:
    why = available()
    if why:
        return False, f"not checked: {why}"
    with open(profile) as f:
        oci = dp.docker_to_oci(json.load(f))
    ours = dp.compile_docker_profile(profile)
    stub_len = len(dp.enosys_stub(oci, 0))
    try:
        theirs = runc_loaded_filter(oci)
    except (OSError, subprocess.SubprocessError) as e:
        return False, f"not checked: could not read runc's filter: {e}"
    problems = compare(ours, theirs, stub_len)
    if problems:
        return False, "DIFFERS from runc's: " + "; ".join(problems)
    exact = "byte-identical" if ours == theirs else (
        "identical libseccomp part; ENOSYS stub the same instructions in another "
        "architecture order (Go map order)")
    return True, (f"matches the filter runc {_runc_version()} loads ({len(theirs) // 8} "
                  f"instructions, read back with PTRACE_SECCOMP_GET_FILTER): {exact}")


def _runc_version() -> str:
    out = subprocess.run(["runc", "--version"], capture_output=True, text=True).stdout
    return out.split()[2] if len(out.split()) > 2 else "?"


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    ok, text = check(sys.argv[1] if len(sys.argv) > 1 else
                     os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
                         os.path.abspath(__file__)))), "shared", "fixtures",
                         "docker-default-seccomp.json"))
    print(text)
    sys.exit(0 if ok else 1)
