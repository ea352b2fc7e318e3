"""load_policy(): a policy name or file -> the effective, validated Policy.

    spec ──resolve──▶ file ──yamlsafe──▶ nodes ──validate.read_layer──▶ Layer
    Layers of the whole `extends` chain (parents first, child last)
        ──merge (docs/policy-format.md "Merge rules")──▶ Policy (model.py)

Errors are collected per stage and raised together as PolicyErrors; each
names file:line:column. A file with errors stops its own chain (merging a
half-read parent would only produce confusing follow-up errors).
"""

from __future__ import annotations

import grp
import hashlib
import os
import pwd
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from enforcer.errors import Location, PolicyError, PolicyErrors
from enforcer.filetrust import UntrustedFile, read_trusted
from enforcer.kernel import capabilities as caps_mod
from enforcer.policy import carveouts, fs_checks, groups, names, syscalls
from enforcer.policy import landlock as landlock_section
from enforcer.policy.model import (
    Action,
    ActionKind,
    BindMount,
    DEFAULT_ENV_KEEP,
    DYNAMIC_FALLBACK_ID,
    CapabilityPolicy,
    EnvPolicy,
    FilesystemPolicy,
    IoDeviceLimit,
    Mode,
    Policy,
    ResourcePolicy,
    Rlimit,
    SyscallPolicy,
    SyscallRule,
    TmpfsMount,
    UserPolicy,
)
from enforcer.policy.validate import Layer, read_layer
from enforcer.policy.yamlsafe import MAX_FILE_BYTES, parse_yaml_collect

MAX_EXTENDS_DEPTH = 16


def policies_dir() -> Path:
    """The shipped policies (the repo's policies/, `enforcer/policies` in the package)."""
    return Path(names.SHIPPED_DIR).resolve()


def shipped_names() -> list[str]:
    return names.shipped_names()


def _looks_like_path(spec: str) -> bool:
    return names.looks_like_path(spec)


def _display(path: str) -> str:
    """Paths in messages: relative to the working directory when inside it."""
    try:
        rel = os.path.relpath(path)
    except ValueError:
        return path
    return path if rel.startswith("..") else rel


def _not_found(message: str) -> PolicyErrors:
    return PolicyErrors([PolicyError(None, message)])


def resolve_policy_source(spec: str, *, base_dir: str | None = None) -> str:
    """Absolute path of the file a command-line spec names.

    A spec with a `/`, a leading `.` or a .yaml/.yml suffix is a path
    (relative to `base_dir`, default the working directory): the user named
    that file. Anything else is a policy *name*: a shipped policy or one in
    the administrator's policy directory (enforcer/policy/names.py) -- never
    a file of that name in the working directory. Raises PolicyErrors when
    nothing matches.
    """
    if _looks_like_path(spec):
        path = os.path.abspath(os.path.join(base_dir or os.getcwd(), os.path.expanduser(spec)))
        if os.path.isfile(path):
            # One file, one name: symlinks resolved, so the cache key is stable.
            return os.path.realpath(path)
        what = "is a directory" if os.path.isdir(path) else "does not exist"
        raise _not_found(f"policy file {spec} {what}")
    found = names.find_named(spec)
    if found is None:
        raise _not_found(f"no policy named {spec!r}: a name means {names.where_names_are_looked_up()}, "
                         f"never a file in the working directory (for a file, write ./{spec})")
    return found


def resolve_extends(spec: str, naming_file: str) -> str:
    """Absolute path of the parent an `extends:` entry of `naming_file` names.

    Allowed: a policy name (as for resolve_policy_source); an absolute path
    to a .yaml/.yml file; a relative path to a .yaml/.yml file that stays in
    the naming file's directory -- no `..`, and no symlink that leads out of
    it. The file itself then passes enforcer.filetrust's checks when read.
    Raises PolicyErrors (without a location: the caller adds the line).
    """
    if not _looks_like_path(spec):
        return resolve_policy_source(spec)
    allowed = ("write a policy name, an absolute path to a .yaml file, or a path to a .yaml "
               "file in this policy's directory or below it")
    if not spec.endswith((".yaml", ".yml")):
        raise _not_found(f"{spec!r} is not a policy file (no .yaml or .yml suffix); {allowed}")
    if os.path.isabs(spec):
        return resolve_policy_source(spec)
    if ".." in spec.split("/"):
        raise _not_found(f"{spec!r} climbs out of this policy's directory with '..'; {allowed}")
    base = os.path.realpath(os.path.dirname(naming_file))
    path = resolve_policy_source(spec, base_dir=base)
    if os.path.commonpath([base, path]) != base:
        raise _not_found(f"{spec!r} leads outside this policy's directory (to {path}, through a "
                         f"symlink); {allowed}")
    return path


