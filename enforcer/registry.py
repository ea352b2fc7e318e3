"""The workload registry: which process / cgroup belongs to which policy.

`enforcer run` and the OCI shim write one JSON record per workload under
the runtime directory (default /run/enforcer/workloads/<id>.json); the
monitor reads them to attribute violations and limit events. Stdlib only:
this is on the start path.

Writes are atomic (write to a temp file in the same directory, rename) so
the monitor never reads half a record. There is no fsync: a record
describes a running process, so after a crash or reboot (the only case
fsync protects against) it is stale whatever it holds -- and /run is a
tmpfs on most systems, where fsync does nothing anyway. On a disk an fsync
costs a disk flush on every start. The rename alone is what makes a reader
see the old record, the new one or none.

No `json`, `tempfile`, `dataclasses` or `typing` at import: `enforcer run`
writes a record on every start (see enforcer/fastjson.py for why).
"""

from __future__ import annotations

import os
import time

from enforcer import fastjson

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

DEFAULT_RUNTIME_DIR = "/run/enforcer"
RECORD_VERSION = 1


def runtime_dir() -> str:
    return os.environ.get("ENFORCER_RUNTIME_DIR", DEFAULT_RUNTIME_DIR)


def workloads_dir(root: str | None = None) -> str:
    return os.path.join(root or runtime_dir(), "workloads")


class WorkloadRecord:
    """One workload's record (a plain class written out by hand, for start
    latency; it compares by value like the dataclass it was)."""

    FIELDS = ("id", "kind", "policy", "policy_hash", "mode", "cgroups", "container_id",
              "bundle", "pid", "started", "limits", "audit_session", "uid", "version")

    def __init__(self, id: str, kind: str, policy: str, policy_hash: str, mode: str,
                 cgroups: dict[str, str] | None = None, container_id: str | None = None,
                 bundle: str | None = None, pid: int | None = None,
                 started: float | None = None, limits: dict[str, int] | None = None,
                 audit_session: int | None = None, uid: int | None = None,
                 version: int = RECORD_VERSION) -> None:
        self.id = id  # workload id: container id for the shim, "run-<pid>-<rand>" for run
        self.kind = kind  # "run" | "container"
        self.policy = policy
        self.policy_hash = policy_hash
        self.mode = mode  # "enforce" | "audit"
        # The cgroup the workload lives in, as /proc/PID/cgroup shows it, per
        # hierarchy: {"memory": "/enforcer/run-1-ab", "pids": ..., "": "/..."}
        # ("" is the v2 unified hierarchy). For containers this is filled from
        # the config's cgroupsPath.
        self.cgroups: dict[str, str] = {} if cgroups is None else cgroups
        self.container_id = container_id
        self.bundle = bundle
        self.pid = pid
        self.started: float = time.time() if started is None else started
        # Limits in force, for limit-event messages: {"memory_max": ..., "pids_max": ...}
        self.limits: dict[str, int] = {} if limits is None else limits
        # The kernel audit session id (`ses=` in audit records) the workload runs
        # in, when enforcer could start a fresh one (see enforcer/audit_session.py):
        # it attributes every record of the workload, even of processes already gone.
        # None: no session of its own (attribution falls back to pid and cgroup).
        self.audit_session = audit_session
        # The dynamic uid the workload runs as (held by its supervisor for as
        # long as this record exists; see enforcer/apply/dynamic_user.py), or
        # None when the policy has no dynamic user.
        self.uid = uid
        self.version = version

    def to_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.FIELDS}

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, WorkloadRecord):
            return NotImplemented
        return self.to_dict() == other.to_dict()

    __hash__ = None  # type: ignore[assignment]  # mutable, like the dataclass was

    def __repr__(self) -> str:
        inner = ", ".join(f"{k}={v!r}" for k, v in self.to_dict().items())
        return f"WorkloadRecord({inner})"

    def to_json(self) -> str:
        # Same text as json.dumps(..., sort_keys=True).
        return fastjson.dumps(self.to_dict(), sort_keys=True)

    @staticmethod
    def from_dict(d: dict[str, Any]) -> "WorkloadRecord":
        """Strict: raises ValueError on anything malformed (monitor counts it)."""
        if not isinstance(d, dict) or d.get("version") != RECORD_VERSION:
            raise ValueError("not a version-1 workload record")
        for key, typ in (("id", str), ("kind", str), ("policy", str), ("policy_hash", str),
                         ("mode", str), ("cgroups", dict)):
            if not isinstance(d.get(key), typ):
                raise ValueError(f"field {key!r} missing or not {typ.__name__}")
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in d["cgroups"].items()):
            raise ValueError("field 'cgroups' must map strings to strings")
        ses = d.get("audit_session")
        if ses is not None and (not isinstance(ses, int) or isinstance(ses, bool) or ses < 0):
            raise ValueError("field 'audit_session' must be a non-negative integer")
        for key in ("pid", "uid"):
            value = d.get(key)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool)
                                      or value <= 0):
                raise ValueError(f"field {key!r} must be a positive integer")
        allowed = set(WorkloadRecord.FIELDS)
        return WorkloadRecord(**{k: v for k, v in d.items() if k in allowed})


def record_path(workload_id: str, root: str | None = None) -> str:
    """The record file of a workload; ValueError for an id that is not a
    plain file name (it comes from a container runtime's command line)."""
    if not workload_id or "/" in workload_id or workload_id.startswith("."):
        raise ValueError(f"bad workload id {workload_id!r}")
    return os.path.join(workloads_dir(root), workload_id + ".json")


def write_record(record: WorkloadRecord, root: str | None = None) -> str:
    path = record_path(record.id, root)
    os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
    from enforcer.atomicfile import write_atomic

    write_atomic(path, record.to_json().encode(), tag=record.id)
    return path


def remove_record(workload_id: str, root: str | None = None) -> None:
    try:
        os.unlink(record_path(workload_id, root))
    except FileNotFoundError:
        pass


def read_record(path: str) -> WorkloadRecord:
    """Raises OSError or ValueError; callers decide whether to count or fail."""
    with open(path, "rb") as f:
        data = f.read(1 << 20)
    return WorkloadRecord.from_dict(fastjson.loads(data))


def list_record_paths(root: str | None = None) -> list[str]:
    directory = workloads_dir(root)
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return []
    return sorted(os.path.join(directory, n) for n in names
                  if n.endswith(".json") and not n.startswith("."))
