"""Docker/OCI seccomp JSON -> an enforcer YAML policy (docs/policy-format.md).

The JSON is resolved the way Docker resolves it when it starts a container
(moby's profiles/seccomp, then runc):

* `archMap`: only the entry for the native architecture counts; it and its
  `subArchitectures` become the policy's `architectures`. A plain
  `architectures` list is taken as it is. Neither: native only.
* `includes`/`excludes` of each syscall entry are resolved against a
  capability set (`--caps`, Docker's default set unless given), the native
  architecture (as Go names it: amd64, arm64, ...) and a kernel version
  (the running kernel unless given). Includes need *all* their caps;
  excludes drop the entry if *any* of theirs is present.
* Names that are no syscall on any of the policy's architectures (neither
  enforcer's syscall table nor libseccomp has them there) are left out,
  as runc leaves them out; each is reported. Names only enforcer's table
  knows (newer than libseccomp) are kept, with a note: the compiler adds
  them by number, so the profile's intent (e.g. allow mseal) holds where
  runc with an older libseccomp would silently drop the rule.
* errno given by name (containers/common's `errno`, `defaultErrno`) is
  read like the number (`errnoRet`, `defaultErrnoRet`); given both, they
  must agree.
* A rule whose action is the default action is left out (runc skips it:
  libseccomp refuses such a rule).
* A rule with two conditions on the same argument becomes one rule per
  condition, since runc ORs them.

Every field of moby's profile type (profiles/seccomp, which embeds the
runtime spec's LinuxSeccomp) and of containers/common's (pkg/seccomp/
types.go) is read. A field that decides nothing for enforcer
(`listenerPath`, `listenerMetadata` without SCMP_ACT_NOTIFY rules) is
accepted with a note; `comment` is documentation. Anything this importer
does not understand — an action, an architecture, an operator, a field —
is an error that names its JSON path; nothing is written then. Loosening
is never silent: a flag we cannot carry over that would make the filter
*weaker* (SPEC_ALLOW) is left out and reported.
"""

from __future__ import annotations

import errno as errno_mod
import json
import os
import re
from dataclasses import dataclass, field
from typing import Any, Iterable

from enforcer.emit.common import DOCKER_DEFAULT_CAPS
from enforcer.kernel.arch import SCMP_ARCH, native_arch
from enforcer.errors import EnforcerError
from enforcer.kernel import capabilities as cap_table

U64_MAX = (1 << 64) - 1


class SeccompImportError(EnforcerError):
    """The JSON cannot be turned into an equivalent policy."""


# OCI / Docker action name -> policy action text; None = cannot be expressed.
_ACTIONS: dict[str, str | None] = {
    "SCMP_ACT_ALLOW": "allow",
    "SCMP_ACT_LOG": "log",
    "SCMP_ACT_ERRNO": "errno",
    "SCMP_ACT_TRAP": "trap",
    "SCMP_ACT_KILL": "kill-thread",  # libseccomp's SCMP_ACT_KILL is KILL_THREAD
    "SCMP_ACT_KILL_THREAD": "kill-thread",
    "SCMP_ACT_KILL_PROCESS": "kill-process",
    "SCMP_ACT_TRACE": None,
    "SCMP_ACT_NOTIFY": None,
}

_OPS: dict[str, str] = {
    "SCMP_CMP_NE": "ne",
    "SCMP_CMP_LT": "lt",
    "SCMP_CMP_LE": "le",
    "SCMP_CMP_EQ": "eq",
    "SCMP_CMP_GE": "ge",
    "SCMP_CMP_GT": "gt",
    "SCMP_CMP_MASKED_EQ": "masked_eq",
}

_SCMP_TO_ARCH = {v: k for k, v in SCMP_ARCH.items()}

# libseccomp arch name -> the name Docker matches `includes.arches` against
# (Go's runtime.GOARCH, plus Docker's own x86/x32).
_GO_ARCH: dict[str, str] = {
    "x86_64": "amd64", "x86": "386", "x32": "x32", "aarch64": "arm64", "arm": "arm",
    "ppc64le": "ppc64le", "ppc64": "ppc64", "s390x": "s390x", "s390": "s390",
    "riscv64": "riscv64", "mips": "mips", "mipsel": "mipsle", "mips64": "mips64",
    "mipsel64": "mips64le", "mips64n32": "mips64n32", "mipsel64n32": "mips64len32",
    "loongarch64": "loong64", "ppc": "ppc",
}
# Every arch word a profile may use in includes/excludes.
_KNOWN_GO_ARCHES = frozenset(_GO_ARCH.values()) | {"x86", "arm64", "loongarch64", "386"}