def extends_spec_for(parent: str) -> str:
    """How a generated policy (`enforcer record`'s output) writes `extends:`
    for the policy file `parent`: its name when the name finds that very
    file (a shipped policy, or one in the administrator's directory), else
    its absolute path -- never a path relative to where it was written,
    which would break as soon as the file is copied elsewhere."""
    parent = os.path.realpath(parent)
    stem, suffix = os.path.splitext(os.path.basename(parent))
    if suffix == ".yaml" and names.find_named(stem) == parent:
        return stem
    return parent


# --------------------------------------------------------------------------- reading the chain


@dataclass
class _Chain:
    layers: list[Layer]
    sources: list[tuple[str, str]]


def _read_file(path: str, display: str) -> tuple[Layer, str]:
    try:
        # Trusted or refused, and never a huge file read into memory.
        data = read_trusted(path, "policy file", limit=MAX_FILE_BYTES)
    except UntrustedFile as e:
        raise PolicyErrors([PolicyError(Location(display, 1, 1), str(e))]) from None
    except ValueError as e:
        raise PolicyErrors([PolicyError(Location(display, 1, 1), (
            f"{e}; a policy may be at most {MAX_FILE_BYTES} bytes (1 MiB)"))]) from None
    except OSError as e:
        raise PolicyErrors([PolicyError(Location(display, 1, 1), f"cannot read: {e.strerror}")]) from None
    root, errors = parse_yaml_collect(data, display)
    layer, content_errors = read_layer(root, path, display)
    errors = sorted(errors + content_errors,
                    key=lambda e: (e.location.line, e.location.column) if e.location else (0, 0))
    if errors:
        raise PolicyErrors(errors)
    return layer, hashlib.sha256(data).hexdigest()


def _read_chain(top: str) -> _Chain:
    """Every file of the extends graph, parents before children, each once."""
    chain = _Chain([], [])
    done: set[str] = set()
    errors: list[PolicyError] = []

    def visit(path: str, stack: list[str], via: Location | None) -> None:
        if path in done:
            return
        if len(stack) >= MAX_EXTENDS_DEPTH:
            errors.append(PolicyError(via, f"extends is nested more than {MAX_EXTENDS_DEPTH} levels deep"))
            return
        try:
            layer, digest = _read_file(path, _display(path))
        except PolicyErrors as e:
            errors.extend(e.errors)
            return
        for spec, loc in layer.extends:
            try:
                parent = resolve_extends(spec, path)
            except PolicyErrors as e:
                errors.append(PolicyError(loc, f"extends: {e.errors[0].message}"))
                continue
            if parent in stack or parent == path:
                cycle = " -> ".join(_display(p) for p in stack[stack.index(parent):] + [path, parent]) \
                    if parent in stack else f"{_display(path)} -> {_display(path)}"
                errors.append(PolicyError(loc, f"extends cycle: {cycle}"))
                continue
            visit(parent, stack + [path], loc)
        done.add(path)
        chain.layers.append(layer)
        chain.sources.append((path, digest))

    visit(top, [], None)
    if errors:
        raise PolicyErrors(errors)
    return chain


# --------------------------------------------------------------------------- merging


@dataclass
class _Entry:
    syscall: str
    action: Action
    args: tuple[Any, ...]
    via: str
    origin: Location
    layer: int


