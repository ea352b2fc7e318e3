"""Read ONE policy file's nodes into a `Layer`: types, units, names, keys.

A Layer is what a single file says, every value paired with the Location it
was written at. It is not yet the effective policy: `extends` merging,
syscall-group expansion against the target architectures and cross-file
conflicts are done by enforcer/policy/loader.py.

Each check appends a PolicyError and carries on, so one run reports every
problem in the file (one per line), not just the first. Messages say what
is wrong and what is allowed.
"""

from __future__ import annotations

import difflib
import os
import re
from dataclasses import dataclass, field
from typing import Any, Callable

from enforcer.errors import Location, PolicyError
from enforcer.kernel import capabilities as caps_mod
from enforcer.policy import constants, groups, names
from enforcer.policy.model import (
    NAMESPACES,
    SCOPES,
    Action,
    ActionKind,
    ArgCondition,
    ArgOp,
    BindMount,
    IoDeviceLimit,
    Rlimit,
    TmpfsMount,
)
from enforcer.policy.yamlsafe import Map, Node, Scalar, Seq


# The safe default set for `masked_paths: default`: kernel interfaces a
# workload has no business reading (host memory, keys, timers, firmware).
DEFAULT_MASKED_PATHS = (
    "/proc/acpi",
    "/proc/asound",
    "/proc/interrupts",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/proc/sysrq-trigger",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/sys/devices/virtual/powercap",
    "/sys/firmware",
)

TMPFS_OPTIONS = ("nosuid", "nodev", "noexec", "ro", "noatime", "nodiratime", "relatime", "strictatime")
ARCH_WORDS = ("native",) + (
    "x86_64", "x86", "x32", "aarch64", "arm", "mips", "mips64", "mips64n32", "mipsel",
    "mipsel64", "mipsel64n32", "ppc", "ppc64", "ppc64le", "s390", "s390x", "parisc",
    "parisc64", "riscv64",
)
BYTE_RLIMITS = ("AS", "CORE", "DATA", "FSIZE", "MEMLOCK", "MSGQUEUE", "RSS", "STACK")

Located = tuple[Any, Location]


@dataclass
class RawRule:
    syscalls: list[tuple[str, Location]]
    action: Action
    args: tuple[ArgCondition, ...]
    loc: Location


@dataclass
class Layer:
    """What one file says. Keys of `scalars` and `lists` are dotted field paths."""

    path: str  # absolute path of the file
    display: str  # how errors name it
    name: Located | None = None
    description: Located | None = None
    extends: list[tuple[str, Location]] = field(default_factory=list)
    scalars: dict[str, Located] = field(default_factory=dict)
    lists: dict[str, list[tuple[str, Location]]] = field(default_factory=dict)
    rules: list[RawRule] = field(default_factory=list)
    caps_keep: list[tuple[int, Location]] | None = None
    caps_drop: list[tuple[int, Location]] = field(default_factory=list)
    caps_add: list[tuple[int, Location]] = field(default_factory=list)
    # `capabilities.ambient`: None when the file does not say it.
    caps_ambient: list[tuple[int, Location]] | None = None
    tmpfs: dict[str, tuple[TmpfsMount, Location]] = field(default_factory=dict)
    # `filesystem.tmpfs_remove`: inherited tmpfs paths this file drops.
    tmpfs_remove: list[tuple[str, Location]] = field(default_factory=list)
    # `filesystem.bind`, by target.
    bind: dict[str, tuple[BindMount, Location]] = field(default_factory=dict)
    io_devices: dict[str, tuple[IoDeviceLimit, Location]] = field(default_factory=dict)
    rlimits: dict[str, tuple[Rlimit, Location]] = field(default_factory=dict)
    user: tuple[dict[str, Located], Location] | None = None
    # `syscalls.inherit: false`: this file's syscall rules replace those of
    # the files it extends (set by `enforcer record`; default true).
    syscalls_inherit: Located | None = None
    # `scope:` is this file's own statement, never inherited (loader._build).
    scope: Located | None = None
    # `env.set`: name -> (value, where), in the order written.
    env_set: dict[str, Located] = field(default_factory=dict)


# --------------------------------------------------------------------------- helpers