_FLAGS_KEPT = {"SECCOMP_FILTER_FLAG_LOG"}
# Flags that only loosen or only concern loading; leaving them out is safe.
_FLAGS_DROPPED = {
    "SECCOMP_FILTER_FLAG_SPEC_ALLOW": "speculative-store-bypass mitigation stays on",
    "SECCOMP_FILTER_FLAG_TSYNC": "enforcer loads the filter before any thread exists",
    "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV": "only matters for user notification",
}

# moby: runtime-spec LinuxSeccomp + archMap; containers/common: + defaultErrno.
_TOP_KEYS = {"defaultAction", "defaultErrnoRet", "defaultErrno", "architectures", "archMap",
             "syscalls", "flags", "listenerPath", "listenerMetadata", "comment"}
# moby: runtime-spec LinuxSyscall + name, comment, includes, excludes;
# containers/common: + errno.
_SYSCALL_KEYS = {"name", "names", "action", "errnoRet", "errno", "args", "comment", "comments",
                 "includes", "excludes"}
# Fields that decide nothing in an enforcer policy: accepted with a note.
_NO_DECISION = {
    "listenerPath": "only SCMP_ACT_NOTIFY rules (refused) would use the listener",
    "listenerMetadata": "only SCMP_ACT_NOTIFY rules (refused) would use the listener",
}
_FILTER_KEYS = {"caps", "arches", "minKernel"}
_ARG_KEYS = {"index", "value", "valueTwo", "op"}


@dataclass(frozen=True)
class Resolution:
    """What includes/excludes are resolved against."""

    caps: frozenset[str]  # CAP_* names
    arch: str  # libseccomp name of the native architecture
    kernel: tuple[int, int]

    @property
    def go_arch(self) -> str:
        return _GO_ARCH.get(self.arch, self.arch)


@dataclass(frozen=True)
class ImportedRule:
    syscalls: tuple[str, ...]
    action: str  # policy text: allow, log, errno EPERM, kill-process, ...
    args: tuple[tuple[int, str, int, int | None], ...] = ()  # (index, op, value, mask)
    where: str = ""  # JSON path, for messages


@dataclass
class ImportResult:
    default: str
    architectures: tuple[str, ...]
    log_denials: bool
    allow: list[str] = field(default_factory=list)
    rules: list[ImportedRule] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # what was left out, and why


# -- small readers that name the JSON path ---------------------------------


def _fail(source: str, where: str, message: str) -> SeccompImportError:
    return SeccompImportError(f"{source}: {where}: {message}; nothing written")


def _expect(value: Any, typ: type | tuple[type, ...], source: str, where: str, what: str) -> Any:
    if isinstance(value, bool) and typ in (int, (int,)):
        raise _fail(source, where, f"expected {what}, got a boolean")
    if not isinstance(value, typ):
        raise _fail(source, where, f"expected {what}, got {type(value).__name__}")
    return value


def _check_keys(d: dict[str, Any], allowed: set[str], source: str, where: str) -> None:
    unknown = sorted(set(d) - allowed)
    if unknown:
        raise _fail(source, f"{where}.{unknown[0]}" if where else unknown[0],
                    f"unknown field; allowed: {', '.join(sorted(allowed))}")


def _errno_text(n: int) -> str:
    name = errno_mod.errorcode.get(n)
    return f"errno {name}" if name else f"errno {n}"


def _errno_number(d: dict[str, Any], errno_key: str, name_key: str, source: str,
                  where: str) -> int | None:
    """The errno of an entry from its number and/or its name; None if neither."""
    def path(key: str) -> str:
        return f"{where}.{key}" if where else key

    number = d.get(errno_key)
    if number is not None:
        number = _expect(number, int, source, path(errno_key), "an errno number")
        if not 0 <= number <= 4095:
            raise _fail(source, path(errno_key), f"errno {number} is outside 0..4095")
    name = d.get(name_key)
    if name is None or name == "":
        return number
    name = _expect(name, str, source, path(name_key), "an errno name such as EPERM")
    by_name = getattr(errno_mod, name, None) if re.fullmatch(r"E[A-Z0-9]+", name) else None
    if not isinstance(by_name, int):
        raise _fail(source, path(name_key), f"unknown errno name {name!r}; write one such as "
                    "EPERM, EACCES or ENOSYS")
    if number is not None and number != by_name:
        raise _fail(source, path(name_key), f"{name} is {by_name}, but {errno_key} says {number}")
    return by_name


