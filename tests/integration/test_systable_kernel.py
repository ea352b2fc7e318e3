"""enforcer's syscall table against the running kernel (issue 17).

A syscall number the kernel lacks answers ENOSYS whatever its arguments.
So each entry of the hand-kept addendum, and each syscall of the native
table that libseccomp does not know, is called here with arguments that
make it fail harmlessly if it exists (fd -1, NULL or unaligned pointers) and
must answer anything but ENOSYS. Each call runs in its own child: uretprobe
outside a uprobe trampoline is answered with SIGILL, which also proves it
exists.

Then the same numbers through a filter enforcer compiled: allowed newer
syscalls get through on x86_64 (a raw-number rule in libseccomp's filter)
and on i386 via `int 0x80` (the block in front of libseccomp's program),
and one the policy does not allow is refused with the policy's errno.
"""

from __future__ import annotations

import ctypes
import errno
import faulthandler
import os
import signal

import pytest

from enforcer.compile import seccomp as S
from enforcer.policy import syscall_table
from enforcer.policy import syscalls

from tests.compile_helpers import build_probe, errno_action, rule, run_probe, syscall_policy

pytestmark = pytest.mark.skipif(os.uname().machine != "x86_64",
                                reason="x86_64 host: the numbers checked are x86_64's and i386's")

# Arguments that make every checked syscall fail early if it exists:
# a bad fd or an unaligned/invalid address first, NULL pointers after.
HARMLESS = (-1, 0, 0, 0, 0, 0)
NOT_A_SYSCALL = 100_000  # beyond any table: the control for "ENOSYS means missing"


def _call_in_child(nr: int, args: tuple[int, ...] = HARMLESS) -> str:
    """'ok', an errno name, or 'signal N' for syscall `nr` in a forked child."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            faulthandler.disable()  # uretprobe's SIGILL is expected, not a crash to dump
            libc = ctypes.CDLL(None, use_errno=True)
            libc.syscall.restype = ctypes.c_long
            ret = libc.syscall(ctypes.c_long(nr), *(ctypes.c_long(a) for a in args))
            os._exit(0 if ret >= 0 else min(ctypes.get_errno(), 255))
        finally:
            os._exit(255)
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        return f"signal {os.WTERMSIG(status)}"
    code = os.WEXITSTATUS(status)
    return "ok" if code == 0 else errno.errorcode.get(code, str(code))


def _checked_names() -> dict[str, int]:
    """Addendum entries of x86_64 and every x86_64 syscall libseccomp lacks."""
    names = dict(syscalls.newer_than_libseccomp("x86_64"))
    for name, *_ in syscall_table.addendum():
        nr = syscall_table.number(name, "x86_64")
        if nr is not None:
            names[name] = nr
    return names


def test_control_a_missing_number_answers_enosys() -> None:
    assert _call_in_child(NOT_A_SYSCALL) == "ENOSYS"


@pytest.mark.parametrize("name", sorted(_checked_names()))
def test_table_entry_exists_on_the_running_kernel(name: str) -> None:
    nr = _checked_names()[name]
    entry = syscall_table.entry(name, "x86_64")
    assert entry is not None
    since = tuple(int(x) for x in entry.kernel.split(".")[:2])
    running = tuple(int(x) for x in os.uname().release.split(".")[:2])
    assert running >= since, f"kernel {os.uname().release} predates {name} ({entry.kernel})"
    got = _call_in_child(nr)
    assert got != "ENOSYS", f"{name} ({nr}) answers ENOSYS: the table's number is wrong"
    if name == "uretprobe":
        assert got == f"signal {signal.SIGILL}", got  # outside a trampoline: SIGILL
    else:
        assert not got.startswith("signal"), got


def test_the_addendum_is_checked_here() -> None:
    """Every addendum entry for x86_64 is among the checked names."""
    checked = _checked_names()
    for name, *_rest in syscall_table.addendum():
        if syscall_table.number(name, "x86_64") is not None:
            assert name in checked
    assert {"setxattrat", "file_setattr", "uprobe", "mseal", "listmount"} <= set(checked)


@pytest.fixture(scope="module")
def probe(tmp_path_factory: pytest.TempPathFactory) -> str:
    return build_probe(str(tmp_path_factory.mktemp("probe")))


def test_compiled_filter_passes_allowed_newer_syscalls_on_x86_64_and_i386(
        probe: str, tmp_path: object) -> None:
    allowed = ("mseal", "setxattrat", "file_getattr", "statmount")
    policy = syscall_policy(rule("write"), rule("exit_group"), *(rule(n) for n in allowed),
                            default=errno_action(errno.EACCES),
                            architectures=("x86_64", "x86"))
    calls = []
    for name in allowed + ("listmount",):
        calls.append(f"sys:{syscall_table.number(name, 'x86_64')}:-1")
        calls.append(f"int80:{syscall_table.number(name, 'x86')}:-1")
    result = run_probe(probe, S.export_bpf(policy), calls, str(tmp_path))  # type: ignore[arg-type]
    assert result.returncode == 0, result.stderr
    got = dict(zip(calls, (errno.errorcode.get(e, str(e)) for _ret, e in result.results)))
    for call, err in got.items():
        nr = int(call.split(":")[1])
        name = syscall_table.name_of(nr, "x86_64" if call.startswith("sys") else "x86")
        if name == "listmount":
            assert err == "EACCES", f"{call} ({name}): {err}; the policy does not allow it"
        else:
            assert err not in ("EACCES", "ENOSYS"), f"{call} ({name}): {err}"