class Checker:
    """Collects errors for one file and offers small typed readers."""

    def __init__(self) -> None:
        self.errors: list[PolicyError] = []

    def error(self, loc: Location, message: str) -> None:
        self.errors.append(PolicyError(loc, message))

    # -- shapes

    def mapping(self, node: Node, what: str, allowed: tuple[str, ...]) -> Map | None:
        if not isinstance(node, Map):
            self.error(node.loc, f"{what} must be a mapping with keys {_keys(allowed)}, not a {_kind(node)}")
            return None
        for key, _ in node.items:
            if key.text not in allowed:
                self.error(key.loc, f"unknown key {key.text!r} in {what}{_did_you_mean(key.text, allowed)}; "
                                    f"allowed: {', '.join(allowed)}")
        return node

    def seq(self, node: Node, what: str) -> list[Node] | None:
        if isinstance(node, Seq):
            return node.items
        self.error(node.loc, f"{what} must be a list, not a {_kind(node)}")
        return None

    def string(self, node: Node, what: str) -> str | None:
        if isinstance(node, Scalar) and isinstance(node.value, str):
            return node.value
        self.error(node.loc, f"{what} must be a string, not {_describe(node)}")
        return None

    def word_list(self, node: Node, what: str) -> list[tuple[str, Location]]:
        """A list of strings, or a single string taken as a one-item list."""
        if isinstance(node, Scalar) and isinstance(node.value, str):
            return [(node.value, node.loc)]
        items = self.seq(node, what)
        out: list[tuple[str, Location]] = []
        for item in items or []:
            s = self.string(item, f"each entry of {what}")
            if s is not None:
                out.append((s, item.loc))
        return out

    def boolean(self, node: Node, what: str) -> bool | None:
        if isinstance(node, Scalar) and isinstance(node.value, bool):
            return node.value
        self.error(node.loc, f"{what} must be true or false, not {_describe(node)}")
        return None

    def integer(self, node: Node, what: str, lo: int, hi: int) -> int | None:
        if isinstance(node, Scalar) and isinstance(node.value, int) and not isinstance(node.value, bool):
            if lo <= node.value <= hi:
                return node.value
            self.error(node.loc, f"{what} must be between {lo} and {hi}, not {node.value}")
            return None
        self.error(node.loc, f"{what} must be a whole number from {lo} to {hi}, not {_describe(node)}")
        return None

    def size(self, node: Node, what: str, allow_max: bool = False) -> tuple[bool, int | None]:
        """(ok, bytes); bytes None means `max`/`unlimited` when allowed."""
        if isinstance(node, Scalar) and isinstance(node.value, int) and not isinstance(node.value, bool):
            if node.value < 0:
                self.error(node.loc, f"{what} must not be negative ({node.value})")
                return False, None
            return True, node.value
        if isinstance(node, Scalar) and isinstance(node.value, str):
            text = node.value.strip()
            if allow_max and text in ("max", "unlimited"):
                return True, None
            try:
                return True, parse_size(text)
            except ValueError as e:
                hint = " or `max`" if allow_max else ""
                self.error(node.loc, f"{what}: {e}{hint}")
                return False, None
        self.error(node.loc, f"{what} must be a size such as 64Mi or 1G{' or `max`' if allow_max else ''}, "
                             f"not {_describe(node)}")
        return False, None

    def duration_us(self, node: Node, what: str) -> int | None:
        if isinstance(node, Scalar) and isinstance(node.value, int) and not isinstance(node.value, bool):
            if node.value <= 0:
                self.error(node.loc, f"{what} must be positive")
                return None
            return node.value
        if isinstance(node, Scalar) and isinstance(node.value, str):
            try:
                return parse_duration_us(node.value)
            except ValueError as e:
                self.error(node.loc, f"{what}: {e}")
                return None
        self.error(node.loc, f"{what} must be a duration such as 50ms, not {_describe(node)}")
        return None

    def path(self, node: Node, what: str) -> str | None:
        text = self.string(node, what)
        if text is None:
            return None
        if not text.startswith("/"):
            self.error(node.loc, f"{what} must be an absolute path (starting with /), not {text!r}")
            return None
        if "\0" in text or any(part == ".." for part in text.split("/")):
            self.error(node.loc, f"{what} must not contain '..' or NUL: {text!r}")
            return None
        return os.path.normpath(text).replace("//", "/")


def _kind(node: Node) -> str:
    return node.kind


def _describe(node: Node) -> str:
    if isinstance(node, Scalar):
        v = node.value
        if v is None:
            return "an empty value"
        if isinstance(v, bool):
            return f"the boolean {node.text!r}"
        if isinstance(v, (int, float)):
            return f"the number {node.text}"
        return f"the string {v!r}"
    return f"a {node.kind}"


def _keys(allowed: tuple[str, ...]) -> str:
    return ", ".join(allowed)


def _did_you_mean(word: str, choices: Any) -> str:
    match = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f"; did you mean {match[0]!r}?" if match else ""


_SIZE_RE = re.compile(r"^(\d+(?:\.\d+)?)\s*([A-Za-z]*)$")
_SIZE_UNITS = {"": 1, "K": 1000, "M": 1000**2, "G": 1000**3, "T": 1000**4,
               "Ki": 1024, "Mi": 1024**2, "Gi": 1024**3, "Ti": 1024**4}


def parse_size(text: str) -> int:
    """`64Mi` -> 67108864, `1G` -> 10**9, `512` -> 512. ValueError with a hint."""
    m = _SIZE_RE.match(text)
    if not m:
        raise ValueError(f"{text!r} is not a size; write a number with an optional unit "
                         "K M G T (1000s) or Ki Mi Gi Ti (1024s), e.g. 64Mi")
    number, unit = m.groups()
    if unit not in _SIZE_UNITS:
        fix = {"k": "K or Ki", "kb": "K or Ki", "kib": "Ki", "mb": "M or Mi", "mib": "Mi",
               "gb": "G or Gi", "gib": "Gi", "tb": "T or Ti", "b": "a plain number of bytes",
               "m": "M or Mi", "g": "G or Gi", "t": "T or Ti"}.get(unit.lower())
        hint = f"; write {fix}" if fix else ""
        raise ValueError(f"unknown size unit {unit!r} in {text!r}{hint} "
                         "(allowed: K M G T, Ki Mi Gi Ti)")
    value = float(number) * _SIZE_UNITS[unit] if "." in number else int(number) * _SIZE_UNITS[unit]
    if value != int(value):
        raise ValueError(f"{text!r} is not a whole number of bytes")
    if int(value) >= 1 << 63:
        raise ValueError(f"{text!r} is too large")
    return int(value)


_DURATION_RE = re.compile(r"^(\d+(?:\.\d+)?)\s*(us|ms|s)$")


def parse_duration_us(text: str) -> int:
    m = _DURATION_RE.match(text.strip())
    if not m:
        raise ValueError(f"{text!r} is not a duration; write e.g. 500us, 50ms or 1s")
    number, unit = m.groups()
    us = float(number) * {"us": 1, "ms": 1000, "s": 1_000_000}[unit]
    if us < 1 or us != int(us):
        raise ValueError(f"{text!r} must be a positive whole number of microseconds")
    if us > 1_000_000_000:
        raise ValueError(f"{text!r} is too long (at most 1000s)")
    return int(us)


# --------------------------------------------------------------------------- actions


ACTION_WORDS = ("allow", "log", "trap", "kill-thread", "kill-process", "kill", "errno NAME", "errno N")