def _action(d: dict[str, Any], key: str, errno_key: str, name_key: str, source: str,
            where: str) -> str:
    name = d.get(key)
    path = f"{where}.{key}" if where else key
    if not isinstance(name, str):
        raise _fail(source, path, "missing or not a string; expected one of "
                    + ", ".join(sorted(_ACTIONS)))
    if name not in _ACTIONS:
        raise _fail(source, path, f"unknown action {name!r}; allowed: "
                    + ", ".join(k for k, v in _ACTIONS.items() if v))
    text = _ACTIONS[name]
    if text is None:
        raise _fail(source, path, f"{name} cannot be expressed in an enforcer policy "
                    "(it needs a tracer or a notification listener)")
    ret = _errno_number(d, errno_key, name_key, source, where)
    if text != "errno":
        if ret is not None:
            bad = errno_key if d.get(errno_key) is not None else name_key
            raise _fail(source, f"{where}.{bad}" if where else bad,
                        f"{bad} is only meaningful with SCMP_ACT_ERRNO")
        return text
    if ret is None:
        return _errno_text(errno_mod.EPERM)  # what runc uses when errnoRet is absent
    return _errno_text(ret)


def _kernel(text: str, source: str, where: str) -> tuple[int, int]:
    m = re.match(r"^(\d+)\.(\d+)", text)
    if not m:
        raise _fail(source, where, f"kernel version {text!r} is not MAJOR.MINOR")
    return int(m.group(1)), int(m.group(2))


def running_kernel() -> tuple[int, int]:
    release = os.uname().release
    m = re.match(r"^(\d+)\.(\d+)", release)
    return (int(m.group(1)), int(m.group(2))) if m else (0, 0)


# -- architectures -----------------------------------------------------------


def _architectures(d: dict[str, Any], res: Resolution, source: str) -> tuple[str, ...]:
    arches = d.get("architectures")
    arch_map = d.get("archMap")
    if arches and arch_map:
        raise _fail(source, "archMap", "give either architectures or archMap, not both")
    if arches:
        _expect(arches, list, source, "architectures", "a list of SCMP_ARCH_* names")
        out = []
        for i, a in enumerate(arches):
            # SCMP_ARCH_NATIVE (libseccomp, the Security Profiles Operator)
            # is the architecture the profile is resolved for.
            out.append(res.arch if a == "SCMP_ARCH_NATIVE"
                       else _arch_name(a, source, f"architectures[{i}]"))
        return tuple(dict.fromkeys(out))
    if arch_map:
        _expect(arch_map, list, source, "archMap", "a list of architecture entries")
        chosen: tuple[str, ...] = ()
        for i, entry in enumerate(arch_map):
            where = f"archMap[{i}]"
            _expect(entry, dict, source, where, "an object")
            _check_keys(entry, {"architecture", "subArchitectures"}, source, where)
            main = _arch_name(entry.get("architecture"), source, f"{where}.architecture")
            subs = entry.get("subArchitectures") or []
            _expect(subs, list, source, f"{where}.subArchitectures", "a list")
            sub_names = [_arch_name(s, source, f"{where}.subArchitectures[{j}]")
                         for j, s in enumerate(subs)]
            if main == res.arch and not chosen:
                chosen = tuple(dict.fromkeys([main, *sub_names]))
        return chosen or (res.arch,)
    return (res.arch,)


def _arch_name(value: Any, source: str, where: str) -> str:
    if not isinstance(value, str) or value not in _SCMP_TO_ARCH:
        raise _fail(source, where, f"unknown architecture {value!r}; allowed: "
                    + ", ".join(sorted(_SCMP_TO_ARCH)))
    return _SCMP_TO_ARCH[value]


# -- includes / excludes ------------------------------------------------------