def load_policy(spec: str, *, mode: str | None = None) -> Policy:
    """Load a shipped policy name or a file into the effective Policy.

    `mode` ("enforce" or "audit") overrides what the files say. Raises
    PolicyErrors with every problem found, each naming file:line:column.
    """
    top = resolve_policy_source(spec)
    chain = _read_chain(top)
    return _build(chain, mode)


def _build(chain: _Chain, mode_override: str | None) -> Policy:
    layers = chain.layers
    child = layers[-1]
    errors: list[PolicyError] = []
    origins: dict[str, Location] = {}

    scalars: dict[str, tuple[Any, Location]] = {}
    for layer in layers:
        scalars.update(layer.scalars)
    for key, (_, loc) in scalars.items():
        origins[key] = loc

    def scalar(key: str, default: Any) -> Any:
        return scalars[key][0] if key in scalars else default

    assert child.name is not None  # read_layer guarantees a name
    origins["name"] = child.name[1]
    if child.description:
        origins["description"] = child.description[1]

    # -- mode
    mode = Mode(scalar("mode", "enforce"))
    if mode_override is not None:
        if mode_override not in ("enforce", "audit"):
            raise PolicyErrors([PolicyError(None, f"mode must be enforce or audit, not {mode_override!r}")])
        mode = Mode(mode_override)
        origins["mode"] = Location("<command line>", 0, 0)

    # -- syscalls
    arch_words: tuple[str, ...] = scalar("syscalls.architectures", ())
    arches = syscalls.effective_arches(tuple(a for a in arch_words))
    default_action: Action = scalar("syscalls.default", Action(ActionKind.ALLOW))
    deny_action: Action
    if "syscalls.deny_action" in scalars:
        deny_action = scalars["syscalls.deny_action"][0]
    else:
        deny_action = default_action if default_action.blocks else Action(ActionKind.ERRNO, 1)
        if "syscalls.default" in scalars:
            origins["syscalls.deny_action"] = scalars["syscalls.default"][1]
    unknown_action: Action = scalar("syscalls.unknown", Action(ActionKind.ERRNO, 38))
    rules = _merge_syscalls(layers, arches, deny_action, default_action, errors)

    # -- capabilities
    capabilities = _merge_caps(layers, origins, errors)

    # -- filesystem
    def union(key: str) -> tuple[str, ...]:
        out: dict[str, Location] = {}
        for layer in layers:
            for item, loc in layer.lists.get(key, []):
                if item not in out:
                    out[item] = loc
                    origins[f"{key}[{item}]"] = loc
        return tuple(out)

    tmpfs: dict[str, TmpfsMount] = {}
    binds: dict[str, BindMount] = {}
    for layer in layers:
        for path, loc in layer.tmpfs_remove:
            if path not in tmpfs:
                errors.append(PolicyError(loc, (
                    f"filesystem.tmpfs_remove: no inherited tmpfs at {path} to remove "
                    f"(inherited: {', '.join(sorted(tmpfs)) or 'none'})")))
                continue
            del tmpfs[path]
            origins[f"filesystem.tmpfs_remove[{path}]"] = loc
        for path, (mount, loc) in layer.tmpfs.items():
            tmpfs[path] = mount
            origins[f"filesystem.tmpfs[{path}]"] = loc
        for target, (bind, loc) in layer.bind.items():
            binds[target] = bind
            origins[f"filesystem.bind[{target}]"] = loc
    filesystem = FilesystemPolicy(
        read_only_root=scalar("filesystem.read_only_root", False),
        read_only_paths=union("filesystem.read_only_paths"),
        writable_paths=union("filesystem.writable_paths"),
        tmpfs=tuple(tmpfs.values()),
        masked_paths=union("filesystem.masked_paths"),
        hidden_paths=union("filesystem.hidden_paths"),
        bind=tuple(binds.values()),
        rootfs=scalar("filesystem.rootfs", None),
        private_devices=scalar("filesystem.private_devices", False),
    )
    ro = set(filesystem.read_only_paths)
    for p in filesystem.writable_paths:
        if p in ro:
            errors.append(PolicyError(origins[f"filesystem.writable_paths[{p}]"],
                                      f"{p} is writable here but read-only in "
                                      f"{origins[f'filesystem.read_only_paths[{p}]']}"))
    errors.extend(fs_checks.check(filesystem, origins))

    # -- resources
    io_devices: dict[str, IoDeviceLimit] = {}
    for layer in layers:
        for dev, (io_limit, loc) in layer.io_devices.items():
            io_devices[dev] = io_limit
            origins[f"resources.io.devices[{dev}]"] = loc
    resources = ResourcePolicy(
        memory_max=scalar("resources.memory.max", None),
        memory_swap_max=scalar("resources.memory.swap", None),
        pids_max=scalar("resources.pids.max", None),
        cpu_quota_us=scalar("resources.cpu.quota", None),
        cpu_period_us=scalar("resources.cpu.period", 100_000),
        io_weight=scalar("resources.io.weight", None),
        io_devices=tuple(io_devices.values()),
    )

    # -- rlimits
    rlimits: dict[str, Rlimit] = {}
    for layer in layers:
        for name, (limit, loc) in layer.rlimits.items():
            rlimits[name] = limit
            origins[f"rlimits.{name.lower()}"] = loc

    # -- user
    user: UserPolicy | None = None
    user_layer = next((layer for layer in reversed(layers) if layer.user is not None), None)
    if user_layer is not None and user_layer.user is not None:
        origins["user"] = user_layer.user[1]
        user = _resolve_user(user_layer.user[0], filesystem.rootfs, errors)

    namespaces = union("namespaces")
    env = _merge_env(layers, scalar("env.clear", True), union("env.keep"), origins)
    # `scope` is what this file says about itself: a policy that extends a
    # container policy is judged as a host sandbox unless it says otherwise.
    scope = child.scope[0] if child.scope else "host"
    if child.scope:
        origins["scope"] = child.scope[1]
    landlock = landlock_section.merge(layers, lambda i: _ancestors(layers, i), origins,
                                      scalar("no_new_privileges", True), errors)

    if errors:
        raise PolicyErrors(_capped(errors))
    return Policy(
        name=child.name[0],
        description=child.description[0] if child.description else "",
        mode=mode,
        syscalls=SyscallPolicy(
            default_action=default_action,
            rules=tuple(rules),
            # Empty means native (model.py); resolved names only when others are asked for.
            architectures=() if set(arch_words) <= {"native"} else arches,
            log_denials=scalar("syscalls.log_denials", True),
            unknown_action=unknown_action,
        ),
        capabilities=capabilities,
        no_new_privileges=scalar("no_new_privileges", True),
        filesystem=filesystem,
        resources=resources,
        rlimits=tuple(rlimits.values()),
        user=user,
        namespaces=namespaces,
        env=env,
        scope=scope,
        landlock=landlock,
        sources=tuple(chain.sources),
        origins=origins,
    )