def parse_action(chk: Checker, node: Node, what: str) -> Action | None:
    if isinstance(node, Map):
        m = chk.mapping(node, what, ("action", "errno"))
        if m is None or m.get("action") is None:
            if m is not None:
                chk.error(node.loc, f"{what} needs `action:`")
            return None
        kind_node = m.get("action")
        assert kind_node is not None
        kind = chk.string(kind_node, f"{what}.action")
        errno_node = m.get("errno")
        if kind is None:
            return None
        if kind != "errno":
            if errno_node is not None:
                chk.error(errno_node.loc, "`errno:` only goes with `action: errno`")
            return _simple_action(chk, kind, kind_node.loc, what)
        if errno_node is None:
            chk.error(node.loc, f"{what}: `action: errno` needs `errno:` (a name such as EPERM or a number)")
            return None
        if isinstance(errno_node, Scalar) and errno_node.value is not None:
            return _errno_action(chk, str(errno_node.value), errno_node.loc, what)
        chk.error(errno_node.loc, f"{what}.errno must be a name such as EPERM or a number")
        return None
    if not (isinstance(node, Scalar) and isinstance(node.value, str)):
        chk.error(node.loc, f"{what} must be an action ({', '.join(ACTION_WORDS)}), not {_describe(node)}")
        return None
    text = " ".join(node.value.split())
    if text == "errno" or text.startswith("errno "):
        arg = text[len("errno"):].strip()
        if not arg:
            chk.error(node.loc, f"{what}: `errno` needs a name or number, e.g. `errno EPERM`")
            return None
        return _errno_action(chk, arg, node.loc, what)
    return _simple_action(chk, text, node.loc, what)


def _simple_action(chk: Checker, text: str, loc: Location, what: str) -> Action | None:
    kinds = {"allow": ActionKind.ALLOW, "log": ActionKind.LOG, "trap": ActionKind.TRAP,
             "kill-thread": ActionKind.KILL_THREAD, "kill-process": ActionKind.KILL_PROCESS,
             "kill": ActionKind.KILL_PROCESS}
    if text in kinds:
        return Action(kinds[text])
    chk.error(loc, f"{what}: unknown action {text!r}{_did_you_mean(text, kinds)}; "
                   f"allowed: {', '.join(ACTION_WORDS)}")
    return None


def _errno_action(chk: Checker, arg: str, loc: Location, what: str) -> Action | None:
    if arg.isdigit():
        n = int(arg)
        if n > constants.MAX_ERRNO:
            chk.error(loc, f"{what}: errno {n} is out of range (0..{constants.MAX_ERRNO})")
            return None
        return Action(ActionKind.ERRNO, n)
    n2 = constants.errno_number(arg)
    if n2 is None:
        chk.error(loc, f"{what}: unknown errno name {arg!r}{_did_you_mean(arg.upper(), constants.ERRNO_NAMES)}; "
                       "write a name such as EPERM, EACCES, ENOSYS or a number")
        return None
    return Action(ActionKind.ERRNO, n2)


# --------------------------------------------------------------------------- sections

TOP_KEYS = ("version", "name", "description", "extends", "mode", "scope", "syscalls",
            "capabilities", "no_new_privileges", "filesystem", "resources", "rlimits", "user",
            "namespaces", "env", "landlock")
SYSCALL_KEYS = ("default", "log_denials", "architectures", "unknown", "allow", "deny",
                "deny_action", "rules", "inherit")
RULE_KEYS = ("syscalls", "action", "args", "comment")
ARG_KEYS = ("index", "op", "value", "mask")
CAP_KEYS = ("keep", "drop", "add", "ambient")
FS_KEYS = ("read_only_root", "read_only_paths", "writable_paths", "tmpfs", "tmpfs_remove",
           "masked_paths", "hidden_paths", "bind", "rootfs", "private_devices")
TMPFS_KEYS = ("path", "size", "mode", "options")
BIND_KEYS = ("source", "target", "read_only")
RES_KEYS = ("memory", "pids", "cpu", "io")
USER_KEYS = ("uid", "gid", "groups", "dynamic")
ENV_KEYS = ("clear", "keep", "set")
# An environment variable name, and a `keep` entry: a name or a prefix and `*`.
ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
ENV_PATTERN_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*\*?$")


def read_layer(root: Node, path: str, display: str) -> tuple[Layer, list[PolicyError]]:
    from enforcer.policy import landlock  # its own module; it uses the helpers above

    chk = Checker()
    layer = Layer(path=path, display=display)
    top = chk.mapping(root, "a policy", TOP_KEYS)
    if top is None:
        return layer, chk.errors
    sections: dict[str, Callable[[Checker, Layer, Node, Scalar], None]] = {
        "version": _version, "name": _name, "description": _description, "extends": _extends,
        "mode": _mode, "syscalls": _syscalls, "capabilities": _capabilities,
        "no_new_privileges": _nnp, "filesystem": _filesystem, "resources": _resources,
        "rlimits": _rlimits, "user": _user, "namespaces": _namespaces, "env": _env,
        "scope": _scope, "landlock": landlock.read_section,
    }
    for key, value in top.items:
        handler = sections.get(key.text)
        if handler is not None:
            handler(chk, layer, value, key)
    if top.get("name") is None:
        chk.error(top.loc, "a policy needs `name:` (lowercase letters, digits, . _ -)")
    return layer, chk.errors


def _version(chk: Checker, layer: Layer, node: Node, key: Scalar) -> None:
    if not (isinstance(node, Scalar) and node.value == 1 and not isinstance(node.value, bool)):
        chk.error(node.loc, f"version must be 1 (the only policy format version), not {_describe(node)}")


def _name(chk: Checker, layer: Layer, node: Node, key: Scalar) -> None:
    name = chk.string(node, "name")
    if name is None:
        return
    if not names.is_policy_name(name):
        chk.error(node.loc, f"name {name!r} is not allowed: use {names.NAME_RULE}")
        return
    layer.name = (name, node.loc)


def _description(chk: Checker, layer: Layer, node: Node, key: Scalar) -> None:
    text = chk.string(node, "description")
    if text is not None:
        layer.description = (text, node.loc)


def _extends(chk: Checker, layer: Layer, node: Node, key: Scalar) -> None:
    entries = chk.word_list(node, "extends")
    for text, loc in entries:
        if not text.strip():
            chk.error(loc, "extends: an empty name; write a policy name or a path to a .yaml file")
        else:
            layer.extends.append((text, loc))


