"""`runc update` on a container the shim started: no update raises a policy limit.

Whoever may ask the engine for an update (Docker's API, a pod resize in
Kubernetes) writes the resources; the shim decides before runc applies
them. They come as runc's flags (`--memory 1g`) or as OCI LinuxResources
JSON: `-r FILE`, or `-r -` on stdin, which is how containerd's runc shim
(so Docker and Kubernetes) always sends them.

The rule, per limit the policy sets (0 or absent in an update means "leave
as is", as runc reads it):

* memory, pids, blkio weight, per-device throttles: not above the
  policy's value, not unlimited (-1, or a throttle rate of 0);
* CPU: the quota/period ratio not above the policy's; no quota with a
  period (cgroup v2 then writes "max PERIOD": unlimited), no burst;
* swap (OCI's memory.swap is memory+swap): at most the policy's swap on
  top of the new memory limit. Docker re-sends its own idea of the total
  (twice the memory) with every update, so rather than refusing every
  `docker update`, the total handed to runc is lowered to what the policy
  allows -- the same rule as at create -- and set explicitly when only
  the memory changes (on cgroup v1 the old total would otherwise stay and
  the difference become swap);
* `unified` (raw cgroup v2 files): only keys the shim can check are taken
  -- memory.max, memory.swap.max, pids.max, cpu.max, cpu.max.burst,
  io.max, io.weight, io.bfq.weight against the policy, and a few that
  cannot raise any limit the policy sets (memory.high/low/min,
  memory.oom.group: memory.max still caps; cpu.weight, cpu.weight.nice,
  cpu.idle; cpuset.cpus/mems). Any other key is refused: fail closed.

The JSON is read strictly, because runc (Go) reads it too: keys must be
spelled exactly as the OCI spec does (Go matches `Memory` to `memory`;
Python does not), no key may repeat (Python keeps the last, Go merges),
numbers must be integers in range, nothing may follow the object. runc
then gets exactly what was checked: the same bytes, or the re-encoded
object when swap was lowered, on its stdin.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

from enforcer.kernel.cgroup import bfq_weight, blkio_weight
from enforcer.shim.errors import ShimError

MAX_RESOURCES = 1 << 20  # bytes of JSON; a LinuxResources object is a few hundred
I64 = (1 << 63) - 1
U64 = (1 << 64) - 1

# The OCI LinuxResources object, as runc's Go structs spell it: field -> type
# ("i" int64, "u" uint64, "s" string, "b" bool, {...} object, [...] list of).
_THROTTLE: dict[str, Any] = {"major": "i", "minor": "i", "rate": "u"}
SCHEMA: dict[str, Any] = {
    "devices": [{"allow": "b", "type": "s", "major": "i", "minor": "i", "access": "s"}],
    "memory": {"limit": "i", "reservation": "i", "swap": "i", "kernel": "i", "kernelTCP": "i",
               "swappiness": "u", "disableOOMKiller": "b", "useHierarchy": "b",
               "checkBeforeUpdate": "b"},
    "cpu": {"shares": "u", "quota": "i", "burst": "u", "period": "u", "realtimeRuntime": "i",
            "realtimePeriod": "u", "cpus": "s", "mems": "s", "idle": "i"},
    "pids": {"limit": "i"},
    "blockIO": {"weight": "u", "leafWeight": "u",
                "weightDevice": [{"major": "i", "minor": "i", "weight": "u", "leafWeight": "u"}],
                "throttleReadBpsDevice": [_THROTTLE], "throttleWriteBpsDevice": [_THROTTLE],
                "throttleReadIOPSDevice": [_THROTTLE], "throttleWriteIOPSDevice": [_THROTTLE]},
    "hugepageLimits": [{"pageSize": "s", "limit": "u"}],
    "network": {"classID": "u", "priorities": [{"name": "s", "priority": "u"}]},
    "rdma": "rdma",
    "unified": "unified",
}

# v2 io.max keys -> the OCI throttle list the policy's limit is kept under.
_IO_MAX_KEYS = {"rbps": "throttleReadBpsDevice", "wbps": "throttleWriteBpsDevice",
                "riops": "throttleReadIOPSDevice", "wiops": "throttleWriteIOPSDevice"}
# Unified keys that cannot raise a limit the policy sets (see the module doc).
_UNIFIED_HARMLESS = frozenset({"memory.high", "memory.low", "memory.min", "memory.oom.group",
                               "cpu.weight", "cpu.weight.nice", "cpu.idle", "cpuset.cpus",
                               "cpuset.mems"})


# -- reading the JSON strictly --------------------------------------------------


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [k for k, _ in pairs]
    for k in keys:
        if keys.count(k) > 1:
            raise ValueError(f"key {k!r} appears twice (runc would read both)")
    return dict(pairs)


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def parse_resources(data: bytes, source: str) -> dict[str, Any]:
    """The resources object, read as strictly as described above."""
    import json

    if len(data) > MAX_RESOURCES:
        raise ShimError(f"update --resources {source}: too large (over {MAX_RESOURCES} bytes)")
    try:
        text = data.decode("utf-8")
        doc = json.JSONDecoder(object_pairs_hook=_no_duplicates,
                               parse_constant=_no_constant).decode(text)
    except (UnicodeDecodeError, ValueError) as e:
        raise ShimError(f"update --resources {source}: not valid JSON ({e})") from None
    if not isinstance(doc, dict):
        raise ShimError(f"update --resources {source}: expected a JSON object")
    _check_shape(doc, SCHEMA, f"update --resources {source}")
    return doc


def _check_shape(value: Any, schema: Any, where: str) -> None:
    if isinstance(schema, dict):
        if not isinstance(value, dict):
            raise ShimError(f"{where}: expected an object")
        for key, item in value.items():
            if key not in schema:
                raise ShimError(f"{where}: unknown key {key!r} (keys are spelled as in the OCI "
                                f"spec: {', '.join(sorted(schema))})")
            if item is not None:
                _check_shape(item, schema[key], f"{where}.{key}")
    elif isinstance(schema, list):
        if not isinstance(value, list):
            raise ShimError(f"{where}: expected a list")
        for i, item in enumerate(value):
            _check_shape(item, schema[0], f"{where}[{i}]")
    elif schema in ("i", "u"):
        low, high = (-I64 - 1, I64) if schema == "i" else (0, U64)
        if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
            raise ShimError(f"{where}: {value!r} is not a{'n' if schema == 'i' else ''} "
                            f"{'int64' if schema == 'i' else 'uint64'}")
    elif schema == "s" and not isinstance(value, str) or schema == "b" and \
            not isinstance(value, bool):
        raise ShimError(f"{where}: {value!r} is not a {'string' if schema == 's' else 'boolean'}")
    elif schema == "unified":
        if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                                  for k, v in value.items()):
            raise ShimError(f"{where}: expected an object of strings")
    elif schema == "rdma":
        if not isinstance(value, dict) or not all(
                isinstance(v, dict) and set(v) <= {"hcaHandles", "hcaObjects"} and
                all(isinstance(n, int) and not isinstance(n, bool) and 0 <= n < 1 << 32
                    for n in v.values()) for v in value.values()):
            raise ShimError(f"{where}: expected {{device: {{hcaHandles, hcaObjects}}}}")


# -- runc's flags, as runc reads them into the same object -----------------------------


def _bytes(value: str, flag: str) -> int:
    """runc's --memory syntax (docker/go-units RAMInBytes): -1, or a number
    with an optional k/m/g/t/p, powers of 1024."""
    text = value.strip().lower()
    if text == "-1":
        return -1
    text = text.removesuffix("b").removesuffix("i")
    scale = 1
    if text and text[-1] in "kmgtp":
        scale = 1024 ** ("kmgtp".index(text[-1]) + 1)
        text = text[:-1]
    try:
        return int(float(text) * scale)
    except ValueError:
        raise ShimError(f"update --{flag}: cannot read {value!r} as a size") from None


def _int(value: str, flag: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise ShimError(f"update --{flag}: {value!r} is not a number") from None


def resources_from_flags(flags: dict[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for flag, (section, key) in (("memory", ("memory", "limit")),
                                 ("memory-swap", ("memory", "swap")),
                                 ("memory-reservation", ("memory", "reservation")),
                                 ("kernel-memory", ("memory", "kernel")),
                                 ("kernel-memory-tcp", ("memory", "kernelTCP"))):
        if flag in flags:
            out.setdefault(section, {})[key] = _bytes(flags[flag], flag)
    for flag, (section, key) in (("pids-limit", ("pids", "limit")),
                                 ("cpu-quota", ("cpu", "quota")),
                                 ("cpu-period", ("cpu", "period")),
                                 ("cpu-share", ("cpu", "shares")),
                                 ("blkio-weight", ("blockIO", "weight"))):
        if flag in flags:
            out.setdefault(section, {})[key] = _int(flags[flag], flag)
    return out


# -- the rule ---------------------------------------------------------------------------


def _get(res: dict[str, Any], section: str, key: str) -> int:
    value = (res.get(section) or {}).get(key)
    return value if isinstance(value, int) else 0


def _over(asked: int, limit: int | None) -> bool:
    """Would `asked` (0 = unchanged, negative = unlimited) lift `limit`?"""
    return limit is not None and asked != 0 and (asked < 0 or asked > limit)


class Check:
    """The problems found in one update, and whether the resources changed.

    `period`: the container's CPU period now, for a quota given alone (the
    kernel keeps the period then), or None when it cannot be read."""

    def __init__(self, limits: dict[str, Any], period: int | None) -> None:
        self.limits = limits
        self.period = period
        self.problems: list[str] = []
        self.changed = False

    def over(self, what: str, asked: int, limit: int | None) -> None:
        if _over(asked, limit):
            self.problems.append(f"{what} {'unlimited' if asked < 0 else asked} "
                                 f"(the policy allows {limit})")

    def memory(self, res: dict[str, Any], may_change: bool) -> None:
        lim = self.limits
        memory = _get(res, "memory", "limit")
        self.over("memory", memory, lim["memory"])
        if lim["swap"] is None or lim["memory"] is None:
            return
        total = _get(res, "memory", "swap")
        if memory <= 0:
            if total != 0:
                self.problems.append(f"memory+swap {total} without a memory limit (the policy "
                                     f"allows {lim['swap']} bytes of swap on top of memory; set "
                                     "both)")
            return
        allowed = memory + lim["swap"]
        if 0 < total <= allowed:
            return  # (below the memory limit runc refuses it itself)
        if not may_change:
            self.problems.append(f"memory+swap {'unlimited' if total < 0 else total or 'unchanged'}"
                                 f" with memory {memory} (the policy allows {allowed}: pass "
                                 f"--memory-swap {allowed})")
            return
        res["memory"]["swap"] = allowed
        self.changed = True

    def cpu(self, res: dict[str, Any]) -> None:
        lim = self.limits
        if lim["cpu_quota"] is None:
            return
        quota, period = _get(res, "cpu", "quota"), _get(res, "cpu", "period")
        if _get(res, "cpu", "burst"):
            self.problems.append("cpu burst (the policy limits the CPU quota)")
        self._quota(quota, period, "cpu quota")

    def _quota(self, quota: int, period: int, what: str) -> None:
        lim = self.limits
        if quota == 0 and period == 0:
            return
        if period == 0 and self.period:
            period = self.period  # a quota alone keeps the current period
        if quota < 0 or quota == 0:
            self.problems.append(f"{what} unlimited (the policy allows "
                                 f"{lim['cpu_quota']}/{lim['cpu_period']})")
        elif period <= 0:
            self.problems.append(f"{what} {quota} without a period (the policy allows "
                                 f"{lim['cpu_quota']}/{lim['cpu_period']}; give both)")
        elif quota * lim["cpu_period"] > lim["cpu_quota"] * period:
            self.problems.append(f"{what} {quota}/{period} (the policy allows "
                                 f"{lim['cpu_quota']}/{lim['cpu_period']})")

    def block_io(self, res: dict[str, Any]) -> None:
        lim = self.limits
        blkio = res.get("blockIO") or {}
        # OCI weights are on the v1 blkio scale: the policy's io weight in
        # that scale is the one conversion (enforcer.kernel.cgroup).
        weight = None if lim["io_weight"] is None else blkio_weight(lim["io_weight"])
        for key in ("weight", "leafWeight"):
            self.over(f"blkio {key}", _get(res, "blockIO", key), weight)
        for dev in blkio.get("weightDevice") or []:
            for key in ("weight", "leafWeight"):
                self.over(f"blkio {key} of {dev.get('major')}:{dev.get('minor')}",
                          dev.get(key) or 0, weight)
        for kind, devices in lim["throttle"].items():
            for entry in blkio.get(kind) or []:
                device = f"{entry.get('major')}:{entry.get('minor')}"
                if device in devices:
                    rate = entry.get("rate") or 0
                    if rate == 0 or rate > devices[device]:
                        self.problems.append(f"{kind} {device} "
                                             f"{rate or 'unlimited'} (the policy allows "
                                             f"{devices[device]})")

    def unified(self, res: dict[str, Any]) -> None:
        for key, value in sorted((res.get("unified") or {}).items()):
            self._unified(key, value)

    def _unified(self, key: str, value: str) -> None:
        lim = self.limits
        text = value.strip()
        if key in _UNIFIED_HARMLESS:
            return
        if key in ("memory.max", "memory.swap.max", "pids.max"):
            limit = {"memory.max": lim["memory"], "memory.swap.max": lim["swap"],
                     "pids.max": lim["pids"]}[key]
            self.over(key, -1 if text == "max" else _number(key, text), limit)
        elif key == "cpu.max":
            if lim["cpu_quota"] is not None:
                parts = text.split()
                if not 1 <= len(parts) <= 2:
                    raise ShimError(f"update: unified cpu.max {value!r} is not 'QUOTA [PERIOD]'")
                quota = -1 if parts[0] == "max" else _number(key, parts[0])
                period = _number(key, parts[1]) if len(parts) == 2 else 0
                self._quota(quota, period, "unified cpu.max")
        elif key == "cpu.max.burst":
            if lim["cpu_quota"] is not None and _number(key, text):
                self.problems.append("unified cpu.max.burst (the policy limits the CPU quota)")
        elif key == "io.max":
            self._io_max(text)
        elif key in ("io.weight", "io.bfq.weight"):
            self._io_weight(key, text)
        else:
            self.problems.append(f"unified {key} (not a key the shim can check against the "
                                 "policy's limits)")

    def _io_max(self, text: str) -> None:
        for line in text.splitlines():
            fields = line.split()
            if not fields:
                continue
            device = fields[0]
            for kv in fields[1:]:
                k, _, v = kv.partition("=")
                if k not in _IO_MAX_KEYS:
                    raise ShimError(f"update: unified io.max key {k!r} is not one of "
                                    f"{', '.join(_IO_MAX_KEYS)}")
                limit = self.limits["throttle"].get(_IO_MAX_KEYS[k], {}).get(device)
                asked = -1 if v == "max" else _number("io.max", v)
                if limit is not None and (asked <= 0 or asked > limit):
                    self.problems.append(f"unified io.max {device} {k}={v} (the policy "
                                         f"allows {limit})")

    def _io_weight(self, key: str, text: str) -> None:
        weight = self.limits["io_weight"]
        if weight is None:
            return
        # io.weight is the Plan's own scale; io.bfq.weight is BFQ's (1..1000).
        allowed = weight if key == "io.weight" else bfq_weight(weight)
        for line in text.splitlines():
            fields = line.split()
            if not fields:
                continue
            if len(fields) > 2 or (len(fields) == 2 and fields[0] != "default" and
                                   ":" not in fields[0]):
                raise ShimError(f"update: unified {key} line {line!r} is not "
                                "'[default|MAJ:MIN] WEIGHT'")
            asked = _number(key, fields[-1])
            if asked > allowed:
                self.problems.append(f"unified {key} {line.strip()} (the policy allows "
                                     f"{allowed})")


def _number(key: str, text: str) -> int:
    if not text.isdigit():
        raise ShimError(f"update: unified {key} value {text!r} is not a number or 'max'")
    return int(text)


def current_cpu_period(cgroups: dict[str, str], root: str = "/sys/fs/cgroup") -> int | None:
    """The CPU period of a container's cgroup (its registry record's
    `cgroups`: hierarchy -> path), or None when it cannot be read."""
    for hierarchy, path in cgroups.items():
        rel = path.lstrip("/")
        if hierarchy == "":
            candidates = [(f"{root}/{rel}/cpu.max", 1), (f"{root}/unified/{rel}/cpu.max", 1)]
        elif "cpu" in hierarchy.split(","):
            candidates = [(f"{root}/{hierarchy}/{rel}/cpu.cfs_period_us", 0),
                          (f"{root}/cpu/{rel}/cpu.cfs_period_us", 0)]
        else:
            continue
        for file, field in candidates:
            try:
                with open(file) as f:
                    return int(f.read().split()[field])
            except (OSError, ValueError, IndexError):
                continue
    return None


def check(res: dict[str, Any], limits: dict[str, Any], may_change: bool,
          period: int | None = None) -> Check:
    """Check `res` (changed in place where swap is lowered, if `may_change`);
    `period`: see Check."""
    found = Check(limits, period)
    found.memory(res, may_change)
    found.over("pids", _get(res, "pids", "limit"), limits["pids"])
    found.cpu(res)
    found.block_io(res)
    found.unified(res)
    return found