MAX_REPORTED_ERRORS = 100


def _capped(errors: list[PolicyError]) -> list[PolicyError]:
    """Every error is worth fixing, but a thousand lines help nobody."""
    if len(errors) <= MAX_REPORTED_ERRORS:
        return errors
    rest = len(errors) - MAX_REPORTED_ERRORS
    return errors[:MAX_REPORTED_ERRORS] + [PolicyError(None, f"{rest} more errors not shown")]


def _expand(word: str, loc: Location, arches: tuple[str, ...], errors: list[PolicyError]) -> list[str]:
    """A name or @group -> syscall names that exist on at least one target arch."""
    if word.startswith("@"):
        return [n for n in groups.expand(word[1:]) if any(syscalls.exists_on(n, a) for a in arches)]
    if any(syscalls.exists_on(word, a) for a in arches):
        return [word]
    where = ", ".join(syscalls.arches_with(word)) or "no architecture"
    errors.append(PolicyError(loc, f"syscall {word!r} does not exist on {', '.join(arches)} "
                                   f"(the architectures this policy targets); it exists on {where}"))
    return []


def _ancestors(layers: list[Layer], index: int) -> set[int]:
    """Indexes (into `layers`) of every file that layers[index] extends,
    directly or through its parents."""
    by_path = {layer.path: i for i, layer in enumerate(layers)}
    found: set[int] = set()
    todo = [index]
    while todo:
        layer = layers[todo.pop()]
        for spec, _loc in layer.extends:
            try:
                parent = resolve_extends(spec, layer.path)
            except PolicyErrors:
                continue  # already reported by _read_chain
            i = by_path.get(parent)
            if i is not None and i not in found:
                found.add(i)
                todo.append(i)
    return found