def _mode(chk: Checker, layer: Layer, node: Node, key: Scalar) -> None:
    text = chk.string(node, "mode")
    if text is None:
        return
    if text not in ("enforce", "audit"):
        chk.error(node.loc, f"mode must be `enforce` or `audit`, not {text!r}{_did_you_mean(text, ('enforce', 'audit'))}")
        return
    layer.scalars["mode"] = (text, node.loc)


def _scope(chk: Checker, layer: Layer, node: Node, key: Scalar) -> None:
    text = chk.string(node, "scope")
    if text is None:
        return
    if text not in SCOPES:
        chk.error(node.loc, f"scope must be {' or '.join(f'`{s}`' for s in SCOPES)}, not {text!r}"
                            f"{_did_you_mean(text, SCOPES)}")
        return
    layer.scope = (text, node.loc)


def _nnp(chk: Checker, layer: Layer, node: Node, key: Scalar) -> None:
    b = chk.boolean(node, "no_new_privileges")
    if b is not None:
        layer.scalars["no_new_privileges"] = (b, node.loc)


# -- syscalls


def check_syscall_word(chk: Checker, word: str, loc: Location, what: str) -> bool:
    """A syscall name (enforcer's table or libseccomp), or a known @group.
    Architecture checks come later."""
    from enforcer.policy import syscall_table, syscalls

    if word.startswith("@"):
        if word[1:] not in groups.GROUPS:
            match = difflib.get_close_matches(word[1:], list(groups.GROUPS), n=1, cutoff=0.6)
            hint = f"; did you mean '@{match[0]}'?" if match else ""
            chk.error(loc, f"{what}: unknown syscall group {word!r}{hint}; "
                           "`enforcer groups` lists them")
            return False
        return True
    if not re.match(r"^[a-z_][a-z0-9_]*$", word) or not syscalls.known(word):
        chk.error(loc, f"{what}: unknown syscall {word!r}{_did_you_mean(word, syscalls.all_names())} "
                       f"(neither enforcer's syscall table, kernel {syscall_table.kernel_version()}, "
                       f"nor libseccomp {syscalls.libseccomp_version()} knows it)")
        return False
    return True


def _syscalls(chk: Checker, layer: Layer, node: Node, key: Scalar) -> None:
    m = chk.mapping(node, "syscalls", SYSCALL_KEYS)
    if m is None:
        return
    for k, v in m.items:
        if k.text in ("default", "unknown", "deny_action"):
            action = parse_action(chk, v, f"syscalls.{k.text}")
            if action is not None:
                if k.text == "unknown" and not action.blocks:
                    chk.error(v.loc, "syscalls.unknown must block (errno, trap or kill), "
                                     f"not {action}: unknown syscalls cannot be allowed")
                    continue
                layer.scalars[f"syscalls.{k.text}"] = (action, v.loc)
        elif k.text == "log_denials":
            b = chk.boolean(v, "syscalls.log_denials")
            if b is not None:
                layer.scalars["syscalls.log_denials"] = (b, v.loc)
        elif k.text == "inherit":
            # Not a merged scalar: it only says whether *this* file's allow,
            # deny and rules replace the inherited ones (loader._merge_syscalls).
            b = chk.boolean(v, "syscalls.inherit")
            if b is not None:
                layer.syscalls_inherit = (b, v.loc)
        elif k.text == "architectures":
            arches: list[str] = []
            for word, loc in chk.word_list(v, "syscalls.architectures"):
                if word not in ARCH_WORDS:
                    chk.error(loc, f"syscalls.architectures: unknown architecture {word!r}"
                                   f"{_did_you_mean(word, ARCH_WORDS)}; allowed: {', '.join(ARCH_WORDS)}")
                elif word not in arches:
                    arches.append(word)
            if arches:
                layer.scalars["syscalls.architectures"] = (tuple(arches), v.loc)
        elif k.text in ("allow", "deny"):
            out = layer.lists.setdefault(f"syscalls.{k.text}", [])
            for word, loc in chk.word_list(v, f"syscalls.{k.text}"):
                if check_syscall_word(chk, word, loc, f"syscalls.{k.text}"):
                    out.append((word, loc))
        elif k.text == "rules":
            for item in chk.seq(v, "syscalls.rules") or []:
                rule = _rule(chk, item)
                if rule is not None:
                    layer.rules.append(rule)


def _rule(chk: Checker, node: Node) -> RawRule | None:
    m = chk.mapping(node, "a syscall rule", RULE_KEYS)
    if m is None:
        return None
    ok = True
    names: list[tuple[str, Location]] = []
    sc_node = m.get("syscalls")
    if sc_node is None:
        chk.error(node.loc, "a syscall rule needs `syscalls:` (names or @groups)")
        ok = False
    else:
        for word, loc in chk.word_list(sc_node, "rule syscalls"):
            if check_syscall_word(chk, word, loc, "rule syscalls"):
                names.append((word, loc))
            else:
                ok = False
        if not names and ok:
            chk.error(sc_node.loc, "a syscall rule needs at least one syscall")
            ok = False
    action: Action | None = None
    action_node = m.get("action")
    if action_node is None:
        chk.error(node.loc, "a syscall rule needs `action:`")
        ok = False
    else:
        action = parse_action(chk, action_node, "rule action")
        ok = ok and action is not None
    args: list[ArgCondition] = []
    args_node = m.get("args")
    if args_node is not None:
        seen: set[tuple[int, str]] = set()
        for a in chk.seq(args_node, "rule args") or []:
            cond = _arg(chk, a)
            if cond is None:
                ok = False
                continue
            args.append(cond)
            seen.add((cond.index, cond.op.value))
    if "comment" in m.keys():
        c = m.get("comment")
        assert c is not None
        chk.string(c, "rule comment")
    if not ok or action is None:
        return None
    return RawRule(names, action, tuple(args), node.loc)


_OPS = tuple(op.value for op in ArgOp)


