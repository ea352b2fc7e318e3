"""The compiled Plan: plain, JSON-serialisable, versioned, content-hashed.

Written by enforcer/compile/, read by enforcer/apply/ and enforcer/shim/.
This module is on the start path, so it imports only the standard library
(no PyYAML, no libseccomp, no psutil, no prometheus_client): a test checks.

A Plan is everything the privileged side needs and nothing it must compute:

* seccomp: ready BPF per filter (base64 of struct sock_filter[]), the flags
  to load it with, and a syscall-number -> name table for the native arch so
  the supervisor can say which syscall killed a workload;
* capabilities: the five sets as bitmasks, or a relative drop/add pair;
* mounts: an ordered list of typed operations;
* cgroup: the limits, typed and in the policy's units (each back end --
  the cgroup v1 and v2 drivers, the OCI exporter and the shim -- renders
  its own form of them);
* rlimits, user (fixed ids, or a dynamic one picked at start), namespaces,
  no_new_privileges;
* env: how the workload's environment is made from the caller's.

Loading refuses (PlanError) anything it does not fully understand: an
unknown or newer `format`, a missing field, a wrong type, a hash that does
not match the content. A Plan is applied whole or not at all.
"""

from __future__ import annotations

import binascii

from enforcer import fastjson
from enforcer.errors import PlanError
from enforcer.kernel.cgroup import IO_WEIGHT_MAX, IO_WEIGHT_MIN, parse_device
from enforcer.kernel.namespaces import NAMES as NAMESPACE_NAMES

# `typing` and `dataclasses` are not imported: this module is on every
# start, and those two (with `inspect`, `ast`, `dis`, ...) cost ~10 ms there.
# The classes below are written out by hand with the behaviour the frozen
# dataclasses they replaced had: keyword/positional construction, defaults,
# immutability, equality and hashing by value, a readable repr;
# `replace()` and `asdict()` below stand in for the dataclasses functions.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, TypeVar

    R = TypeVar("R", bound="_Record")

try:  # the bare sha256 module: hashlib would load OpenSSL (~2 ms) first
    from _sha256 import sha256 as sha256
except ImportError:  # pragma: no cover - other Pythons / 3.12+
    try:
        from _sha2 import sha256 as sha256
    except ImportError:
        from hashlib import sha256 as sha256

# Bump when the meaning of any field changes. Readers refuse other versions.
# 2: `env`, `user.dynamic`, the `devices` mount operation.
# 3: mount targets under a rootfs are resolved inside it (and mount points
#    made there); the `proc` and `sysfs` operations; `bind` from the policy.
# 4: typed cgroup limits (CgroupPlan) instead of v1/v2 file contents.
PLAN_FORMAT = 4


def sha256_hex(data: bytes) -> str:
    return str(sha256(data).hexdigest())


def canonical_json(body: Any) -> str:
    """The text a Plan's digest is taken over: sorted keys, no spaces."""
    return fastjson.dumps(body, sort_keys=True, separators=(",", ":"))


class _Record:
    """Immutable value object: the fields are named in `_FIELDS` (and are
    the instance's __dict__, as with a dataclass)."""

    _FIELDS: tuple[str, ...] = ()

    def _init(self, *values: Any) -> None:
        for name, value in zip(self._FIELDS, values):
            object.__setattr__(self, name, value)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"cannot assign to field {name!r}: "
                             f"{type(self).__name__} is immutable (use enforcer.plan.replace)")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"cannot delete field {name!r}: {type(self).__name__} is immutable")

    def _values(self) -> tuple[Any, ...]:
        return tuple(getattr(self, name) for name in self._FIELDS)

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return bool(self._values() == other._values())

    def __hash__(self) -> int:
        return hash(self._values())

    def __repr__(self) -> str:
        inner = ", ".join(f"{n}={getattr(self, n)!r}" for n in self._FIELDS)
        return f"{type(self).__name__}({inner})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (self.__class__, self._values())


def replace(obj: R, **changes: Any) -> R:
    """A copy of a Plan (or any part of one) with some fields changed."""
    unknown = set(changes) - set(obj._FIELDS)
    if unknown:
        raise TypeError(f"{type(obj).__name__} has no field(s) {sorted(unknown)}")
    kwargs = {name: changes.get(name, getattr(obj, name)) for name in obj._FIELDS}
    return type(obj)(**kwargs)