def _merge_syscalls(layers: list[Layer], arches: tuple[str, ...], deny_action: Action,
                    default_action: Action, errors: list[PolicyError]) -> list[SyscallRule]:
    allow = Action(ActionKind.ALLOW)
    entries: list[_Entry] = []
    for index, layer in enumerate(layers):
        mine: list[_Entry] = []
        for key, action in (("syscalls.allow", allow), ("syscalls.deny", deny_action)):
            for word, loc in layer.lists.get(key, []):
                for name in _expand(word, loc, arches, errors):
                    mine.append(_Entry(name, action, (), word, loc, index))
        for rule in layer.rules:
            for word, loc in rule.syscalls:
                for name in _expand(word, loc, arches, errors):
                    mine.append(_Entry(name, rule.action, rule.args, word, rule.loc, index))
        mine = _resolve_layer(mine, errors)
        if layer.syscalls_inherit is not None and not layer.syscalls_inherit[0]:
            # `syscalls.inherit: false`: this file's allow/deny/rules replace
            # those of every file it extends (directly or not); other
            # branches of a diamond keep theirs.
            ancestors = _ancestors(layers, index)
            entries = [e for e in entries if e.layer not in ancestors]
        # The child decides: a syscall it names unconditionally replaces every
        # inherited entry for it; one it allows only with conditions replaces
        # the inherited unconditional entry (so a child can narrow `socket`).
        # Conditional *blocking* rules are exceptions: they keep an inherited
        # unconditional allow and are carved out of it (carveouts.py).
        unconditional = {e.syscall for e in mine if not e.args}
        narrowed = {e.syscall for e in mine if e.args and not e.action.blocks}
        entries = [
            e for e in entries
            if e.syscall not in unconditional and not (e.syscall in narrowed and not e.args)
        ]
        entries.extend(mine)
    seen: set[tuple[str, Action, tuple[Any, ...]]] = set()
    rules: list[SyscallRule] = []
    for e in entries:
        rule_key = (e.syscall, e.action, e.args)
        if rule_key in seen:
            continue  # the same rule twice (e.g. via two groups): once is enough
        seen.add(rule_key)
        rules.append(SyscallRule(syscall=e.syscall, action=e.action, args=e.args, via=e.via, origin=e.origin))
    return carveouts.carve(rules, default_action, errors)


def _resolve_layer(mine: list[_Entry], errors: list[PolicyError]) -> list[_Entry]:
    """Within one file: a syscall named explicitly beats the same syscall
    reached through a @group; among equals there is one unconditional
    action per syscall, and no conditional rule with another action beside
    an unconditional one (it could never apply).

    Conflicts are reported once per pair of entries (two overlapping groups
    would otherwise give one line per shared syscall)."""
    by_name: dict[str, list[_Entry]] = {}
    for e in mine:
        by_name.setdefault(e.syscall, []).append(e)
    dropped: set[int] = set()
    # (where and how each side was written) -> the syscalls they clash on
    conflicts: dict[tuple[Any, ...], list[str]] = {}
    pairs: dict[tuple[Any, ...], tuple[_Entry, _Entry, bool]] = {}
    for name, entries in by_name.items():
        uncond = [e for e in entries if not e.args]
        cond = [e for e in entries if e.args]
        explicit_uncond = [e for e in uncond if e.via == name]
        if explicit_uncond:
            dropped.update(id(e) for e in uncond if e.via != name)
            uncond = explicit_uncond
        elif any(e.via == name and not e.action.blocks for e in cond):
            # `allow: [@system-service]` plus a conditional allow naming
            # `clone`: the rule narrows what the group allowed.
            dropped.update(id(e) for e in uncond)
            uncond = []
        if not uncond:
            continue
        first = uncond[0]
        clash = next((e for e in uncond[1:] if e.action != first.action), None)
        conditional = False
        if clash is None:
            # A blocking rule with conditions beside an unconditional allow is
            # an exception to it (carveouts.py checks that it can be one).
            clash = next((e for e in cond if e.action != first.action
                          and not (e.action.blocks and not first.action.blocks)), None)
            conditional = True
        if clash is not None:
            key = (first.via, first.origin, first.action, clash.via, clash.origin, clash.action, conditional)
            conflicts.setdefault(key, []).append(name)
            pairs[key] = (first, clash, conditional)
    for key, names in conflicts.items():
        first, clash, conditional = pairs[key]
        shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
        if conditional:
            errors.append(PolicyError(clash.origin, (
                f"rule with argument conditions ({clash.action}) can never apply to {shown}: "
                f"already {first.action} unconditionally (via {first.via}) at line {first.origin.line}"
            )))
        else:
            errors.append(PolicyError(clash.origin, (
                f"conflicting rules for {shown}: {clash.action} (via {clash.via}) here, but {first.action} "
                f"(via {first.via}) at line {first.origin.line}; name each syscall once, "
                "or use argument conditions"
            )))
    return [e for e in mine if id(e) not in dropped]