def _arg(chk: Checker, node: Node) -> ArgCondition | None:
    m = chk.mapping(node, "an argument condition", ARG_KEYS)
    if m is None:
        return None
    missing = [k for k in ("index", "op", "value") if m.get(k) is None]
    if missing:
        chk.error(node.loc, f"an argument condition needs {', '.join(missing)} "
                            "(e.g. {index: 0, op: eq, value: AF_INET})")
        return None
    index_node, op_node, value_node = m.get("index"), m.get("op"), m.get("value")
    assert index_node is not None and op_node is not None and value_node is not None
    index = chk.integer(index_node, "argument index", 0, 5)
    op_text = chk.string(op_node, "argument op")
    op: ArgOp | None = None
    if op_text is not None:
        if op_text not in _OPS:
            chk.error(op_node.loc, f"unknown argument op {op_text!r}{_did_you_mean(op_text, _OPS)}; "
                                   f"allowed: {', '.join(_OPS)}")
        else:
            op = ArgOp(op_text)
    value = _arg_value(chk, value_node, "argument value")
    mask: int | None = None
    mask_node = m.get("mask")
    if op is ArgOp.MASKED_EQ:
        if mask_node is None:
            chk.error(node.loc, "op masked_eq needs `mask:` ((arg & mask) == value)")
            return None
        mask = _arg_value(chk, mask_node, "argument mask")
        if mask is not None and value is not None and value & ~mask:
            chk.error(value_node.loc, f"value 0x{value:x} has bits outside mask 0x{mask:x}; "
                                      "masked_eq could never match")
            return None
    elif mask_node is not None and op is not None:
        chk.error(mask_node.loc, f"`mask:` only goes with op masked_eq, not {op.value}")
        return None
    if index is None or op is None or value is None or (op is ArgOp.MASKED_EQ and mask is None):
        return None
    return ArgCondition(index=index, op=op, value=value, mask=mask)


def _arg_value(chk: Checker, node: Node, what: str) -> int | None:
    if isinstance(node, Scalar) and isinstance(node.value, int) and not isinstance(node.value, bool):
        if 0 <= node.value <= constants.U64_MAX:
            return node.value
        chk.error(node.loc, f"{what} must be an unsigned 64-bit number (0..2^64-1), not {node.value}")
        return None
    if isinstance(node, Scalar) and isinstance(node.value, str):
        try:
            return constants.parse_value(node.value)
        except ValueError as e:
            word = str(e).split("'")[1] if "unknown constant" in str(e) else ""
            chk.error(node.loc, f"{what}: {e}{_did_you_mean(word.upper(), constants.CONSTANTS) if word else ''}")
            return None
    chk.error(node.loc, f"{what} must be a number or constants such as CLONE_NEWUSER|CLONE_NEWNS, "
                        f"not {_describe(node)}")
    return None


# -- capabilities


def _cap_list(chk: Checker, node: Node, what: str) -> list[tuple[int, Location]]:
    out: list[tuple[int, Location]] = []
    for word, loc in chk.word_list(node, what):
        if word.strip().upper() in ("ALL", "CAP_ALL"):
            out.extend((n, loc) for n in sorted(caps_mod.ALL_CAPS))
            continue
        try:
            out.append((caps_mod.from_name(word), loc))
        except KeyError:
            chk.error(loc, f"{what}: unknown capability {word!r}"
                           f"{_did_you_mean(caps_mod.normalise(word), caps_mod.CAPABILITIES)}; "
                           "write a name such as NET_BIND_SERVICE (with or without CAP_, any case) or ALL")
    return out


def _capabilities(chk: Checker, layer: Layer, node: Node, key: Scalar) -> None:
    m = chk.mapping(node, "capabilities", CAP_KEYS)
    if m is None:
        return
    keys = m.keys()
    if "keep" in keys and ("drop" in keys or "add" in keys):
        chk.error(node.loc, "capabilities: use either `keep:` or `drop:`/`add:`, not both")
        return
    layer.scalars["capabilities"] = (None, node.loc)
    for k, v in m.items:
        caps = _cap_list(chk, v, f"capabilities.{k.text}")
        if k.text == "keep":
            layer.caps_keep = caps
        elif k.text == "drop":
            layer.caps_drop = caps
        elif k.text == "add":
            layer.caps_add = caps
        elif k.text == "ambient":
            layer.caps_ambient = caps
    # `drop: [ALL], add: [CHOWN]` is the usual idiom (add wins); naming the
    # same capability in both lists is a mistake.
    drop_node, add_node = m.get("drop"), m.get("add")
    if drop_node is not None and add_node is not None:
        named_drop = {caps_mod.normalise(w) for w, _ in chk.word_list(drop_node, "capabilities.drop")}
        for word, loc in chk.word_list(add_node, "capabilities.add"):
            if caps_mod.normalise(word) in named_drop and caps_mod.normalise(word) != "CAP_ALL":
                chk.error(loc, f"capabilities: {caps_mod.normalise(word)} is both dropped and added")


# -- filesystem


def _path_list(chk: Checker, layer: Layer, node: Node, field_name: str, allow_default: bool = False) -> None:
    out = layer.lists.setdefault(f"filesystem.{field_name}", [])
    if allow_default and isinstance(node, Scalar) and node.value == "default":
        out.extend((p, node.loc) for p in DEFAULT_MASKED_PATHS)
        return
    items = chk.seq(node, f"filesystem.{field_name}") if not isinstance(node, Scalar) or not allow_default else None
    if items is None:
        if allow_default and isinstance(node, Scalar):
            chk.error(node.loc, f"filesystem.{field_name} must be `default` or a list of absolute paths, "
                                f"not {_describe(node)}")
        return
    for item in items:
        if allow_default and isinstance(item, Scalar) and item.value == "default":
            out.extend((p, item.loc) for p in DEFAULT_MASKED_PATHS)
            continue
        p = chk.path(item, f"each entry of filesystem.{field_name}")
        if p is not None:
            out.append((p, item.loc))


