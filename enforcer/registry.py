"""The workload registry: which process / cgroup belongs to which policy.

`enforcer run` and the OCI shim write one JSON record per workload under
the runtime directory (default /run/enforcer/workloads/<id>.json); the
monitor reads them to attribute violations and limit events. Stdlib only:
this is on the start path.

Writes are atomic (write to a temp file in the same directory, fsync,
rename) so the monitor never reads half a record.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import asdict, dataclass, field
from typing import Any

DEFAULT_RUNTIME_DIR = "/run/enforcer"
RECORD_VERSION = 1


def runtime_dir() -> str:
    return os.environ.get("ENFORCER_RUNTIME_DIR", DEFAULT_RUNTIME_DIR)


def workloads_dir(root: str | None = None) -> str:
    return os.path.join(root or runtime_dir(), "workloads")


@dataclass
class WorkloadRecord:
    id: str  # workload id: container id for the shim, "run-<pid>-<rand>" for run
    kind: str  # "run" | "container"
    policy: str
    policy_hash: str
    mode: str  # "enforce" | "audit"
    # The cgroup the workload lives in, as /proc/PID/cgroup shows it, per
    # hierarchy: {"memory": "/enforcer/run-1-ab", "pids": ..., "": "/..."}
    # ("" is the v2 unified hierarchy). For containers this is filled from
    # the config's cgroupsPath.
    cgroups: dict[str, str] = field(default_factory=dict)
    container_id: str | None = None
    bundle: str | None = None
    pid: int | None = None
    started: float = field(default_factory=time.time)
    # Limits in force, for limit-event messages: {"memory_max": ..., "pids_max": ...}
    limits: dict[str, int] = field(default_factory=dict)
    # The kernel audit session id (`ses=` in audit records) the workload runs
    # in, when enforcer could start a fresh one (see enforcer/audit_session.py):
    # it attributes every record of the workload, even of processes already gone.
    audit_session: int | None = None
    version: int = RECORD_VERSION

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

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
        pid = d.get("pid")
        if pid is not None and (not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0):
            raise ValueError("field 'pid' must be a positive integer")
        allowed = set(WorkloadRecord.__dataclass_fields__)
        return WorkloadRecord(**{k: v for k, v in d.items() if k in allowed})


def _safe_name(workload_id: str) -> str:
    if not workload_id or "/" in workload_id or workload_id.startswith("."):
        raise ValueError(f"bad workload id {workload_id!r}")
    return workload_id + ".json"


def write_record(record: WorkloadRecord, root: str | None = None) -> str:
    directory = workloads_dir(root)
    os.makedirs(directory, mode=0o755, exist_ok=True)
    path = os.path.join(directory, _safe_name(record.id))
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(record.to_json())
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.rename(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return path


def remove_record(workload_id: str, root: str | None = None) -> None:
    try:
        os.unlink(os.path.join(workloads_dir(root), _safe_name(workload_id)))
    except FileNotFoundError:
        pass


def read_record(path: str) -> WorkloadRecord:
    """Raises OSError or ValueError; callers decide whether to count or fail."""
    with open(path, "rb") as f:
        data = f.read(1 << 20)
    return WorkloadRecord.from_dict(json.loads(data))


def list_record_paths(root: str | None = None) -> list[str]:
    directory = workloads_dir(root)
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return []
    return sorted(os.path.join(directory, n) for n in names
                  if n.endswith(".json") and not n.startswith("."))
