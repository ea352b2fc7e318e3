"""From "what the workload did" to "what the learned policy allows".

Input: how often each syscall was seen (by name) and the base policy.
Output: a `Learned` set -- unconditional allows, the base's conditional
rules for syscalls the base only allows with conditions, and the syscalls
seen but left out, each with the reason -- ready for render.py.

The rules, in words (docs/record.md says the same for users):

* A learned policy never allows more than its base. A syscall the base
  blocks (by a rule or by its default action) is left out and listed, even
  though the recording saw it (the recording filter blocks nothing).
* A syscall the base allows only under argument conditions (`clone` without
  namespace flags, `personality` with harmless values) is allowed with the
  base's conditions, copied into the learned file.
* clone3: glibc tries clone3 first and falls back to clone on ENOSYS. A
  base that does not allow clone3 gives it its `unknown` action (ENOSYS),
  so when clone3 was seen the learned policy allows clone (with the base's
  conditions) instead, and leaves clone3 to `unknown`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from enforcer.policy import groups, syscalls
from enforcer.policy.model import Policy, SyscallRule

# A newer syscall -> the older one glibc falls back to when it gets ENOSYS,
# for the cases where a base policy forces that fallback.
FALLBACKS = {"clone3": "clone"}


@dataclass
class Learned:
    allow: dict[str, int] = field(default_factory=dict)  # name -> times seen
    # (rule copied from the base, times its syscall was seen, why it is here)
    rules: list[tuple[SyscallRule, int, str]] = field(default_factory=list)
    left_out: dict[str, tuple[int, str]] = field(default_factory=dict)  # name -> (seen, why)

    def allowed_names(self) -> set[str]:
        """Every syscall some rule of the learned policy may allow."""
        return set(self.allow) | {r.syscall for r, _, _ in self.rules if not r.action.blocks}


@dataclass(frozen=True)
class BaseAnswer:
    verdict: str  # "allow" | "conditional" | "blocked"
    rules: tuple[SyscallRule, ...] = ()
    why: str = ""


def base_answer(base: Policy, name: str) -> BaseAnswer:
    """Does the base policy allow `name`, and how?"""
    mine = [r for r in base.syscalls.rules if r.syscall == name]
    unconditional = [r for r in mine if not r.args]
    if unconditional:
        rule = unconditional[-1]
        if not rule.action.blocks:
            return BaseAnswer("allow")
        via = f" via {rule.via}" if rule.via and rule.via != name else ""
        return BaseAnswer("blocked", why=f"the base gives it {rule.action}{via}")
    conditional = tuple(r for r in mine if r.args)
    if conditional and any(not r.action.blocks for r in conditional):
        return BaseAnswer("conditional", rules=conditional)
    default = base.syscalls.default_action
    if default.blocks:
        return BaseAnswer("blocked", why=f"the base does not allow it (its default is {default})")
    # Allowed by the base's default; conditional denials, if any, cannot be
    # combined with an unconditional allow in one file: say so.
    why = "" if not conditional else "the base's conditional denials of it are not kept"
    return BaseAnswer("allow", why=why)


def learn(seen: dict[str, int], base: Policy) -> Learned:
    out = Learned()
    wanted: dict[str, tuple[int, str]] = {}
    for name, count in sorted(seen.items()):
        answer = base_answer(base, name)
        fallback = FALLBACKS.get(name)
        if fallback and answer.verdict == "blocked":
            unknown = base.syscalls.unknown_action
            out.left_out[name] = (count, f"gets the base's `unknown` action ({unknown}); glibc "
                                         f"then falls back to {fallback}, allowed instead")
            prev = wanted.get(fallback, (0, ""))
            wanted[fallback] = (prev[0], f"the fallback for {name}, seen {count} time(s)")
            continue
        wanted[name] = (count, wanted.get(name, (0, ""))[1])
    for name, (count, note) in sorted(wanted.items()):
        answer = base_answer(base, name)
        if answer.verdict == "allow":
            out.allow[name] = count
        elif answer.verdict == "conditional":
            why = "the base allows it only with these conditions"
            if note:
                why += f" ({note})"
            for rule in answer.rules:
                out.rules.append((rule, count, why))
        else:
            out.left_out[name] = (count, answer.why + (f" ({note})" if note else ""))
    return out


def target_arches(base: Policy) -> tuple[str, ...]:
    return syscalls.effective_arches(base.syscalls.architectures)


def group_members(name: str, arches: tuple[str, ...]) -> set[str]:
    """A group's members that exist on at least one of `arches`."""
    return {m for m in groups.expand(name) if any(syscalls.exists_on(m, a) for a in arches)}


def choose_groups(names: set[str], arches: tuple[str, ...]) -> list[tuple[str, set[str]]]:
    """Groups every member of which (existing on `arches`) is in `names`.

    Largest first; a group whose members are all covered by groups already
    chosen adds nothing and is skipped. Returns (group, members) pairs.
    """
    candidates = []
    for gname in groups.GROUPS:
        members = group_members(gname, arches)
        if members and members <= names:
            candidates.append((gname, members))
    candidates.sort(key=lambda c: (-len(c[1]), c[0]))
    chosen: list[tuple[str, set[str]]] = []
    covered: set[str] = set()
    for gname, members in candidates:
        if members <= covered:
            continue
        chosen.append((gname, members))
        covered |= members
    return chosen