def _filesystem(chk: Checker, layer: Layer, node: Node, key: Scalar) -> None:
    m = chk.mapping(node, "filesystem", FS_KEYS)
    if m is None:
        return
    for k, v in m.items:
        if k.text == "read_only_root":
            b = chk.boolean(v, "filesystem.read_only_root")
            if b is not None:
                layer.scalars["filesystem.read_only_root"] = (b, v.loc)
        elif k.text == "private_devices":
            b = chk.boolean(v, "filesystem.private_devices")
            if b is not None:
                layer.scalars["filesystem.private_devices"] = (b, v.loc)
        elif k.text == "rootfs":
            p = chk.path(v, "filesystem.rootfs")
            if p is not None:
                layer.scalars["filesystem.rootfs"] = (p, v.loc)
        elif k.text in ("read_only_paths", "writable_paths", "hidden_paths"):
            _path_list(chk, layer, v, k.text)
        elif k.text == "masked_paths":
            _path_list(chk, layer, v, k.text, allow_default=True)
        elif k.text == "tmpfs":
            for item in chk.seq(v, "filesystem.tmpfs") or []:
                _tmpfs(chk, layer, item)
        elif k.text == "tmpfs_remove":
            for item in chk.seq(v, "filesystem.tmpfs_remove") or []:
                p = chk.path(item, "each entry of filesystem.tmpfs_remove")
                if p is not None:
                    layer.tmpfs_remove.append((p, item.loc))
        elif k.text == "bind":
            for item in chk.seq(v, "filesystem.bind") or []:
                _bind(chk, layer, item)
    ro = {p: loc for p, loc in layer.lists.get("filesystem.read_only_paths", [])}
    for p, loc in layer.lists.get("filesystem.writable_paths", []):
        if p in ro:
            chk.error(loc, f"filesystem: {p} is both read-only (line {ro[p].line}) and writable")
    for p, loc in layer.tmpfs_remove:
        if p in layer.tmpfs:
            chk.error(loc, f"filesystem.tmpfs_remove: {p} is also a tmpfs of this file "
                           f"(line {layer.tmpfs[p][1].line}); tmpfs_remove drops an inherited "
                           "tmpfs: remove one of the two")


def _bind(chk: Checker, layer: Layer, node: Node) -> None:
    m = chk.mapping(node, "a filesystem.bind entry", BIND_KEYS)
    if m is None:
        return
    paths: dict[str, str] = {}
    for key in ("source", "target"):
        value = m.get(key)
        if value is None:
            chk.error(node.loc, f"a filesystem.bind entry needs `{key}:` (an absolute path)")
            continue
        p = chk.path(value, f"filesystem.bind {key}")
        if p is not None:
            paths[key] = p
    read_only = False
    ro_node = m.get("read_only")
    if ro_node is not None:
        read_only = bool(chk.boolean(ro_node, "filesystem.bind read_only"))
    if len(paths) != 2:
        return
    target = paths["target"]
    if target == "/":
        chk.error(node.loc, "filesystem.bind target / would replace the whole root; "
                            "use filesystem.rootfs for a new root")
        return
    if target in layer.bind:
        chk.error(node.loc, f"filesystem.bind target {target} is listed twice "
                            f"(first at line {layer.bind[target][1].line}); one mount per target")
        return
    layer.bind[target] = (BindMount(source=paths["source"], target=target, read_only=read_only),
                          node.loc)


def _tmpfs(chk: Checker, layer: Layer, node: Node) -> None:
    if isinstance(node, Scalar) and isinstance(node.value, str):
        p = chk.path(node, "filesystem.tmpfs entry")
        if p is not None:
            layer.tmpfs[p] = (TmpfsMount(path=p), node.loc)
        return
    m = chk.mapping(node, "a tmpfs entry", TMPFS_KEYS)
    if m is None:
        return
    path_node = m.get("path")
    if path_node is None:
        chk.error(node.loc, "a tmpfs entry needs `path:`")
        return
    p = chk.path(path_node, "tmpfs path")
    size: int | None = None
    size_node = m.get("size")
    if size_node is not None:
        ok, size = chk.size(size_node, "tmpfs size")
        if ok and size == 0:
            chk.error(size_node.loc, "tmpfs size 0 means unlimited to the kernel; write a real size or leave it out")
    mode = 0o1777
    mode_node = m.get("mode")
    if mode_node is not None:
        parsed = _mode_value(mode_node)
        if parsed is None:
            chk.error(mode_node.loc, f"tmpfs mode must be octal permissions such as \"1777\" or \"0755\", "
                                     f"not {_describe(mode_node)}")
        else:
            mode = parsed
    options: tuple[str, ...] = ("nosuid", "nodev")
    opt_node = m.get("options")
    if opt_node is not None:
        opts: list[str] = []
        for word, loc in chk.word_list(opt_node, "tmpfs options"):
            if word not in TMPFS_OPTIONS:
                chk.error(loc, f"unknown tmpfs option {word!r}{_did_you_mean(word, TMPFS_OPTIONS)}; "
                               f"allowed: {', '.join(TMPFS_OPTIONS)}")
            elif word not in opts:
                opts.append(word)
        options = tuple(opts)
    if p is None:
        return
    if p in layer.tmpfs:
        chk.error(path_node.loc, f"tmpfs {p} is listed twice (first at line {layer.tmpfs[p][1].line})")
        return
    layer.tmpfs[p] = (TmpfsMount(path=p, size=size, mode=mode, options=options), node.loc)


def _mode_value(node: Node) -> int | None:
    """Permissions are octal however they were written: 1777, "1777", 0o1777, 01777."""
    if not isinstance(node, Scalar) or isinstance(node.value, bool) or node.value is None:
        return None
    text = node.text.strip().lower().removeprefix("0o")
    if re.fullmatch(r"[0-7]{1,5}", text) and int(text, 8) <= 0o7777:
        return int(text, 8)
    return None


# -- resources


