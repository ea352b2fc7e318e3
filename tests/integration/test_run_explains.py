"""What `enforcer run` says about a workload the policy got in the way of,
through the real CLI with real workloads: the refused syscalls (counted
from the kernel's audit records, by the process that made them), a
server listening in a network namespace nobody can reach, a workload's own
exit status 127 next to enforcer's "command not found", and files a tmpfs
of the policy hides."""

from __future__ import annotations

import os
import re
import textwrap
from typing import Iterator

import pytest

from tests import session

from run_helpers import enforcer_run, require_root, scratch_dir

pytestmark = pytest.mark.root

# restricted runs as a dynamic user: the system python3, readable by anyone.
PYTHON3 = "/usr/bin/python3"


@pytest.fixture
def work() -> Iterator[str]:
    require_root()
    d = scratch_dir("enforcer-explain-")
    yield d
    session.remove_tree(d)


def script(work: str, name: str, text: str) -> str:
    path = os.path.join(work, name)
    with open(path, "w") as f:
        f.write(textwrap.dedent(text))
    os.chmod(path, 0o644)
    return path


REFUSED_AND_KILLED = """\
    import ctypes, os, sys
    libc = ctypes.CDLL(None, use_errno=True)
    for _ in range(3):
        assert libc.mount(b"none", b"/nonexistent", b"tmpfs", 0, None) == -1
    pid = os.fork()
    if pid == 0:
        libc.ptrace(0, 0, 0, 0)   # kill-process under restricted
        os._exit(0)
    _, status = os.waitpid(pid, 0)
    print("child", os.WTERMSIG(status))
"""


def test_refusal_summary_names_each_syscall_and_the_process(work: str) -> None:
    path = script(work, "refuse.py", REFUSED_AND_KILLED)
    r = enforcer_run(["--policy", "restricted", "--", PYTHON3, path])
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "child 31"  # SIGSYS
    lines = r.stderr.splitlines()
    assert len(lines) == 2, r.stderr
    killed = re.fullmatch(r"enforcer run: refused by policy 'restricted': ptrace ×1 "
                          r"\(killed, pid (\d+)\)", lines[0])
    refused = re.fullmatch(r"enforcer run: refused by policy 'restricted': mount ×3 "
                           r"\(EPERM, pid (\d+)\)", lines[1])
    assert killed and refused, r.stderr
    # The kill is the forked child's, not the main process's.
    assert killed.group(1) != refused.group(1)


def test_kill_of_the_main_process_is_named_once(work: str) -> None:
    r = enforcer_run(["--policy", "restricted", "--", PYTHON3, "-c",
                      "import ctypes; ctypes.CDLL(None).ptrace(0, 0, 0, 0)"])
    assert r.returncode == 128 + 31
    assert r.stderr.splitlines() == [
        "enforcer run: workload killed by SIGSYS from the seccomp filter of policy "
        "'restricted': syscall ptrace (101) is not allowed"]


def test_summary_while_it_runs(work: str) -> None:
    path = script(work, "slow.py", """\
        import ctypes, sys, time
        ctypes.CDLL(None).mount(b"none", b"/nonexistent", b"tmpfs", 0, None)
        time.sleep(2)
        print("DONE", file=sys.stderr, flush=True)
    """)
    r = enforcer_run(["--policy", "restricted", "--summary=0.3", "--", PYTHON3, path])
    assert r.returncode == 0, r.stderr
    line = re.compile(r"enforcer run: refused by policy 'restricted': mount ×1 \(EPERM, pid \d+\)")
    lines = r.stderr.splitlines()
    # Once while it ran (before its last line), once more at exit; a
    # summary that did not change is not repeated.
    assert len(lines) == 3 and lines[1] == "DONE", r.stderr
    assert line.fullmatch(lines[0]) and line.fullmatch(lines[2]), r.stderr


def test_bad_summary_interval_is_a_usage_error() -> None:
    r = enforcer_run(["--summary=0", "--", "true"])
    assert r.returncode == 2
    assert r.stderr.splitlines()[0] == ("enforcer run: --summary=0: give seconds between 0.1 "
                                        "and 86400")