def asdict(obj: Any) -> Any:
    """Plain data for a Plan part: records become dicts (recursively),
    tuples stay tuples, dicts are copied -- as dataclasses.asdict did."""
    if isinstance(obj, _Record):
        return {name: asdict(getattr(obj, name)) for name in obj._FIELDS}
    if isinstance(obj, (list, tuple)):
        return type(obj)(asdict(v) for v in obj)
    if isinstance(obj, dict):
        return {k: asdict(v) for k, v in obj.items()}
    return obj


class SeccompFilter(_Record):
    """One BPF program, ready for seccomp(SECCOMP_SET_MODE_FILTER)."""

    _FIELDS = ("bpf_b64", "flags")
    bpf_b64: str  # base64 of the raw struct sock_filter array (8 bytes each)
    # Names from: "log" (SECCOMP_FILTER_FLAG_LOG), "spec_allow"
    # (SECCOMP_FILTER_FLAG_SPEC_ALLOW), "tsync".
    flags: tuple[str, ...]

    def __init__(self, bpf_b64: str, flags: tuple[str, ...] = ()) -> None:
        self._init(bpf_b64, flags)

    @property
    def bpf(self) -> bytes:
        return binascii.a2b_base64(self.bpf_b64)


class SeccompPlan(_Record):
    _FIELDS = ("native_arch", "architectures", "default_action", "filter",
                           "syscall_names", "oci")
    native_arch: str  # libseccomp arch name of the compiling host, e.g. "x86_64"
    architectures: tuple[str, ...]  # every arch the filter admits
    default_action: str  # human form, e.g. "errno EPERM", "kill-process"
    filter: SeccompFilter
    # native syscall number -> name, for "killed by seccomp: ptrace (101)"
    syscall_names: dict[int, str]
    # The same filter as an OCI `linux.seccomp` object, precomputed so the
    # shim can hand it to runc without compiling anything at start time.
    oci: dict[str, Any]

    def __init__(self, native_arch: str, architectures: tuple[str, ...], default_action: str,
                 filter: SeccompFilter, syscall_names: dict[int, str] | None = None,
                 oci: dict[str, Any] | None = None) -> None:
        self._init(native_arch, architectures, default_action, filter,
                   {} if syscall_names is None else syscall_names, {} if oci is None else oci)


class CapabilityPlan(_Record):
    """Five capability sets as bitmasks (bit n == capability n).

    If `relative` is true the sets are computed at apply time from the
    parent's: new = (parent & ~drop) | add, and the five masks here are
    unused (they hold what the compiler assumed as a parent, for exports).
    """

    _FIELDS = ("bounding", "effective", "permitted", "inheritable", "ambient",
                           "relative", "drop", "add")
    bounding: int
    effective: int
    permitted: int
    inheritable: int
    ambient: int
    relative: bool
    drop: int
    add: int

    def __init__(self, bounding: int, effective: int, permitted: int, inheritable: int,
                 ambient: int, relative: bool = False, drop: int = 0, add: int = 0) -> None:
        self._init(bounding, effective, permitted, inheritable, ambient, relative, drop, add)


class MountOp(_Record):
    """One mount operation, applied in list order inside the mount namespace.

    kinds:
      make_private   path            mount --make-rprivate (stop propagation)
      bind           path, source    bind `source` (a host path) onto `path`,
                                     recursively; options ("ro",) read-only
      readonly       path            recursive bind-remount read-only
      writable       path            recursive bind-remount read-write
      tmpfs          path, size, mode, options
      mask           path            /dev/null over a file; empty ro tmpfs over a dir
      hide           path            inaccessible: mode-000 empty tmpfs / file
      devices        path            a private /dev: tmpfs with the host's pseudo
                                     devices bound in and a new devpts
      proc           path            a proc of the workload's pid namespace
      sysfs          path            a read-only sysfs
      pivot_root     path            switch to a new root at `path`
    `optional`: a missing path is skipped (and reported), not an error.
    Under a rootfs (a pivot_root op), a path below it is resolved inside it,
    never following its symlinks out; tmpfs, bind, devices, proc and sysfs
    make a missing mount point there (elsewhere: inside a tmpfs of the
    Plan only).
    """

    _FIELDS = ("kind", "path", "source", "size", "mode", "options", "optional")
    kind: str
    path: str
    source: str | None
    size: int | None
    mode: int | None
    options: tuple[str, ...]
    optional: bool

    def __init__(self, kind: str, path: str, source: str | None = None, size: int | None = None,
                 mode: int | None = None, options: tuple[str, ...] = (),
                 optional: bool = False) -> None:
        self._init(kind, path, source, size, mode, options, optional)