def _resources(chk: Checker, layer: Layer, node: Node, key: Scalar) -> None:
    m = chk.mapping(node, "resources", RES_KEYS)
    if m is None:
        return
    for k, v in m.items:
        if k.text == "memory":
            mm = chk.mapping(v, "resources.memory", ("max", "swap"))
            for kk, vv in mm.items if mm else []:
                ok, size = chk.size(vv, f"resources.memory.{kk.text}", allow_max=True)
                if ok and kk.text == "max" and size is not None and size < 1024 * 1024:
                    chk.error(vv.loc, f"resources.memory.max {size} bytes is below 1 MiB; no process can run in it "
                                      "(did you forget a unit such as Mi?)")
                elif ok and kk.text in ("max", "swap"):
                    layer.scalars[f"resources.memory.{kk.text}"] = (size, vv.loc)
        elif k.text == "pids":
            pm = chk.mapping(v, "resources.pids", ("max",))
            mv = pm.get("max") if pm else None
            if mv is not None:
                if isinstance(mv, Scalar) and mv.value in ("max", "unlimited"):
                    layer.scalars["resources.pids.max"] = (None, mv.loc)
                else:
                    n = chk.integer(mv, "resources.pids.max", 1, 4_194_304)
                    if n is not None:
                        layer.scalars["resources.pids.max"] = (n, mv.loc)
        elif k.text == "cpu":
            _cpu(chk, layer, v)
        elif k.text == "io":
            _io(chk, layer, v)


def _cpu(chk: Checker, layer: Layer, node: Node) -> None:
    m = chk.mapping(node, "resources.cpu", ("cores", "quota", "period"))
    if m is None:
        return
    cores_node, quota_node, period_node = m.get("cores"), m.get("quota"), m.get("period")
    if cores_node is not None and quota_node is not None:
        chk.error(node.loc, "resources.cpu: write either `cores:` or `quota:`/`period:`, not both")
        return
    period = 100_000
    if period_node is not None:
        p = chk.duration_us(period_node, "resources.cpu.period")
        if p is not None and not 1000 <= p <= 1_000_000:
            chk.error(period_node.loc, "resources.cpu.period must be between 1ms and 1s (kernel limits)")
            p = None
        if p is not None:
            period = p
            layer.scalars["resources.cpu.period"] = (p, period_node.loc)
    if cores_node is not None:
        v = cores_node.value if isinstance(cores_node, Scalar) else None
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v <= 4096:
            chk.error(cores_node.loc, f"resources.cpu.cores must be a positive number of CPUs such as 1.5, "
                                      f"not {_describe(cores_node)}")
            return
        quota = int(round(float(v) * period))
        if quota < 1000:
            chk.error(cores_node.loc, f"resources.cpu.cores {v} gives a quota below 1ms per period")
            return
        layer.scalars["resources.cpu.quota"] = (quota, cores_node.loc)
    elif quota_node is not None:
        if isinstance(quota_node, Scalar) and quota_node.value in ("max", "unlimited"):
            layer.scalars["resources.cpu.quota"] = (None, quota_node.loc)
            return
        q = chk.duration_us(quota_node, "resources.cpu.quota")
        if q is not None and q < 1000:
            chk.error(quota_node.loc, "resources.cpu.quota must be at least 1ms")
        elif q is not None:
            layer.scalars["resources.cpu.quota"] = (q, quota_node.loc)


_DEVICE_RE = re.compile(r"^\d+:\d+$")


def _io(chk: Checker, layer: Layer, node: Node) -> None:
    m = chk.mapping(node, "resources.io", ("weight", "devices"))
    if m is None:
        return
    w = m.get("weight")
    if w is not None:
        n = chk.integer(w, "resources.io.weight", 1, 10000)
        if n is not None:
            layer.scalars["resources.io.weight"] = (n, w.loc)
    d = m.get("devices")
    for item in (chk.seq(d, "resources.io.devices") or []) if d is not None else []:
        dm = chk.mapping(item, "an io device limit", ("device", "read_bps", "write_bps", "read_iops", "write_iops"))
        if dm is None:
            continue
        dev_node = dm.get("device")
        if not isinstance(dev_node, Scalar) or dev_node.value is None:
            chk.error(item.loc, "an io device limit needs `device:` (\"MAJOR:MINOR\" or a /dev path)")
            continue
        # Plain 8:0 is the integer 480 in YAML 1.1; read what was written.
        dev = dev_node.text.strip()
        if not (_DEVICE_RE.match(dev) or (dev.startswith("/dev/") and ".." not in dev)):
            chk.error(dev_node.loc, f"device must be \"MAJOR:MINOR\" (e.g. \"8:0\") or a /dev path, not {dev!r}")
            continue
        values: dict[str, int | None] = {}
        for field_name in ("read_bps", "write_bps"):
            fn = dm.get(field_name)
            if fn is not None:
                ok, size = chk.size(fn, f"io {field_name}", allow_max=True)
                values[field_name] = size if ok else None
        for field_name in ("read_iops", "write_iops"):
            fn = dm.get(field_name)
            if fn is not None:
                values[field_name] = chk.integer(fn, f"io {field_name}", 1, 1 << 40)
        if dev in layer.io_devices:
            chk.error(dev_node.loc, f"io device {dev} is listed twice")
            continue
        layer.io_devices[dev] = (IoDeviceLimit(device=dev, **values), item.loc)


# -- rlimits, user, namespaces


def _rlimit_value(chk: Checker, node: Node, what: str, bytes_ok: bool) -> int | None:
    if isinstance(node, Scalar) and node.value in ("unlimited", "infinity", "max"):
        return -1
    if bytes_ok and isinstance(node, Scalar) and isinstance(node.value, str):
        ok, size = chk.size(node, what)
        return size if ok else None
    if isinstance(node, Scalar) and isinstance(node.value, int) and not isinstance(node.value, bool) and node.value < 0:
        chk.error(node.loc, f"{what} must not be negative ({node.value}); write `unlimited` for no limit")
        return None
    return chk.integer(node, what, 0, (1 << 63) - 1)