def _filter_spec(entry: dict[str, Any], key: str, source: str, where: str) -> dict[str, Any]:
    spec = entry.get(key) or {}
    path = f"{where}.{key}"
    _expect(spec, dict, source, path, "an object")
    _check_keys(spec, _FILTER_KEYS, source, path)
    for i, cap in enumerate(_expect(spec.get("caps") or [], list, source, f"{path}.caps", "a list")):
        if not isinstance(cap, str) or cap_table.normalise(cap) not in cap_table.CAPABILITIES:
            raise _fail(source, f"{path}.caps[{i}]", f"unknown capability {cap!r}")
    for i, arch in enumerate(_expect(spec.get("arches") or [], list, source, f"{path}.arches",
                                     "a list")):
        if arch not in _KNOWN_GO_ARCHES:
            raise _fail(source, f"{path}.arches[{i}]", f"unknown architecture {arch!r}; "
                        "allowed: " + ", ".join(sorted(_KNOWN_GO_ARCHES)))
    if spec.get("minKernel") is not None:
        _kernel(_expect(spec["minKernel"], str, source, f"{path}.minKernel", "a string"),
                source, f"{path}.minKernel")
    return spec


def _applies(entry: dict[str, Any], res: Resolution, source: str, where: str) -> bool:
    inc = _filter_spec(entry, "includes", source, where)
    exc = _filter_spec(entry, "excludes", source, where)
    have = {cap_table.normalise(c) for c in res.caps}
    if inc.get("arches") and res.go_arch not in inc["arches"]:
        return False
    if inc.get("caps") and not all(cap_table.normalise(c) in have for c in inc["caps"]):
        return False
    if inc.get("minKernel") and res.kernel < _kernel(inc["minKernel"], source, where):
        return False
    if exc.get("arches") and res.go_arch in exc["arches"]:
        return False
    if exc.get("caps") and any(cap_table.normalise(c) in have for c in exc["caps"]):
        return False
    if exc.get("minKernel") and res.kernel >= _kernel(exc["minKernel"], source, where):
        return False
    return True


# -- syscall entries ------------------------------------------------------------


def _args(entry: dict[str, Any], source: str, where: str) -> list[tuple[int, str, int, int | None]]:
    out = []
    raw = entry.get("args") or []
    _expect(raw, list, source, f"{where}.args", "a list")
    for i, a in enumerate(raw):
        path = f"{where}.args[{i}]"
        _expect(a, dict, source, path, "an object")
        _check_keys(a, _ARG_KEYS, source, path)
        index = _expect(a.get("index"), int, source, f"{path}.index", "an argument index")
        if not 0 <= index <= 5:
            raise _fail(source, f"{path}.index", f"argument index {index} is outside 0..5")
        op_name = a.get("op")
        if op_name not in _OPS:
            raise _fail(source, f"{path}.op", f"unknown operator {op_name!r}; allowed: "
                        + ", ".join(_OPS))
        value = _expect(a.get("value", 0), int, source, f"{path}.value", "an unsigned integer")
        two = _expect(a.get("valueTwo", 0) or 0, int, source, f"{path}.valueTwo",
                      "an unsigned integer")
        for v, key in ((value, "value"), (two, "valueTwo")):
            if not 0 <= v <= U64_MAX:
                raise _fail(source, f"{path}.{key}", f"{v} does not fit in 64 bits")
        op = _OPS[op_name]
        if op == "masked_eq":
            out.append((index, op, two, value))  # OCI: value is the mask
        else:
            if two:
                raise _fail(source, f"{path}.valueTwo", f"valueTwo is only used by "
                            f"SCMP_CMP_MASKED_EQ, not {op_name}")
            out.append((index, op, value, None))
    return out


def _names(entry: dict[str, Any], source: str, where: str) -> list[str]:
    if entry.get("name") and entry.get("names"):
        raise _fail(source, where, "give either name or names, not both")
    if entry.get("name"):
        return [_expect(entry["name"], str, source, f"{where}.name", "a syscall name")]
    names = _expect(entry.get("names"), list, source, f"{where}.names", "a list of syscall names")
    for i, n in enumerate(names):
        _expect(n, str, source, f"{where}.names[{i}]", "a syscall name")
    return list(names)