MOUNT_KINDS = frozenset(
    {"make_private", "bind", "readonly", "writable", "tmpfs", "mask", "hide", "devices",
     "proc", "sysfs", "pivot_root"}
)


class IoDevicePlan(_Record):
    """The throttles of one block device: bytes or operations per second,
    None where the policy leaves a direction unlimited."""

    _FIELDS = ("device", "read_bps", "write_bps", "read_iops", "write_iops")
    device: str  # "MAJOR:MINOR" (the compiler resolves /dev paths)
    read_bps: int | None
    write_bps: int | None
    read_iops: int | None
    write_iops: int | None

    def __init__(self, device: str, read_bps: int | None = None, write_bps: int | None = None,
                 read_iops: int | None = None, write_iops: int | None = None) -> None:
        self._init(device, read_bps, write_bps, read_iops, write_iops)


class CgroupPlan(_Record):
    """The workload's cgroup limits, each stored once, in the policy's unit.

    Nothing here is a cgroup file: the v1 and v2 drivers
    (enforcer/apply/cgroups/v1.py, v2.py) and the OCI exporter
    (enforcer/emit/oci_resources.py) render their own from these numbers.
    None: no limit.

      memory_max       bytes
      memory_swap_max  bytes of swap on top of memory_max (cgroup v2's
                       memory.swap.max; v1 and OCI count memory+swap)
      pids_max         tasks
      cpu_quota_us     microseconds of CPU per cpu_period_us (both or neither)
      io_weight        proportional io share on the cgroup v2 scale,
                       1..10000, default 100 (enforcer/kernel/cgroup.py
                       converts it for v1 and OCI)
      io_devices       per-device throttles, one entry per device
    """

    _FIELDS = ("memory_max", "memory_swap_max", "pids_max", "cpu_quota_us", "cpu_period_us",
               "io_weight", "io_devices")
    memory_max: int | None
    memory_swap_max: int | None
    pids_max: int | None
    cpu_quota_us: int | None
    cpu_period_us: int | None
    io_weight: int | None
    io_devices: tuple[IoDevicePlan, ...]

    def __init__(self, memory_max: int | None = None, memory_swap_max: int | None = None,
                 pids_max: int | None = None, cpu_quota_us: int | None = None,
                 cpu_period_us: int | None = None, io_weight: int | None = None,
                 io_devices: tuple[IoDevicePlan, ...] = ()) -> None:
        self._init(memory_max, memory_swap_max, pids_max, cpu_quota_us, cpu_period_us,
                   io_weight, io_devices)

    @property
    def empty(self) -> bool:
        return not self.io_devices and all(
            v is None for v in (self.memory_max, self.memory_swap_max, self.pids_max,
                                self.cpu_quota_us, self.io_weight))


class RlimitPlan(_Record):
    _FIELDS = ("resource", "soft", "hard")
    resource: str  # "NOFILE", "NPROC", ... (resource module name without RLIMIT_)
    soft: int  # -1 = unlimited
    hard: int

    def __init__(self, resource: str, soft: int, hard: int) -> None:
        self._init(resource, soft, hard)


class UserPlan(_Record):
    """The workload's ids. With `dynamic`, `enforcer run` (as root) picks a
    uid/gid of its own for each workload when it starts (see
    enforcer/apply/dynamic_user.py) and uid/gid here are the fallback used
    where no id can be picked (an unprivileged run, exports, the shim)."""

    _FIELDS = ("uid", "gid", "groups", "dynamic")
    uid: int
    gid: int
    groups: tuple[int, ...]
    dynamic: bool

    def __init__(self, uid: int, gid: int, groups: tuple[int, ...] = (),
                 dynamic: bool = False) -> None:
        self._init(uid, gid, groups, dynamic)


