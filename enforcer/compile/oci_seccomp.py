"""A policy's syscall rules as an OCI `linux.seccomp` object.

The compiler stores it in Plan.seccomp.oci so the shim hands runc a profile
without compiling anything at container start; `enforcer export --format
oci|docker` writes the same object (enforcer/emit/oci.py, with the
`unexpressed` lines it collects here).

OCI seccomp semantics worth knowing (runc 1.1, libseccomp 2.5):
* SCMP_CMP_MASKED_EQ takes the mask in `value` and the expected value in
  `valueTwo`: (arg & value) == valueTwo.
* runc turns a rule with two conditions on the same argument index into
  one rule per condition (OR), not one rule with both (AND). We never emit
  such a rule where OR would allow more than the policy does.
* runc answers ENOSYS for syscall numbers newer than any the profile names,
  which matches our default `unknown: errno ENOSYS`.
* runc before 1.2 refuses a profile with any `flags` ("seccomp flags are not
  yet supported by runc"), so SECCOMP_FILTER_FLAG_LOG is only written when
  asked for (`with_flags=True`, `enforcer export --seccomp-flags`).
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Protocol

from enforcer.kernel.arch import SCMP_ARCH, native_arch
from enforcer.policy.model import (Action, ActionKind, ArgCondition, ArgOp, Mode, Policy,
                                   SyscallRule)


class Notes(Protocol):
    """Where what a target cannot express is written (emit's Unexpressed)."""

    def add(self, what: str, consequence: str) -> None: ...


class _Discard:
    def add(self, what: str, consequence: str) -> None:
        pass


# OCI seccomp action names.
SCMP_ACT: dict[ActionKind, str] = {
    ActionKind.ALLOW: "SCMP_ACT_ALLOW",
    ActionKind.LOG: "SCMP_ACT_LOG",
    ActionKind.ERRNO: "SCMP_ACT_ERRNO",
    ActionKind.TRAP: "SCMP_ACT_TRAP",
    ActionKind.KILL_THREAD: "SCMP_ACT_KILL_THREAD",
    ActionKind.KILL_PROCESS: "SCMP_ACT_KILL_PROCESS",
}

ENOSYS = 38

SCMP_CMP: dict[ArgOp, str] = {
    ArgOp.EQ: "SCMP_CMP_EQ",
    ArgOp.NE: "SCMP_CMP_NE",
    ArgOp.LT: "SCMP_CMP_LT",
    ArgOp.LE: "SCMP_CMP_LE",
    ArgOp.GT: "SCMP_CMP_GT",
    ArgOp.GE: "SCMP_CMP_GE",
    ArgOp.MASKED_EQ: "SCMP_CMP_MASKED_EQ",
}


def _action_fields(action: Action) -> dict[str, Any]:
    fields: dict[str, Any] = {"action": SCMP_ACT[action.kind]}
    if action.kind is ActionKind.ERRNO:
        fields["errnoRet"] = action.errno if action.errno is not None else 1
    return fields


def _arg_json(cond: ArgCondition) -> dict[str, Any]:
    if cond.op is ArgOp.MASKED_EQ:
        # OCI: (arg & value) == valueTwo.
        return {"index": cond.index, "value": cond.mask or 0, "valueTwo": cond.value,
                "op": SCMP_CMP[cond.op]}
    return {"index": cond.index, "value": cond.value, "op": SCMP_CMP[cond.op]}


def _same_index_twice(rule: SyscallRule) -> bool:
    counts = Counter(c.index for c in rule.args)
    return any(n > 1 for n in counts.values())


def seccomp_entries(policy: Policy, unexpressed: Notes) -> list[dict[str, Any]]:
    """The OCI `syscalls` list: unconditional rules grouped by action, in order."""
    entries: list[dict[str, Any]] = []
    default = effective_action(policy, policy.syscalls.default_action)
    named: set[str] = set()
    for rule in policy.syscalls.rules:
        named.add(rule.syscall)
        action = effective_action(policy, rule.action)
        fields = _action_fields(action)
        if not rule.args:
            if action == default:
                continue  # the default does it; an explicit rule is noise
            last = entries[-1] if entries else None
            if last is not None and "args" not in last and \
                    {k: v for k, v in last.items() if k != "names"} == fields:
                last["names"].append(rule.syscall)
            else:
                entries.append({"names": [rule.syscall], **fields})
            continue
        if _same_index_twice(rule):
            # runc would OR the conditions. For a rule that lets the call run,
            # OR allows more than the policy: leave it out (the default then
            # applies, which blocks more). For a blocking rule OR blocks more.
            if not action.blocks:
                unexpressed.add(
                    f"syscall {rule.syscall}: several conditions on one argument "
                    f"({_conds_text(rule.args)})",
                    "OCI runtimes OR them; the rule is left out, so the default action applies")
                continue
            unexpressed.add(
                f"syscall {rule.syscall}: several conditions on one argument "
                f"({_conds_text(rule.args)})",
                "OCI runtimes OR them; emitted as is, which blocks more calls than the policy")
        entries.append({"names": [rule.syscall], **fields,
                        "args": [_arg_json(c) for c in rule.args]})
    unknown = effective_action(policy, policy.syscalls.unknown_action)
    if "clone3" not in named and default.blocks:
        # glibc falls back to clone when clone3 fails with ENOSYS; a plain
        # EPERM would make thread creation fail instead.
        entries.append({"names": ["clone3"], **_action_fields(unknown)})
    if unknown != Action(ActionKind.ERRNO, ENOSYS) and policy.mode.value == "enforce":
        unexpressed.add(
            f"syscalls.unknown = {unknown} for syscalls newer than the profile",
            "runc answers ENOSYS for them")
    return entries


def _conds_text(args: tuple[ArgCondition, ...]) -> str:
    parts = []
    for c in args:
        if c.op is ArgOp.MASKED_EQ:
            parts.append(f"arg{c.index} & {c.mask:#x} == {c.value:#x}")
        else:
            parts.append(f"arg{c.index} {c.op.value} {c.value:#x}")
    return ", ".join(parts)


def oci_seccomp_object(policy: Policy, unexpressed: Notes, machine: str | None = None,
                       with_flags: bool = False) -> dict[str, Any]:
    """The OCI `linux.seccomp` object; what it cannot say goes to `unexpressed`."""
    default = effective_action(policy, policy.syscalls.default_action)
    out: dict[str, Any] = {"defaultAction": SCMP_ACT[default.kind]}
    if default.kind is ActionKind.ERRNO:
        out["defaultErrnoRet"] = default.errno if default.errno is not None else 1
    out["architectures"] = [SCMP_ARCH[a] for a in policy_arches(policy, machine)]
    if policy.syscalls.log_denials:
        if with_flags:
            out["flags"] = ["SECCOMP_FILTER_FLAG_LOG"]
        elif policy.mode is Mode.ENFORCE and _has_logless_denial(policy, default):
            # runc < 1.2 refuses any linux.seccomp.flags ("seccomp flags are
            # not yet supported by runc"), and so does Docker with it.
            unexpressed.add(
                "log_denials (SECCOMP_FILTER_FLAG_LOG)",
                "runc before 1.2 refuses seccomp flags, so ERRNO/TRAP denials are not "
                "logged; export with --seccomp-flags for runc >= 1.2")
    out["syscalls"] = seccomp_entries(policy, unexpressed)
    return out


def _has_logless_denial(policy: Policy, default: Action) -> bool:
    """True if some action would go unlogged without the flag (errno, trap)."""
    quiet = (ActionKind.ERRNO, ActionKind.TRAP)
    return default.kind in quiet or any(r.action.kind in quiet for r in policy.syscalls.rules)


def policy_arches(policy: Policy, machine: str | None = None) -> list[str]:
    """The libseccomp arch names the filter admits: native only unless named."""
    native = native_arch(machine)
    arches = list(policy.syscalls.architectures) or [native]
    return [native if a == "native" else a for a in arches]


def effective_action(policy: Policy, action: Action) -> Action:
    """In audit mode nothing is blocked: a blocking action becomes `log`."""
    if policy.mode is Mode.AUDIT and action.blocks:
        return Action(ActionKind.LOG)
    return action


def oci_seccomp(policy: Policy) -> dict[str, Any]:
    """The object the compiler stores in Plan.seccomp.oci (no flags)."""
    return oci_seccomp_object(policy, _Discard())