def convert(data: Any, res: Resolution, source: str = "profile") -> ImportResult:
    """Resolve a parsed seccomp JSON into rules. Raises SeccompImportError."""
    from enforcer.policy import syscalls as sc  # libseccomp, loaded on first use

    _expect(data, dict, source, "(top level)", "a JSON object")
    _check_keys(data, _TOP_KEYS, source, "")
    default = _action(data, "defaultAction", "defaultErrnoRet", "defaultErrno", source, "")
    arches = _architectures(data, res, source)
    notes: list[str] = []
    for key, why in _NO_DECISION.items():
        if data.get(key):
            _expect(data[key], str, source, key, "a string")
            notes.append(f"{key}: accepted, decides nothing here ({why})")
    flags = _expect(data.get("flags") or [], list, source, "flags", "a list")
    for i, flag in enumerate(flags):
        if flag in _FLAGS_DROPPED:
            notes.append(f"flags[{i}]: {flag} left out ({_FLAGS_DROPPED[flag]})")
        elif flag not in _FLAGS_KEPT:
            raise _fail(source, f"flags[{i}]", f"unknown flag {flag!r}; allowed: "
                        + ", ".join(sorted(_FLAGS_KEPT | set(_FLAGS_DROPPED))))
    result = ImportResult(default=default, architectures=arches,
                          log_denials="SECCOMP_FILTER_FLAG_LOG" in flags, notes=notes)

    # syscall -> (action, JSON path) of its unconditional rule
    unconditional: dict[str, tuple[str, str]] = {}
    conditional: list[ImportedRule] = []
    entries = _expect(data.get("syscalls") or [], list, source, "syscalls", "a list")
    unknown_names: dict[str, str] = {}
    newer_names: dict[str, tuple[str, list[str]]] = {}  # name -> (JSON path, arches)
    for i, entry in enumerate(entries):
        where = f"syscalls[{i}]"
        _expect(entry, dict, source, where, "an object")
        _check_keys(entry, _SYSCALL_KEYS, source, where)
        # Validate the whole entry even when it does not apply here: a typo in
        # an arm64-only entry is still a broken profile.
        action = _action(entry, "action", "errnoRet", "errno", source, where)
        names = _names(entry, source, where)
        args = _args(entry, source, where)
        if not _applies(entry, res, source, where):
            continue
        if action == default:
            continue  # runc skips rules that repeat the default action
        kept = []
        for name in names:
            if any(sc.exists_on(name, a) for a in arches):
                kept.append(name)
                by_number = [a for a in arches if sc.newer_note(name, a)]
                if by_number and name not in newer_names:
                    newer_names[name] = (where, by_number)
            else:
                unknown_names.setdefault(name, f"{where}")
        if not kept:
            continue
        if not args:
            for name in kept:
                prev = unconditional.get(name)
                if prev and prev[0] != action:
                    # libseccomp keeps the first unconditional rule of a
                    # syscall and ignores later ones (measured with 2.5.4,
                    # with and without the binary tree); runc adds the
                    # entries in order. containers/common's profile relies
                    # on it (setns: allowed, later EPERM without SYS_ADMIN).
                    result.notes.append(f"{where}: {name} {action} left out: {prev[1]} already "
                                        f"makes it {prev[0]}, and the first rule wins (as in "
                                        "libseccomp and runc)")
                unconditional.setdefault(name, (action, where))
            continue
        indexes = [a[0] for a in args]
        if len(set(indexes)) != len(indexes):
            # runc adds one rule per condition (OR); say the same thing.
            for a in args:
                conditional.append(ImportedRule(tuple(kept), action, (a,), where))
        else:
            conditional.append(ImportedRule(tuple(kept), action, tuple(args), where))

    for name, (where, on) in newer_names.items():
        result.notes.append(f"{where}: {name} on {', '.join(on)}: {sc.newer_note(name, on[0])}")
    for name, where in unknown_names.items():
        result.notes.append(f"{where}: {name} left out: not a syscall on this architecture "
                            f"({', '.join(arches)}; runc leaves it out too)")
    _merge_rules(result, unconditional, conditional, source)
    return result


def _merge_rules(result: ImportResult, unconditional: dict[str, tuple[str, str]],
                 conditional: list[ImportedRule], source: str) -> None:
    # Unconditional rules, grouped by action in first-seen order.
    by_action: dict[str, list[str]] = {}
    for name, (action, _) in unconditional.items():
        by_action.setdefault(action, []).append(name)
    result.allow = by_action.pop("allow", [])
    for action, names in by_action.items():
        result.rules.append(ImportedRule(tuple(names), action))
    for rule in conditional:
        names = []
        for name in rule.syscalls:
            prev = unconditional.get(name)
            if prev is None:
                names.append(name)
            else:
                # An unconditional rule decides the syscall whatever the
                # arguments, before or after a conditional one (libseccomp).
                result.notes.append(f"{rule.where}: conditional {name} rule ({rule.action}) "
                                    f"left out: {name} is always {prev[0]} ({prev[1]})")
        if names:
            result.rules.append(ImportedRule(tuple(names), rule.action, rule.args, rule.where))