class EnvPlan(_Record):
    """The workload's environment: the caller's, cleared but for `keep`
    (names, or prefixes ending in `*`) when `clear`, then `set` on top."""

    _FIELDS = ("clear", "keep", "set")
    clear: bool
    keep: tuple[str, ...]
    set: dict[str, str]

    def __init__(self, clear: bool = False, keep: tuple[str, ...] = (),
                 set: dict[str, str] | None = None) -> None:
        self._init(clear, keep, {} if set is None else set)


class LandlockRule(_Record):
    """One path beneath which `access` (Landlock filesystem bits) is allowed."""

    _FIELDS = ("path", "access", "optional")
    path: str  # absolute; resolved where the workload runs (after mounts and new root)
    access: int  # LANDLOCK_ACCESS_FS_* bits, every right the policy grants (any ABI)
    optional: bool  # a missing path is skipped instead of refused

    def __init__(self, path: str, access: int, optional: bool = False) -> None:
        self._init(path, access, optional)


class LandlockPlan(_Record):
    """A Landlock ruleset, for every ABI: the apply step (and the shim) fit
    it to the running kernel (enforcer/landlock.py `effective`), because a
    Plan may be cached across kernel upgrades.

    handled_net: the network rights restricted (a policy's `any` leaves one
    out); bind/connect: the TCP ports allowed; scopes: LANDLOCK_SCOPE_* bits;
    min_abi: the policy's `landlock.abi` (0: best effort).
    """

    _FIELDS = ("min_abi", "rules", "handled_net", "bind", "connect", "scopes")
    min_abi: int
    rules: tuple[LandlockRule, ...]
    handled_net: int
    bind: tuple[int, ...]
    connect: tuple[int, ...]
    scopes: int

    def __init__(self, min_abi: int = 0, rules: tuple[LandlockRule, ...] = (),
                 handled_net: int = 0, bind: tuple[int, ...] = (),
                 connect: tuple[int, ...] = (), scopes: int = 0) -> None:
        self._init(min_abi, rules, handled_net, bind, connect, scopes)


class Plan(_Record):
    _FIELDS = ("format", "enforcer_version", "policy_name", "policy_hash", "mode",
                           "seccomp", "capabilities", "mounts", "cgroup", "rlimits", "user",
                           "namespaces", "no_new_privileges", "notes", "env", "landlock")
    format: int
    enforcer_version: str
    policy_name: str
    policy_hash: str  # sha256 over the policy's source files (see enforcer/planstore.py)
    mode: str  # "enforce" | "audit"
    seccomp: SeccompPlan | None
    capabilities: CapabilityPlan | None
    mounts: tuple[MountOp, ...]
    cgroup: CgroupPlan
    rlimits: tuple[RlimitPlan, ...]
    user: UserPlan | None
    namespaces: tuple[str, ...]
    no_new_privileges: bool
    # Free-form notes from the compiler the user should see (degradations
    # the policy asked for, optional paths); printed by `enforcer compile`.
    notes: tuple[str, ...]
    # The workload's environment. The default passes the caller's on
    # unchanged (a hand-built Plan); compiled policies reset it.
    env: EnvPlan
    landlock: LandlockPlan | None  # None: no Landlock (also in audit mode)

    def __init__(self, format: int, enforcer_version: str, policy_name: str, policy_hash: str,
                 mode: str, seccomp: SeccompPlan | None, capabilities: CapabilityPlan | None,
                 mounts: tuple[MountOp, ...] = (), cgroup: CgroupPlan | None = None,
                 rlimits: tuple[RlimitPlan, ...] = (), user: UserPlan | None = None,
                 namespaces: tuple[str, ...] = (), no_new_privileges: bool = True,
                 notes: tuple[str, ...] = (), env: EnvPlan | None = None,
                 landlock: LandlockPlan | None = None) -> None:
        self._init(format, enforcer_version, policy_name, policy_hash, mode, seccomp,
                   capabilities, mounts, CgroupPlan() if cgroup is None else cgroup, rlimits,
                   user, namespaces, no_new_privileges, notes,
                   EnvPlan() if env is None else env, landlock)

    # -- serialisation -------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = asdict(self)
        if self.seccomp is not None:
            # JSON object keys are strings; keep the numbers readable.
            d["seccomp"]["syscall_names"] = {
                str(k): v for k, v in self.seccomp.syscall_names.items()
            }
        return d

    def to_json(self) -> str:
        """Canonical JSON (sorted keys) plus a content digest."""
        body = self.to_dict()
        digest = sha256_hex(canonical_json(body).encode())
        return canonical_json({"plan": body, "sha256": digest})

    @property
    def digest(self) -> str:
        return sha256_hex(canonical_json(self.to_dict()).encode())


