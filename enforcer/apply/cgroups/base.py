"""What every cgroup driver offers the supervisor, and the helpers they share.

A driver owns one workload cgroup: it creates it, writes the Plan's limits,
moves the child in, reads the events that explain a death (OOM kills, forks
refused at the pids limit), and removes the cgroup again, killing whatever
is left in it first. Paths are injected (`root`) so the v2 logic is tested
against a plain directory tree as well as the real hierarchy.
"""

from __future__ import annotations

import errno
import os
import _signal as signal  # the C module: signal.py builds enums (enum: ~4 ms a start)
import time
from enforcer.errors import ApplyError

# No `typing`/`dataclasses` at run time: this is on every start.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Protocol

DEFAULT_PARENT = "/enforcer"


def cgroup_parent() -> str:
    """The cgroup (relative to each hierarchy root) workloads are created under."""
    parent = os.environ.get("ENFORCER_CGROUP_PARENT", DEFAULT_PARENT)
    return "/" + parent.strip("/")


NO_DELEGATION_HINT = (
    "the policy sets cgroup limits and this user has no delegated writable cgroup "
    "(run as root, or point ENFORCER_CGROUP_PARENT at a cgroup delegated to this user)"
)


class CgroupEvents:
    """What the cgroup saw that explains a death."""

    __slots__ = ("oom_kills", "pids_max_hits")

    def __init__(self, oom_kills: int = 0, pids_max_hits: int = 0) -> None:
        self.oom_kills = oom_kills
        self.pids_max_hits = pids_max_hits

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, CgroupEvents):
            return NotImplemented
        return (self.oom_kills, self.pids_max_hits) == (other.oom_kills, other.pids_max_hits)

    def __hash__(self) -> int:
        return hash((self.oom_kills, self.pids_max_hits))

    def __repr__(self) -> str:
        return f"CgroupEvents(oom_kills={self.oom_kills}, pids_max_hits={self.pids_max_hits})"


if TYPE_CHECKING:
    class CgroupDriver(Protocol):
        version: str
        root: str  # the hierarchy root (v2) or the directory of v1 hierarchies

        def create(self) -> None: ...
        def adopt(self, files: Any, pid: int) -> None: ...
        def apply_limits(self) -> None: ...
        def add(self, pid: int) -> None: ...
        def add_self(self) -> None: ...
        def procs(self) -> list[int]: ...
        def procs_files(self) -> list[str]: ...
        def events(self) -> CgroupEvents: ...
        def peaks(self) -> dict[str, int]: ...
        def record_paths(self) -> dict[str, str]: ...
        def remove(self) -> None: ...
else:
    class CgroupDriver:
        """What every driver offers (a typing.Protocol for type checkers;
        `typing` is not imported at run time, see above)."""


def write_file(path: str, value: str) -> None:
    """Write one cgroup file; the error names the file and the value."""
    write_lines(path, (value,))


def write_lines(path: str, lines: tuple[str, ...]) -> None:
    """Write a cgroup file one line per write(2): the kernel parses one
    value per write, so a per-device file (io.max, blkio.throttle.*) given
    several devices in one write fails (v2) or keeps only the first (v1).
    The error names the file and the line that failed."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    except OSError as e:
        shown = lines[0] if len(lines) == 1 else "\n".join(lines)
        raise ApplyError("cgroup", path, e.errno, f"cannot open to write {shown!r}") from None
    try:
        for line in lines:
            try:
                os.write(fd, line.encode())
            except OSError as e:
                raise ApplyError("cgroup", path, e.errno, f"writing {line!r}") from None
    finally:
        os.close(fd)


def make_dir(path: str) -> None:
    for attempt in range(3):
        try:
            os.makedirs(path, mode=0o755, exist_ok=False)
            return
        except FileExistsError:
            # A leftover of a crashed run with the same id is not ours to reuse.
            raise ApplyError("cgroup", path, errno.EEXIST,
                             "workload cgroup already exists") from None
        except FileNotFoundError:
            # Another run removed the shared parent between makedirs' check
            # and its mkdir (remove_parent_if_empty): try again.
            if attempt < 2:
                continue
            raise ApplyError("cgroup", path, errno.ENOENT, "mkdir") from None
        except OSError as e:
            denied = e.errno in (errno.EACCES, errno.EPERM, errno.EROFS)
            detail = NO_DELEGATION_HINT if denied and os.geteuid() != 0 else "mkdir"
            raise ApplyError("cgroup", e.filename or path, e.errno, detail) from None


def read_pids(procs_file: str) -> list[int]:
    try:
        with open(procs_file) as f:
            return [int(line) for line in f if line.strip()]
    except FileNotFoundError:
        return []


def read_int(path: str) -> int | None:
    """A cgroup file holding one number; None if absent or not a number."""
    try:
        with open(path) as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return None


def read_keyed(path: str) -> dict[str, int]:
    """Parse a flat keyed file ("key value" per line), e.g. memory.events."""
    out: dict[str, int] = {}
    try:
        with open(path) as f:
            for line in f:
                parts = line.split()
                if len(parts) == 2 and parts[1].lstrip("-").isdigit():
                    out[parts[0]] = int(parts[1])
    except OSError:
        pass
    return out


def kill_and_remove(dirs: list[str], procs_file: str, kill_file: str | None = None,
                    timeout: float = 3.0) -> None:
    """Kill every process left in the cgroup, then rmdir each directory.

    Leftovers are possible: the workload may have forked children that
    outlive it. They must not survive the cgroup that limits them.
    """
    deadline = time.monotonic() + timeout
    if kill_file and os.path.exists(kill_file):
        try:
            write_file(kill_file, "1")
        except ApplyError:
            pass
    while True:
        pids = read_pids(procs_file)
        if not pids:
            break
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if time.monotonic() > deadline:
            break
        time.sleep(0.01)
    errors: list[ApplyError] = []
    for d in dirs:
        while True:
            try:
                os.rmdir(d)
                break
            except FileNotFoundError:
                break
            except OSError as e:
                # EBUSY while the killed processes are still being torn down.
                if e.errno == errno.EBUSY and time.monotonic() < deadline:
                    time.sleep(0.01)
                    continue
                errors.append(ApplyError("cgroup cleanup", d, e.errno, "rmdir"))
                break
    if errors:
        raise errors[0]


def remove_parent_if_empty(path: str) -> None:
    """Tidy the shared parent (e.g. .../enforcer) when no workload uses it."""
    try:
        os.rmdir(path)
    except OSError:
        pass  # another workload still lives there, or it is not ours