LISTEN = """\
    import socket, sys, time
    s = socket.socket()
    s.bind(("0.0.0.0", 0))
    s.listen()
    print(s.getsockname()[1], flush=True)
    time.sleep(3)
"""


def test_listener_in_its_own_network_namespace_is_reported(work: str) -> None:
    path = script(work, "listen.py", LISTEN)
    r = enforcer_run(["--policy", "batch-job", "--", PYTHON3, path])
    assert r.returncode == 0, r.stderr
    port = r.stdout.strip()
    assert r.stderr.splitlines() == [
        f"enforcer run: note: the workload listens on TCP port {port} in a network namespace "
        "of its own (policy 'batch-job' has `net` under namespaces): it has only loopback, so "
        "nothing outside can connect; a server needs a policy without `net` (web-server, or "
        "one extending default)"]
    # The same server under web-server (the host's network): nothing to say.
    r = enforcer_run(["--policy", "web-server", "--", PYTHON3, path])
    assert r.returncode == 0 and r.stderr == "", r.stderr


def test_own_exit_127_is_told_apart_from_command_not_found() -> None:
    require_root()
    r = enforcer_run(["--policy", "restricted", "--", "sh", "-c", "exit 127"],
                     env={"PATH": "/usr/bin:/bin"})
    assert r.returncode == 127
    assert r.stderr.splitlines() == [
        "enforcer run: the workload (sh) ran and exited with status 127 itself; it is not "
        "enforcer's 'command not found', which has a line of its own"]
    r = enforcer_run(["--policy", "restricted", "--", "no-such-command-x"],
                     env={"PATH": "/usr/bin:/bin"})
    assert r.returncode == 127
    assert r.stderr.splitlines() == [
        "enforcer run: exec: no-such-command-x: ENOENT (No such file or directory): command "
        "not found on PATH /usr/bin:/bin"]


def test_paths_hidden_by_the_policys_tmpfs_are_named() -> None:
    """The nginx case of issue 19: the configuration lives where the
    policy puts a tmpfs; the server fails with ENOENT, and enforcer's last
    line says which of the policy's mounts hid what."""
    require_root()
    host_tmp = session.mkdtemp("enforcer-hidden-", dir="/tmp")
    conf_dir = scratch_dir("enforcer-hidden-conf-")
    try:
        conf = os.path.join(host_tmp, "nginx.conf")
        for path in (conf, os.path.join(conf_dir, "app.conf")):
            with open(path, "w") as f:
                f.write("x\n")
        os.chmod(host_tmp, 0o755)
        r = enforcer_run(["--policy", "restricted", "--", "cat", conf],
                         env={"PATH": "/usr/bin:/bin"})
        assert r.returncode == 1
        assert r.stderr.splitlines()[-1] == (
            f"enforcer run: note: {conf} on the command line is hidden by the policy's tmpfs "
            "at /tmp (the workload saw an empty /tmp): if the workload needs it, bind it "
            f"(filesystem.bind: [{{source: {conf}, target: {conf}}}]) or drop the tmpfs "
            "(filesystem.tmpfs_remove: [/tmp])")
        # A tmpfs over a configuration directory, the path not on the command line.
        policy = os.path.join(conf_dir, "p.yaml")
        with open(policy, "w") as f:
            f.write(f"version: 1\nname: conf-hidden\nextends: restricted\n"
                    f"filesystem:\n  tmpfs: [{conf_dir}]\n")
        os.chmod(policy, 0o644)
        r = enforcer_run(["--policy", policy, "--", "sh", "-c", f"cat {conf_dir}/app.conf"],
                         env={"PATH": "/usr/bin:/bin"})
        assert r.returncode == 1
        assert r.stderr.splitlines()[-1] == (
            f"enforcer run: note: the policy's tmpfs at {conf_dir} hides the host's 2 entries "
            f"there (app.conf, p.yaml): if the workload needs it, bind it (filesystem.bind: "
            f"[{{source: {conf_dir}, target: {conf_dir}}}]) or drop the tmpfs "
            f"(filesystem.tmpfs_remove: [{conf_dir}])")
    finally:
        session.remove_tree(host_tmp)
        session.remove_tree(conf_dir)