# -- loading (strict) ----------------------------------------------------


def _req(d: dict[str, Any], key: str, typ: type | tuple[type, ...], where: str) -> Any:
    if key not in d:
        raise PlanError(f"plan: {where}: missing field {key!r}")
    value = d[key]
    if isinstance(value, bool) and typ is int:
        raise PlanError(f"plan: {where}.{key}: expected int, got bool")
    if not isinstance(value, typ):
        raise PlanError(f"plan: {where}.{key}: expected {typ}, got {type(value).__name__}")
    return value


def _opt(d: dict[str, Any], key: str, typ: type | tuple[type, ...], where: str) -> Any:
    if d.get(key) is None:
        return None
    return _req(d, key, typ, where)


def _check_keys(d: dict[str, Any], allowed: set[str], where: str) -> None:
    unknown = set(d) - allowed
    if unknown:
        # A field we do not know might be a restriction we would silently skip.
        raise PlanError(f"plan: {where}: unknown field(s) {sorted(unknown)}; refusing to apply")


def _seccomp_from(d: dict[str, Any]) -> SeccompPlan:
    _check_keys(d, {"native_arch", "architectures", "default_action", "filter", "syscall_names",
                    "oci"}, "seccomp")
    f = _req(d, "filter", dict, "seccomp")
    _check_keys(f, {"bpf_b64", "flags"}, "seccomp.filter")
    bpf_b64 = _req(f, "bpf_b64", str, "seccomp.filter")
    try:
        # strict: only the base64 alphabet, correct padding (what
        # b64decode(validate=True) checked, without its `re` import).
        raw = binascii.a2b_base64(bpf_b64, strict_mode=True)
    except ValueError as e:
        raise PlanError(f"plan: seccomp.filter.bpf_b64: not base64: {e}") from None
    if not raw or len(raw) % 8 or len(raw) // 8 > 4096:
        raise PlanError(f"plan: seccomp.filter: BPF of {len(raw)} bytes is not 1..4096 instructions")
    flags = tuple(_req(f, "flags", list, "seccomp.filter"))
    for flag in flags:
        if flag not in ("log", "spec_allow", "tsync"):
            raise PlanError(f"plan: seccomp.filter.flags: unknown flag {flag!r}")
    names_raw = _req(d, "syscall_names", dict, "seccomp")
    try:
        names = {int(k): str(v) for k, v in names_raw.items()}
    except ValueError:
        raise PlanError("plan: seccomp.syscall_names: keys must be numbers") from None
    return SeccompPlan(
        native_arch=_req(d, "native_arch", str, "seccomp"),
        architectures=tuple(_req(d, "architectures", list, "seccomp")),
        default_action=_req(d, "default_action", str, "seccomp"),
        filter=SeccompFilter(bpf_b64=bpf_b64, flags=flags),
        syscall_names=names,
        oci=_req(d, "oci", dict, "seccomp"),
    )


def _caps_from(d: dict[str, Any]) -> CapabilityPlan:
    keys = {"bounding", "effective", "permitted", "inheritable", "ambient", "relative", "drop", "add"}
    _check_keys(d, keys, "capabilities")
    vals = {k: _req(d, k, int, "capabilities") for k in keys - {"relative"}}
    for k, v in vals.items():
        if v < 0 or v >= 1 << 64:
            raise PlanError(f"plan: capabilities.{k}: {v} is not a 64-bit mask")
    return CapabilityPlan(relative=bool(_req(d, "relative", bool, "capabilities")), **vals)