def _rlimits(chk: Checker, layer: Layer, node: Node, key: Scalar) -> None:
    if not isinstance(node, Map):
        chk.error(node.loc, f"rlimits must be a mapping such as {{nofile: 1024}}, not a {_kind(node)}")
        return
    for k, v in node.items:
        name = k.text.upper().removeprefix("RLIMIT_")
        if name not in constants.RLIMITS:
            chk.error(k.loc, f"unknown rlimit {k.text!r}{_did_you_mean(name.lower(), [n.lower() for n in constants.RLIMITS])}; "
                             f"allowed: {', '.join(n.lower() for n in constants.RLIMITS)}")
            continue
        if name in layer.rlimits:
            chk.error(k.loc, f"rlimit {name.lower()} is given twice (line {layer.rlimits[name][1].line})")
            continue
        bytes_ok = name in BYTE_RLIMITS
        if isinstance(v, Map):
            vm = chk.mapping(v, f"rlimits.{k.text}", ("soft", "hard"))
            if vm is None:
                continue
            soft_n, hard_n = vm.get("soft"), vm.get("hard")
            if soft_n is None or hard_n is None:
                chk.error(v.loc, f"rlimits.{k.text} needs both `soft:` and `hard:` (or a single value)")
                continue
            soft = _rlimit_value(chk, soft_n, f"rlimits.{k.text}.soft", bytes_ok)
            hard = _rlimit_value(chk, hard_n, f"rlimits.{k.text}.hard", bytes_ok)
            if soft is None or hard is None:
                continue
            if hard != -1 and (soft == -1 or soft > hard):
                chk.error(soft_n.loc, f"rlimits.{k.text}: soft limit is above the hard limit")
                continue
        else:
            single = _rlimit_value(chk, v, f"rlimits.{k.text}", bytes_ok)
            if single is None:
                continue
            soft = hard = single
        layer.rlimits[name] = (Rlimit(resource=name, soft=soft, hard=hard), v.loc)


def _user(chk: Checker, layer: Layer, node: Node, key: Scalar) -> None:
    m = chk.mapping(node, "user", USER_KEYS)
    if m is None:
        return
    fields: dict[str, Located] = {}
    for k, v in m.items:
        if k.text in ("uid", "gid"):
            if isinstance(v, Scalar) and isinstance(v.value, int) and not isinstance(v.value, bool):
                n = chk.integer(v, f"user.{k.text}", 0, 0xFFFFFFFE)
                if n is not None:
                    fields[k.text] = (n, v.loc)
            elif isinstance(v, Scalar) and isinstance(v.value, str) and re.match(r"^[a-z_][a-z0-9_.-]*\$?$", v.value):
                fields[k.text] = (v.value, v.loc)
            else:
                chk.error(v.loc, f"user.{k.text} must be a number or a user/group name, not {_describe(v)}")
        elif k.text == "groups":
            out: list[Any] = []
            for item in chk.seq(v, "user.groups") or []:
                if isinstance(item, Scalar) and isinstance(item.value, int) and not isinstance(item.value, bool):
                    n = chk.integer(item, "user.groups entry", 0, 0xFFFFFFFE)
                    if n is not None:
                        out.append((n, item.loc))
                elif isinstance(item, Scalar) and isinstance(item.value, str):
                    out.append((item.value, item.loc))
                else:
                    chk.error(item.loc, f"user.groups entries must be numbers or group names, not {_describe(item)}")
            fields["groups"] = (out, v.loc)
        elif k.text == "dynamic":
            b = chk.boolean(v, "user.dynamic")
            if b is not None:
                fields["dynamic"] = (b, v.loc)
    dynamic = "dynamic" in fields and fields["dynamic"][0] is True
    if dynamic:
        for id_key in ("uid", "gid"):
            if id_key in fields:
                chk.error(fields[id_key][1], f"user.{id_key} cannot go with `dynamic: true` "
                                             "(the workload gets an id of its own when it starts)")
                return
    elif "uid" not in m.keys():
        chk.error(m.loc, "user needs `uid:` (a number or a user name) or `dynamic: true`")
        return
    layer.user = (fields, node.loc)


def _env(chk: Checker, layer: Layer, node: Node, key: Scalar) -> None:
    m = chk.mapping(node, "env", ENV_KEYS)
    if m is None:
        return
    for k, v in m.items:
        if k.text == "clear":
            b = chk.boolean(v, "env.clear")
            if b is not None:
                layer.scalars["env.clear"] = (b, v.loc)
        elif k.text == "keep":
            out = layer.lists.setdefault("env.keep", [])
            for word, loc in chk.word_list(v, "env.keep"):
                if ENV_PATTERN_RE.match(word):
                    out.append((word, loc))
                elif word == "*":
                    chk.error(loc, "env.keep: `*` would keep everything; write `clear: false`")
                else:
                    chk.error(loc, f"env.keep: {word!r} is not a variable name (letters, digits, "
                                   "`_`, not starting with a digit), optionally ending in `*` "
                                   "for a prefix")
        elif k.text == "set":
            _env_set(chk, layer, v)


def _env_set(chk: Checker, layer: Layer, node: Node) -> None:
    if not isinstance(node, Map):
        chk.error(node.loc, f"env.set must be a mapping of names to values such as "
                            f"{{LANG: C.UTF-8}}, not a {_kind(node)}")
        return
    for k, v in node.items:
        if not ENV_NAME_RE.match(k.text):
            chk.error(k.loc, f"env.set: {k.text!r} is not a variable name (letters, digits, `_`, "
                             "not starting with a digit)")
            continue
        if not (isinstance(v, Scalar) and isinstance(v.value, str)):
            # yes/no/1.0 would turn into True/False/1: say what to write.
            hint = f"; quote it: \"{v.text}\"" if isinstance(v, Scalar) else ""
            chk.error(v.loc, f"env.set.{k.text} must be a string, not {_describe(v)}{hint}")
            continue
        if "\0" in v.value:
            chk.error(v.loc, f"env.set.{k.text} must not contain NUL")
            continue
        layer.env_set[k.text] = (v.value, v.loc)


def _namespaces(chk: Checker, layer: Layer, node: Node, key: Scalar) -> None:
    out = layer.lists.setdefault("namespaces", [])
    for word, loc in chk.word_list(node, "namespaces"):
        if word not in NAMESPACES:
            chk.error(loc, f"unknown namespace {word!r}{_did_you_mean(word, NAMESPACES)}; "
                           f"allowed: {', '.join(NAMESPACES)}")
        elif word in [w for w, _ in out]:
            chk.error(loc, f"namespace {word!r} is listed twice")
        else:
            out.append((word, loc))
