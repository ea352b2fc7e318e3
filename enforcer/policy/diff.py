"""What one effective policy allows that another does not — for code review.

`enforcer diff OLD NEW` compares two *effective* policies (after `extends`),
field by field, and says for each difference which side is looser. The
comparison works on meaning, not on text: two policies that spell the same
syscall set differently (a @group versus its members) compare equal.

A Difference is one change:

    section   what part of the policy ("syscalls", "capabilities", ...)
    item      the field or the set the line is about
    old, new  the two values, rendered for a person; a set difference
              ("allowed by NEW only") has its list on one side and "" on the other

`review_lines` renders them as a code review reads: grouped (syscalls,
capabilities, user, filesystem, limits, landlock, env, namespaces,
scope), one line per change marked `+` (only NEW has it), `-` (only OLD
has it) or `~` (changed), lists with their counts, wrapped.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Callable, Iterable

from enforcer.kernel import capabilities as caps_mod
from enforcer.policy.explain import describe_condition
from enforcer.policy.lint import cap_view, syscall_state
from enforcer.policy.model import Policy, SyscallRule


# The groups of `enforcer diff`, in the order it prints them, and the
# sections each gathers.
GROUPS = ("syscalls", "capabilities", "user", "filesystem", "limits", "landlock", "env",
          "namespaces", "scope")
_GROUP_OF = {"privileges": "capabilities", "resources": "limits", "rlimits": "limits"}


@dataclass(frozen=True)
class Difference:
    section: str
    item: str
    old: str
    new: str

    @property
    def group(self) -> str:
        return _GROUP_OF.get(self.section, self.section)

    @property
    def change(self) -> str:
        """"added" (only NEW has it), "removed" (only OLD has it) or "changed"."""
        if not self.old:
            return "added"
        if not self.new:
            return "removed"
        return "changed"

    def as_dict(self) -> dict[str, str]:
        return {"group": self.group, "change": self.change, "section": self.section,
                "item": self.item, "old": self.old, "new": self.new}

    def review_text(self) -> str:
        """The change as a line of `enforcer diff`, without its marker."""
        item = self.item
        if self.section == "rlimits":
            item = f"rlimit {item}"
        elif item.startswith(self.group + " ") and item != self.group:
            item = item[len(self.group) + 1:]  # "namespaces only in NEW" under namespaces
        if self.change == "changed":
            return f"{item}: {self.old} -> {self.new}" if item != self.group \
                else f"{self.old} -> {self.new}"
        listed = self.new or self.old
        if listed == "(none)" or self.section not in _LISTS or "; " in listed:
            return f"{item}: {listed}"
        return f"{item} ({len(listed.split(', '))}): {listed}"

    def __str__(self) -> str:
        # Set differences carry their list on one side only.
        if not self.old:
            return f"{self.section}: {self.item}: {self.new}"
        if not self.new:
            return f"{self.section}: {self.item}: {self.old}"
        return f"{self.section}: {self.item}: {self.old} -> {self.new}"


# Sections whose one-sided lines are lists worth a count.
_LISTS = ("syscalls", "capabilities", "filesystem", "namespaces", "env", "landlock")

MARKS = {"added": "+", "removed": "-", "changed": "~"}
NBSP = "\u00a0"  # not a place to break (textwrap breaks at ASCII whitespace only)
# An argument condition as explain.describe_condition writes it: kept on one line.
_CONDITION = re.compile(r"arg\d (?:& 0x[0-9a-f]+ )?(?:==|!=|<=|>=|<|>) \S+")


def review_lines(differences: list[Difference], width: int = 100,
                 headings: dict[str, str] | None = None) -> list[str]:
    """Grouped, marked, wrapped lines for a person; ends with a count.
    `headings` may give a group a longer heading than its name."""
    import textwrap

    lines: list[str] = []
    counts: dict[str, int] = {}
    for group in GROUPS:
        mine = [d for d in differences if d.group == group]
        if not mine:
            continue
        counts[group] = len(mine)
        lines.append((headings or {}).get(group, group))
        for d in mine:
            # A rule's conditions stay whole on a line: break only between rules.
            text = _CONDITION.sub(lambda m: m.group(0).replace(" ", NBSP), d.review_text())
            lines += [line.replace(NBSP, " ") for line in textwrap.wrap(
                text, width=max(width, 40), initial_indent=f"  {MARKS[d.change]} ",
                subsequent_indent="      ", break_long_words=False, break_on_hyphens=False)]
    if not differences:
        return ["no differences in effect"]
    total = sum(counts.values())
    lines += textwrap.wrap(f"{total} change{'s' if total != 1 else ''}: "
                           + ", ".join(f"{g} {n}" for g, n in counts.items()),
                           width=max(width, 40), subsequent_indent="  ")
    return lines


def _names(items: Iterable[str]) -> str:
    listed = sorted(items)
    return ", ".join(listed) if listed else "(none)"


def _size(n: int | None) -> str:
    if n is None:
        return "unset"
    for unit, factor in (("Gi", 1 << 30), ("Mi", 1 << 20), ("Ki", 1 << 10)):
        if n >= factor and n % factor == 0:
            return f"{n // factor}{unit}"
    return str(n)


def _limit(n: int) -> str:
    return "unlimited" if n < 0 else str(n)


def _plain(value: Any) -> str:
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (tuple, list, frozenset, set)):
        return "[" + ", ".join(str(v) for v in value) + "]"
    return str(value)


def _rule_text(rule: SyscallRule) -> str:
    conds = " and ".join(describe_condition(c) for c in rule.args)
    return f"{rule.action} if {conds}" if conds else str(rule.action)


def _syscall_universe(*policies: Policy) -> set[str]:
    from enforcer.policy.syscalls import all_names

    names = set(all_names())
    for p in policies:
        names.update(r.syscall for r in p.syscalls.rules)
    return names


def diff_syscalls(old: Policy, new: Policy) -> list[Difference]:
    out: list[Difference] = []
    for item, getter in (
        ("mode", lambda p: p.mode.value),
        ("default action", lambda p: str(p.syscalls.default_action)),
        ("unknown-syscall action", lambda p: str(p.syscalls.unknown_action)),
        ("architectures", lambda p: _plain(p.syscalls.architectures or ("native",))),
        ("log denials", lambda p: _plain(p.syscalls.log_denials)),
    ):
        a, b = getter(old), getter(new)
        if a != b:
            out.append(Difference("syscalls", item, a, b))

    only_new, only_old, cond_changed = [], [], []
    for name in sorted(_syscall_universe(old, new)):
        state_old, rules_old = syscall_state(old, name)
        state_new, rules_new = syscall_state(new, name)
        if state_old == "denied" and state_new != "denied":
            only_new.append(name if state_new == "allowed" else f"{name} (conditionally)")
        elif state_new == "denied" and state_old != "denied":
            only_old.append(name if state_old == "allowed" else f"{name} (conditionally)")
        elif state_old == state_new == "conditional" or state_old != state_new:
            text_old = "; ".join(_rule_text(r) for r in rules_old) or state_old
            text_new = "; ".join(_rule_text(r) for r in rules_new) or state_new
            if text_old != text_new:
                cond_changed.append(Difference("syscalls", f"rules for {name}", text_old, text_new))
    if only_new:
        out.append(Difference("syscalls", "allowed by NEW only", "", _names(only_new)))
    if only_old:
        out.append(Difference("syscalls", "allowed by OLD only", _names(only_old), ""))
    return out + cond_changed


def _cap_names(caps: frozenset[int]) -> str:
    return _names(caps_mod.name_of(c) for c in caps)


def diff_capabilities(old: Policy, new: Policy) -> list[Difference]:
    """What the workload holds after execve (root: what it keeps; a non-root
    user: its ambient list), the ambient list itself, and what is kept but
    not held (a non-root user's bounding set): a `user:` change alone can
    change all three."""
    out: list[Difference] = []
    view_old, view_new = cap_view(old), cap_view(new)
    gained = view_new.held - view_old.held
    lost = view_old.held - view_new.held
    if gained:
        out.append(Difference("capabilities", "held by NEW only", "", _cap_names(gained)))
    if lost:
        out.append(Difference("capabilities", "held by OLD only", _cap_names(lost), ""))
    if view_old.ambient != view_new.ambient:
        out.append(Difference("capabilities", "ambient", _cap_names(view_old.ambient),
                              _cap_names(view_new.ambient)))
    unheld_old = view_old.bounding - view_old.held
    unheld_new = view_new.bounding - view_new.held
    if unheld_old != unheld_new:
        out.append(Difference("capabilities", "kept but not held (bounding set only)",
                              _cap_names(unheld_old), _cap_names(unheld_new)))
    style_old = "keep" if old.capabilities.keep is not None else "drop/add"
    style_new = "keep" if new.capabilities.keep is not None else "drop/add"
    if style_old != style_new:
        out.append(Difference("capabilities", "style", style_old, style_new))
    if old.no_new_privileges != new.no_new_privileges:
        out.append(Difference("privileges", "no_new_privileges",
                              _plain(old.no_new_privileges), _plain(new.no_new_privileges)))
    return out


def _set_diff(section: str, item: str, a: Iterable[str], b: Iterable[str]) -> list[Difference]:
    sa, sb = set(a), set(b)
    out = []
    if sb - sa:
        out.append(Difference(section, f"{item} only in NEW", "", _names(sb - sa)))
    if sa - sb:
        out.append(Difference(section, f"{item} only in OLD", _names(sa - sb), ""))
    return out


def diff_filesystem(old: Policy, new: Policy) -> list[Difference]:
    fo, fn = old.filesystem, new.filesystem
    out: list[Difference] = []
    if fo.read_only_root != fn.read_only_root:
        out.append(Difference("filesystem", "read_only_root",
                              _plain(fo.read_only_root), _plain(fn.read_only_root)))
    if fo.rootfs != fn.rootfs:
        out.append(Difference("filesystem", "rootfs", _plain(fo.rootfs), _plain(fn.rootfs)))
    if fo.private_devices != fn.private_devices:
        out.append(Difference("filesystem", "private_devices", _plain(fo.private_devices),
                              _plain(fn.private_devices)))
    for item in ("read_only_paths", "writable_paths", "masked_paths", "hidden_paths"):
        out += _set_diff("filesystem", item, getattr(fo, item), getattr(fn, item))
    tmp_old = {t.path: t for t in fo.tmpfs}
    tmp_new = {t.path: t for t in fn.tmpfs}
    out += _set_diff("filesystem", "tmpfs", tmp_old, tmp_new)
    for path in sorted(set(tmp_old) & set(tmp_new)):
        a, b = tmp_old[path], tmp_new[path]
        if a != b:
            out.append(Difference("filesystem", f"tmpfs {path}",
                                  f"size {_size(a.size)} mode {a.mode:o} {','.join(a.options)}",
                                  f"size {_size(b.size)} mode {b.mode:o} {','.join(b.options)}"))
    return out


def diff_resources(old: Policy, new: Policy) -> list[Difference]:
    ro, rn = old.resources, new.resources
    out: list[Difference] = []
    fields: tuple[tuple[str, Callable[[Any], str]], ...] = (
        ("memory_max", _size), ("memory_swap_max", _size), ("pids_max", _plain),
        ("cpu_quota_us", _plain), ("cpu_period_us", _plain), ("io_weight", _plain),
    )
    for name, render in fields:
        a, b = getattr(ro, name), getattr(rn, name)
        if a != b:
            out.append(Difference("resources", name, render(a), render(b)))
    dev_old = {d.device: d for d in ro.io_devices}
    dev_new = {d.device: d for d in rn.io_devices}
    for dev in sorted(set(dev_old) | set(dev_new)):
        if dev_old.get(dev) != dev_new.get(dev):
            out.append(Difference("resources", f"io device {dev}",
                                  _plain(dev_old.get(dev)), _plain(dev_new.get(dev))))
    return out


def diff_process(old: Policy, new: Policy) -> list[Difference]:
    out: list[Difference] = []
    lim_old = {r.resource: r for r in old.rlimits}
    lim_new = {r.resource: r for r in new.rlimits}

    def render(r: Any) -> str:
        if r is None:
            return "unset"
        return f"soft {_limit(r.soft)} hard {_limit(r.hard)}"

    for name in sorted(set(lim_old) | set(lim_new)):
        if lim_old.get(name) != lim_new.get(name):
            out.append(Difference("rlimits", name, render(lim_old.get(name)),
                                  render(lim_new.get(name))))

    def user(p: Policy) -> str:
        if p.user is None:
            return "unchanged (launcher's)"
        if p.user.dynamic:
            return f"dynamic groups {_plain(p.user.groups)}"
        return f"uid {_plain(p.user.uid)} gid {_plain(p.user.gid)} groups {_plain(p.user.groups)}"

    if user(old) != user(new):
        out.append(Difference("user", "identity", user(old), user(new)))
    out += _set_diff("namespaces", "namespaces", old.namespaces, new.namespaces)
    if old.scope != new.scope:
        out.append(Difference("scope", "scope", old.scope, new.scope))
    eo, en = old.env, new.env
    if eo.clear != en.clear:
        out.append(Difference("env", "clear", _plain(eo.clear), _plain(en.clear)))
    out += _set_diff("env", "keep", eo.keep, en.keep)
    set_old, set_new = dict(eo.set), dict(en.set)
    for name in sorted(set(set_old) | set(set_new)):
        if set_old.get(name) != set_new.get(name):
            out.append(Difference("env", f"set {name}", _plain(set_old.get(name)),
                                  _plain(set_new.get(name))))
    return out


def diff_landlock(old: Policy, new: Policy) -> list[Difference]:
    """Grants, ports and scopes; a grant or port only in NEW is looser, a
    scope only in NEW is tighter (the lines say which side has it)."""
    lo, ln = old.landlock, new.landlock
    if lo is None and ln is None:
        return []
    if lo is None or ln is None:
        from enforcer.policy.landlock import describe

        side = "NEW" if lo is None else "OLD"
        text = describe(ln if lo is None else lo)  # type: ignore[arg-type]
        return [Difference("landlock", f"only in {side} (nothing restricted without it)",
                           "" if lo is None else text, text if lo is None else "")]
    out: list[Difference] = []
    if lo.abi != ln.abi:
        out.append(Difference("landlock", "abi", _plain(lo.abi or "best effort"),
                              _plain(ln.abi or "best effort")))

    def paths(entries: Iterable[Any]) -> list[str]:
        return [e.path + (" (optional)" if e.optional else "") for e in entries]

    for (grant, a), (_, b) in zip(lo.grants(), ln.grants()):
        out += _set_diff("landlock", f"{grant} paths", paths(a), paths(b))
    for kind in ("bind", "connect"):
        a_ports, b_ports = getattr(lo, kind), getattr(ln, kind)
        if a_ports is None or b_ports is None:
            if a_ports != b_ports:
                out.append(Difference("landlock", f"{kind} ports",
                                      "any" if a_ports is None else _plain(a_ports),
                                      "any" if b_ports is None else _plain(b_ports)))
            continue
        out += _set_diff("landlock", f"{kind} ports", map(str, a_ports), map(str, b_ports))
    out += _set_diff("landlock", "scopes", lo.scope, ln.scope)
    return out


def diff_policies(old: Policy, new: Policy) -> list[Difference]:
    """Every difference between two effective policies, in a stable order."""
    return (diff_syscalls(old, new) + diff_capabilities(old, new) + diff_filesystem(old, new)
            + diff_resources(old, new) + diff_process(old, new) + diff_landlock(old, new))