def _mount_from(d: dict[str, Any], i: int) -> MountOp:
    where = f"mounts[{i}]"
    _check_keys(d, {"kind", "path", "source", "size", "mode", "options", "optional"}, where)
    kind = _req(d, "kind", str, where)
    if kind not in MOUNT_KINDS:
        raise PlanError(f"plan: {where}.kind: unknown mount operation {kind!r}")
    path = _req(d, "path", str, where)
    if not path.startswith("/"):
        raise PlanError(f"plan: {where}.path: {path!r} is not absolute")
    source = _opt(d, "source", str, where)
    for field, value in (("path", path), ("source", source)):
        # A mount path is joined to a container's root or a new rootfs;
        # `..` would climb out of it on the host. Symlinks are resolved
        # inside the root where the path is used (enforcer.inroot).
        if value is not None and ".." in value.split("/"):
            raise PlanError(f"plan: {where}.{field}: {value!r} has a '..' component; "
                            "mount paths must stay inside the root they are joined to")
    return MountOp(
        kind=kind,
        path=path,
        source=source,
        size=_opt(d, "size", int, where),
        mode=_opt(d, "mode", int, where),
        options=tuple(_req(d, "options", list, where)),
        optional=bool(_req(d, "optional", bool, where)),
    )


_CGROUP_NUMBERS = ("memory_max", "memory_swap_max", "pids_max", "cpu_quota_us", "cpu_period_us",
                   "io_weight")
_IO_RATES = ("read_bps", "write_bps", "read_iops", "write_iops")


def _count(d: dict[str, Any], key: str, where: str) -> int | None:
    """An optional non-negative 64-bit number."""
    value = _opt(d, key, int, where)
    if value is not None and not 0 <= value < 1 << 64:
        raise PlanError(f"plan: {where}.{key}: {value} is not a number of 0 or more")
    return value  # type: ignore[no-any-return]


def _io_device_from(d: Any, i: int) -> IoDevicePlan:
    where = f"cgroup.io_devices[{i}]"
    if not isinstance(d, dict):
        raise PlanError(f"plan: {where}: expected an object")
    _check_keys(d, {"device", *_IO_RATES}, where)
    device = _req(d, "device", str, where)
    if parse_device(device) is None:
        raise PlanError(f"plan: {where}.device: {device!r} is not MAJOR:MINOR")
    rates = {k: _count(d, k, where) for k in _IO_RATES}
    if all(v is None for v in rates.values()):
        raise PlanError(f"plan: {where}: no rate for device {device}")
    return IoDevicePlan(device=device, **rates)


def _cgroup_from(d: dict[str, Any]) -> CgroupPlan:
    _check_keys(d, {*_CGROUP_NUMBERS, "io_devices"}, "cgroup")
    numbers = {k: _count(d, k, "cgroup") for k in _CGROUP_NUMBERS}
    if (numbers["cpu_quota_us"] is None) != (numbers["cpu_period_us"] is None):
        raise PlanError("plan: cgroup: cpu_quota_us and cpu_period_us come together")
    if numbers["cpu_period_us"] == 0:
        raise PlanError("plan: cgroup.cpu_period_us: 0 is not a period")
    weight = numbers["io_weight"]
    if weight is not None and not IO_WEIGHT_MIN <= weight <= IO_WEIGHT_MAX:
        raise PlanError(f"plan: cgroup.io_weight: {weight} is not "
                        f"{IO_WEIGHT_MIN}..{IO_WEIGHT_MAX}")
    devices = tuple(_io_device_from(x, i)
                    for i, x in enumerate(_req(d, "io_devices", list, "cgroup")))
    if len({x.device for x in devices}) != len(devices):
        raise PlanError("plan: cgroup.io_devices: a device is listed twice")
    return CgroupPlan(io_devices=devices, **numbers)


def _u64(d: dict[str, Any], key: str, where: str) -> int:
    value = _req(d, key, int, where)
    if value < 0 or value >= 1 << 64:
        raise PlanError(f"plan: {where}.{key}: {value} is not a 64-bit mask")
    return int(value)


def _ports_from(d: dict[str, Any], key: str) -> tuple[int, ...]:
    ports = _req(d, key, list, "landlock")
    for port in ports:
        if not isinstance(port, int) or isinstance(port, bool) or not 0 <= port <= 65535:
            raise PlanError(f"plan: landlock.{key}: {port!r} is not a TCP port")
    return tuple(ports)