def _merge_env(layers: list[Layer], clear: bool, keep: tuple[str, ...],
               origins: dict[str, Location]) -> EnvPolicy:
    """`keep` adds to the default list (a policy can keep more, not less:
    the defaults are what programs need to behave); `set` merges by name,
    the child's value wins."""
    values: dict[str, str] = {}
    for layer in layers:
        for name, (value, loc) in layer.env_set.items():
            values[name] = value
            origins[f"env.set.{name}"] = loc
    kept = tuple(dict.fromkeys(DEFAULT_ENV_KEEP + keep))
    return EnvPolicy(clear=clear, keep=kept, set=tuple(values.items()))


def _merge_caps(layers: list[Layer], origins: dict[str, Location],
                errors: list[PolicyError]) -> CapabilityPolicy:
    """docs/policy-reference.md "Merge rules": a `keep` replaces everything
    inherited (ambient included), drop/add apply on top; `ambient` replaces
    the inherited ambient list, and a dropped capability leaves it too."""
    keep: set[int] | None = None
    drop: set[int] = set()
    add: set[int] = set()
    ambient: dict[int, Location] = {}
    for layer in layers:
        if "capabilities" not in layer.scalars:
            continue
        origins["capabilities"] = layer.scalars["capabilities"][1]
        if layer.caps_keep is not None:
            keep, drop, add, ambient = {n for n, _ in layer.caps_keep}, set(), set(), {}
            for n, loc in layer.caps_keep:
                origins[f"capabilities.{caps_mod.name_of(n)}"] = loc
        else:
            d = {n for n, _ in layer.caps_drop}
            a = {n for n, _ in layer.caps_add}
            for n, loc in layer.caps_drop + layer.caps_add:
                origins[f"capabilities.{caps_mod.name_of(n)}"] = loc
            if keep is not None:
                keep = (keep - d) | a
            else:
                drop = (drop | d) - a
                add = (add - d) | a
            ambient = {n: loc for n, loc in ambient.items() if n not in d}
        if layer.caps_ambient is not None:
            ambient = dict(layer.caps_ambient)
            origins["capabilities.ambient"] = (layer.caps_ambient[0][1] if layer.caps_ambient
                                               else layer.scalars["capabilities"][1])
    _check_ambient(ambient, keep, errors)
    if keep is not None:
        return CapabilityPolicy(keep=frozenset(keep), ambient=frozenset(ambient))
    return CapabilityPolicy(drop=frozenset(drop), add=frozenset(add))