# -- YAML output ---------------------------------------------------------------


def _flow(items: Iterable[str], indent: int, width: int = 88) -> str:
    """A YAML flow list wrapped at `width` columns."""
    lines: list[str] = []
    cur = "["
    pad = " " * indent
    for item in items:
        piece = item + ", "
        if len(pad) + len(cur) + len(piece) > width and cur != "[":
            lines.append(cur.rstrip())
            cur = " "
        cur += piece
    cur = cur.rstrip(", ") + "]"
    lines.append(cur)
    return ("\n" + pad).join(lines)


def _arg_yaml(a: tuple[int, str, int, int | None]) -> str:
    index, op, value, mask = a
    if op == "masked_eq":
        return f"{{index: {index}, op: masked_eq, mask: {mask:#x}, value: {value:#x}}}"
    text = f"{value:#x}" if value > 4096 else str(value)
    return f"{{index: {index}, op: {op}, value: {text}}}"


def policy_name(path: str) -> str:
    stem = os.path.basename(path)
    stem = re.sub(r"\.(json|yaml|yml)$", "", stem, flags=re.I)
    name = re.sub(r"[^a-z0-9._-]+", "-", stem.lower()).strip("-._")
    if not name or not name[0].isalnum():
        name = "imported" + (("-" + name) if name else "")
    return name[:63].rstrip("-._")


def to_yaml(result: ImportResult, res: Resolution, name: str, source: str) -> str:
    from enforcer.policy.yamlsafe import yaml_scalar

    caps = ",".join(sorted(cap_table.normalise(c)[4:] for c in res.caps)) or "none"
    out = [
        f"# Imported from {os.path.basename(source)} by `enforcer import`.",
        "# includes/excludes were resolved for:",
        f"#   capabilities: {caps}",
        f"#   architecture: {res.arch} ({res.go_arch}); kernel {res.kernel[0]}.{res.kernel[1]}",
        "# The profile is only a seccomp filter: capabilities, mounts and limits",
        "# are not part of it and are left to you.",
    ]
    for note in result.notes:
        out.append(f"# note: {note}")
    out += [
        "version: 1",
        f"name: {yaml_scalar(name)}",
        f"description: {json.dumps('seccomp profile imported from ' + os.path.basename(source))}",
        "mode: enforce",
        "",
        "syscalls:",
        f"  default: {result.default}",
        f"  log_denials: {'true' if result.log_denials else 'false'}",
        f"  architectures: {_flow(result.architectures, 17)}",
    ]
    if result.allow:
        out.append(f"  allow: {_flow(result.allow, 10)}")
    if result.rules:
        out.append("  rules:")
        for rule in result.rules:
            out.append(f"    - syscalls: {_flow(rule.syscalls, 17)}")
            out.append(f"      action: {rule.action}")
            if rule.args:
                out.append("      args:")
                for a in rule.args:
                    out.append(f"        - {_arg_yaml(a)}")
    return "\n".join(out) + "\n"


def import_profile(path: str, caps: Iterable[str] | None = None, arch: str | None = None,
                   kernel: tuple[int, int] | None = None, name: str | None = None,
                   ) -> tuple[str, list[str]]:
    """Read a seccomp JSON file; return (YAML policy text, notes)."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise SeccompImportError(f"{path}: cannot read: {e.strerror}") from None
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as e:
        raise SeccompImportError(f"{path}: not valid JSON: {e}; nothing written") from None
    cap_names = DOCKER_DEFAULT_CAPS if caps is None else tuple(caps)
    for c in cap_names:
        if cap_table.normalise(c) not in cap_table.CAPABILITIES:
            raise SeccompImportError(f"--caps: unknown capability {c!r}")
    if arch is not None and arch not in SCMP_ARCH:
        raise SeccompImportError(f"--arch: unknown architecture {arch!r}; allowed: "
                                 + ", ".join(SCMP_ARCH))
    res = Resolution(caps=frozenset(cap_table.normalise(c) for c in cap_names),
                     arch=arch or native_arch(), kernel=kernel or running_kernel())
    result = convert(data, res, source=path)
    return to_yaml(result, res, name or policy_name(path), path), result.notes