def _landlock_from(d: dict[str, Any]) -> LandlockPlan:
    _check_keys(d, {"min_abi", "rules", "handled_net", "bind", "connect", "scopes"}, "landlock")
    rules = []
    for i, r in enumerate(_req(d, "rules", list, "landlock")):
        where = f"landlock.rules[{i}]"
        if not isinstance(r, dict):
            raise PlanError(f"plan: {where}: expected an object")
        _check_keys(r, {"path", "access", "optional"}, where)
        path = _req(r, "path", str, where)
        if not path.startswith("/") or "\0" in path:
            raise PlanError(f"plan: {where}.path: {path!r} is not absolute")
        rules.append(LandlockRule(path=path, access=_u64(r, "access", where),
                                  optional=bool(_req(r, "optional", bool, where))))
    min_abi = _req(d, "min_abi", int, "landlock")
    if min_abi < 0:
        raise PlanError(f"plan: landlock.min_abi: {min_abi} is negative")
    return LandlockPlan(min_abi=min_abi, rules=tuple(rules),
                        handled_net=_u64(d, "handled_net", "landlock"),
                        bind=_ports_from(d, "bind"), connect=_ports_from(d, "connect"),
                        scopes=_u64(d, "scopes", "landlock"))


def plan_from_dict(d: dict[str, Any]) -> Plan:
    if not isinstance(d, dict):
        raise PlanError("plan: not a JSON object")
    fmt = d.get("format")
    if fmt != PLAN_FORMAT:
        raise PlanError(
            f"plan: format {fmt!r} is not the one this enforcer applies ({PLAN_FORMAT}); "
            "recompile the policy with this version"
        )
    _check_keys(d, {"format", "enforcer_version", "policy_name", "policy_hash", "mode", "seccomp",
                    "capabilities", "mounts", "cgroup", "rlimits", "user", "namespaces",
                    "no_new_privileges", "notes", "env", "landlock"}, "plan")
    mode = _req(d, "mode", str, "plan")
    if mode not in ("enforce", "audit"):
        raise PlanError(f"plan: mode {mode!r} is not enforce or audit")
    seccomp = _opt(d, "seccomp", dict, "plan")
    caps = _opt(d, "capabilities", dict, "plan")
    user = _opt(d, "user", dict, "plan")
    if user is not None:
        _check_keys(user, {"uid", "gid", "groups", "dynamic"}, "user")
    rlimits = []
    for i, r in enumerate(_req(d, "rlimits", list, "plan")):
        _check_keys(r, {"resource", "soft", "hard"}, f"rlimits[{i}]")
        rlimits.append(RlimitPlan(_req(r, "resource", str, f"rlimits[{i}]"),
                                  _req(r, "soft", int, f"rlimits[{i}]"),
                                  _req(r, "hard", int, f"rlimits[{i}]")))
    namespaces = tuple(_req(d, "namespaces", list, "plan"))
    for ns in namespaces:
        if ns not in NAMESPACE_NAMES:
            raise PlanError(f"plan: namespaces: unknown namespace {ns!r}")
    return Plan(
        format=fmt,
        enforcer_version=_req(d, "enforcer_version", str, "plan"),
        policy_name=_req(d, "policy_name", str, "plan"),
        policy_hash=_req(d, "policy_hash", str, "plan"),
        mode=mode,
        seccomp=_seccomp_from(seccomp) if seccomp is not None else None,
        capabilities=_caps_from(caps) if caps is not None else None,
        mounts=tuple(_mount_from(m, i) for i, m in enumerate(_req(d, "mounts", list, "plan"))),
        cgroup=_cgroup_from(_req(d, "cgroup", dict, "plan")),
        rlimits=tuple(rlimits),
        user=UserPlan(uid=_req(user, "uid", int, "user"), gid=_req(user, "gid", int, "user"),
                      groups=tuple(_req(user, "groups", list, "user")),
                      dynamic=_req(user, "dynamic", bool, "user")) if user else None,
        namespaces=namespaces,
        no_new_privileges=_req(d, "no_new_privileges", bool, "plan"),
        notes=tuple(_req(d, "notes", list, "plan")),
        env=_env_from(_req(d, "env", dict, "plan")),
        # Optional in the JSON: Plans written before Landlock have no such key.
        landlock=(_landlock_from(ll) if (ll := _opt(d, "landlock", dict, "plan")) is not None
                  else None),
    )