def _check_ambient(ambient: dict[int, Location], keep: set[int] | None,
                   errors: list[PolicyError]) -> None:
    """Ambient capabilities must be held: a subset of an absolute `keep`."""
    for n, loc in ambient.items():
        name = caps_mod.name_of(n)
        if keep is None:
            errors.append(PolicyError(loc, (
                f"capabilities.ambient: {name} needs an absolute capability set: write `keep:` here "
                "or in a policy this one extends (with only drop/add the launcher decides what is held)")))
            return
        if n not in keep:
            errors.append(PolicyError(loc, (
                f"capabilities.ambient: {name} is not kept; ambient capabilities must also be "
                "listed in `keep:`")))


# --------------------------------------------------------------------------- user names


def _passwd_lookup(rootfs: str | None, kind: str, name: str) -> tuple[int, int] | None:
    """(id, primary gid) for a user or (gid, gid) for a group; host or rootfs."""
    if rootfs is None:
        try:
            if kind == "user":
                pw = pwd.getpwnam(name)
                return pw.pw_uid, pw.pw_gid
            gr = grp.getgrnam(name)
            return gr.gr_gid, gr.gr_gid
        except KeyError:
            return None
    table = "/etc/passwd" if kind == "user" else "/etc/group"
    try:
        # Inside the rootfs, as the workload will see it: the tree's
        # symlinks (etc/passwd -> /etc/shadow) never lead to a host file.
        from enforcer.inroot import open_in_root

        root_fd = os.open(rootfs, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            found = open_in_root(root_fd, table)
        finally:
            os.close(root_fd)
        try:
            import stat

            if not stat.S_ISREG(os.fstat(found).st_mode):
                return None  # a FIFO or device would hang or lie: not a user database
            f = open(f"/proc/self/fd/{found}", encoding="utf-8", errors="replace")
        finally:
            os.close(found)
        with f:
            for line in f:
                fields = line.rstrip("\n").split(":")
                if len(fields) >= 4 and fields[0] == name:
                    if kind == "user":
                        return int(fields[2]), int(fields[3])
                    return int(fields[2]), int(fields[2])
    except (OSError, ValueError):
        return None
    return None


def _resolve_user(fields: dict[str, tuple[Any, Location]], rootfs: str | None,
                  errors: list[PolicyError]) -> UserPolicy | None:
    if "dynamic" in fields and fields["dynamic"][0] is True:
        # The ids are picked when the workload starts; until then (and where
        # nothing can pick one) the policy stands for the fallback id.
        groups_only = {k: v for k, v in fields.items() if k == "groups"}
        base = _resolve_user({"uid": (DYNAMIC_FALLBACK_ID, fields["dynamic"][1]),
                              **groups_only}, rootfs, errors)
        return None if base is None else UserPolicy(uid=base.uid, gid=base.gid,
                                                    groups=base.groups, dynamic=True)
    where = f"{rootfs}/etc" if rootfs else "this host"
    uid = gid = None
    user_name = group_name = None
    primary_gid = None
    if "uid" in fields:
        value, loc = fields["uid"]
        if isinstance(value, int):
            uid = value
        else:
            found = _passwd_lookup(rootfs, "user", value)
            if found is None:
                errors.append(PolicyError(loc, f"user {value!r} does not exist on {where} (write a number instead)"))
            else:
                uid, primary_gid = found
                user_name = value
    if "gid" in fields:
        value, loc = fields["gid"]
        if isinstance(value, int):
            gid = value
        else:
            found = _passwd_lookup(rootfs, "group", value)
            if found is None:
                errors.append(PolicyError(loc, f"group {value!r} does not exist on {where} (write a number instead)"))
            else:
                gid = found[0]
                group_name = value
    elif primary_gid is not None:
        gid = primary_gid
    elif uid is not None:
        gid = uid
    group_ids: list[int] = []
    for value, loc in fields.get("groups", ([], None))[0]:
        if isinstance(value, int):
            group_ids.append(value)
        else:
            found = _passwd_lookup(rootfs, "group", value)
            if found is None:
                errors.append(PolicyError(loc, f"group {value!r} does not exist on {where}"))
            else:
                group_ids.append(found[0])
    if uid is None:
        return None
    return UserPolicy(uid=uid, gid=gid, groups=tuple(dict.fromkeys(group_ids)),
                      user_name=user_name, group_name=group_name)