def _env_from(d: dict[str, Any]) -> EnvPlan:
    _check_keys(d, {"clear", "keep", "set"}, "env")
    keep = _req(d, "keep", list, "env")
    values = _req(d, "set", dict, "env")
    if not all(isinstance(k, str) and k for k in keep):
        raise PlanError("plan: env.keep: expected non-empty names")
    for name, value in values.items():
        # execve takes NAME=VALUE strings: a name with `=` or a NUL anywhere
        # would be a different variable than the one the policy named.
        if not (isinstance(value, str) and name and "=" not in name
                and "\0" not in name + value):
            raise PlanError(f"plan: env.set: {name!r} is not a NAME -> string entry")
    return EnvPlan(clear=_req(d, "clear", bool, "env"), keep=tuple(keep), set=values)


# The body text of the Plan parsed last, when it was in canonical form:
# the supervisor hands exactly that text to its child instead of
# re-serialising the Plan (~1 ms a start). Keyed by identity; Plans are
# immutable, so the text stays true to the object.
_last_body: tuple[Plan, str] | None = None

_SHA_SUFFIX_LEN = len(',"sha256":"') + 64 + len('"}')


def _canonical_body(text: str) -> tuple[str, str] | None:
    """(body text, digest) if `text` has exactly the layout Plan.to_json()
    writes, else None."""
    if not (text.startswith('{"plan":') and text.endswith('"}')):
        return None
    tail = text[-_SHA_SUFFIX_LEN:]
    digest = tail[11:-2]
    if not tail.startswith(',"sha256":"') or len(digest) != 64:
        return None
    return text[8:-_SHA_SUFFIX_LEN], digest


def plan_from_json(text: str | bytes, source: str = "plan") -> Plan:
    """Parse and verify a Plan written by Plan.to_json(). Raises PlanError."""
    global _last_body
    try:
        if isinstance(text, bytes):
            text = text.decode("utf-8")
    except UnicodeDecodeError as e:
        raise PlanError(f"{source}: not valid JSON ({e}); refusing to apply") from None
    canonical = _canonical_body(text)
    body: Any = None
    if canonical is not None and sha256_hex(canonical[0].encode()) == canonical[1]:
        # Fast path: hash the body's own text instead of re-serialising it.
        # Same guarantee: the body applied is the one JSON value whose text
        # has this digest (if that text is not a single value, loads fails
        # and the full check below decides).
        try:
            body = fastjson.loads(canonical[0])
        except ValueError:
            canonical = None
    else:
        canonical = None
    if canonical is None:
        try:
            outer = fastjson.loads(text)
        except ValueError as e:
            raise PlanError(f"{source}: not valid JSON ({e}); refusing to apply") from None
        if not isinstance(outer, dict) or set(outer) != {"plan", "sha256"}:
            raise PlanError(f"{source}: not an enforcer Plan (expected keys plan, sha256)")
        body = outer["plan"]
        if sha256_hex(canonical_json(body).encode()) != outer["sha256"]:
            raise PlanError(f"{source}: content does not match its sha256; the Plan is corrupt")
    try:
        plan = plan_from_dict(body)
    except PlanError as e:
        raise PlanError(f"{source}: {e}") from None
    if canonical is not None:
        _last_body = (plan, canonical[0])
    return plan


def plan_body_json(plan: Plan) -> str:
    """The canonical JSON of the Plan's body (what its digest covers)."""
    if _last_body is not None and _last_body[0] is plan:
        return _last_body[1]
    return canonical_json(plan.to_dict())


def plan_from_body_json(text: str | bytes, source: str = "plan") -> Plan:
    """A Plan from its body's JSON, with the same strict checks but no
    digest: for a Plan handed over a private pipe by the process that
    verified it (the supervisor to its child)."""
    try:
        body = fastjson.loads(text)
    except ValueError as e:
        raise PlanError(f"{source}: not valid JSON ({e}); refusing to apply") from None
    try:
        return plan_from_dict(body)
    except PlanError as e:
        raise PlanError(f"{source}: {e}") from None


def load_plan_file(path: str) -> Plan:
    """A Plan file, opened under the same trust rules as a policy file
    (enforcer/filetrust.py): a privileged enforcer refuses one that anyone
    else could have written."""
    from enforcer.filetrust import UntrustedFile, read_trusted

    try:
        data = read_trusted(path, "Plan")
    except UntrustedFile as e:
        raise PlanError(str(e)) from None
    except OSError as e:
        raise PlanError(f"{path}: cannot read Plan: {e.strerror}") from None
    return plan_from_json(data, source=path)
