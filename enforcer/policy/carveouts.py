"""Exceptions carved out of an unconditional allow: "allow ioctl, except TIOCSTI".

A policy may allow a syscall outright and block a few argument values of
it (`allow: [ioctl]` with a rule `errno EPERM if arg1 == TIOCSTI`).
libseccomp cannot compile that as written: it refuses a conditional rule
beside an unconditional one with another action (EACCES), and between
overlapping conditional rules it does not promise which wins. So the
loader rewrites the unconditional allow into conditional allows that
cover every value *except* the blocked ones -- rules that never overlap
the blocking rules, so the filter's decision does not depend on
libseccomp's choice of order.

Each blocked value set is a "cube": the values v with (v & mask) == value
(`eq` is the cube with every bit in the mask). The complement of a union of
cubes is again a union of cubes, found by splitting on one bit at a time;
each cube becomes one `masked_eq` condition. For restricted's two ioctl
requests compared on their low 32 bits (the kernel ignores the upper
ones), that is 33 allow rules.

An exception needs exactly one `eq` or `masked_eq` condition, and all the
exceptions of one syscall must test the same argument; anything else is
refused where it was written (the exceptions could not be compiled
exactly).
"""

from __future__ import annotations

from dataclasses import replace

from enforcer.errors import PolicyError
from enforcer.policy.model import Action, ArgCondition, ArgOp, SyscallRule

U64 = (1 << 64) - 1
# An exception list that splits an allow into more rules than this is
# refused: it would make the filter slow for that syscall.
MAX_RULES = 256

Cube = tuple[int, int]  # (mask, value): every v with v & mask == value


def cube_of(cond: ArgCondition) -> Cube | None:
    """The values a single eq/masked_eq condition matches; None for other ops."""
    if cond.op is ArgOp.EQ:
        return U64, cond.value
    if cond.op is ArgOp.MASKED_EQ:
        mask = U64 if cond.mask is None else cond.mask
        return mask, cond.value & mask
    return None


def complement(blocked: list[Cube]) -> list[Cube]:
    """Cubes covering exactly the 64-bit values in none of `blocked`."""
    return _complement([(m & U64, v & m & U64) for m, v in blocked])


def _complement(blocked: list[Cube]) -> list[Cube]:
    if not blocked:
        return [(0, 0)]  # nothing blocked here: every value
    if any(mask == 0 for mask, _ in blocked):
        return []  # a blocked cube covers everything that is left
    constrained = 0
    for mask, _ in blocked:
        constrained |= mask
    bit = _agreeing_bit(blocked, constrained)
    if bit is not None:
        # Every blocked cube fixes this bit to the same value c: the half with
        # the other value is allowed whole, and the cubes found for the
        # c half need not fix the bit (the other half is allowed anyway).
        c = blocked[0][1] & bit
        rest = [(mask & ~bit, value & ~bit) for mask, value in blocked]
        return [(bit, c ^ bit)] + _complement(rest)
    bit = 1 << (constrained.bit_length() - 1)
    out: list[Cube] = []
    for side in (0, bit):
        sub = [(mask & ~bit, value & ~bit) for mask, value in blocked
               if not mask & bit or value & bit == side]
        out += [(mask | bit, value | side) for mask, value in _complement(sub)]
    return out


def _agreeing_bit(blocked: list[Cube], constrained: int) -> int | None:
    first_value = blocked[0][1]
    for b in range(constrained.bit_length() - 1, -1, -1):
        bit = 1 << b
        if all(mask & bit and value & bit == first_value & bit for mask, value in blocked):
            return bit
    return None


def carve(rules: list[SyscallRule], default: Action, errors: list[PolicyError]) -> list[SyscallRule]:
    """Replace each unconditional allow (or log) that has blocking
    conditional rules for the same syscall with the allows around them.

    Not needed when the allow is the policy's default action: compilers
    leave such a rule out (libseccomp refuses it), and the blocking rules
    then stand alone over the default, exactly as meant."""
    exceptions: dict[str, list[SyscallRule]] = {}
    for r in rules:
        if r.args and r.action.blocks:
            exceptions.setdefault(r.syscall, []).append(r)
    out: list[SyscallRule] = []
    for r in rules:
        blocked = exceptions.get(r.syscall)
        if r.args or r.action.blocks or not blocked or r.action == default:
            out.append(r)
            continue
        out += _around(r, blocked, errors)
    return out


def _around(allow: SyscallRule, blocked: list[SyscallRule], errors: list[PolicyError]) -> list[SyscallRule]:
    cubes: list[Cube] = []
    index = blocked[0].args[0].index
    for b in blocked:
        cube = cube_of(b.args[0]) if len(b.args) == 1 else None
        if cube is None or b.args[0].index != index:
            errors.append(PolicyError(b.origin, (
                f"rule with argument conditions ({b.action}) cannot be an exception to the "
                f"unconditional {allow.action} of {allow.syscall} (via {allow.via or allow.syscall}, "
                f"{allow.origin}): an exception needs exactly one eq or masked_eq condition, and "
                f"all exceptions of {allow.syscall} must test the same argument; write the allowed "
                "values as conditional allow rules instead")))
            return [allow]
        cubes.append(cube)
    around = complement(cubes)
    if len(around) > MAX_RULES:
        errors.append(PolicyError(blocked[0].origin, (
            f"the exceptions to {allow.syscall} split its {allow.action} into {len(around)} rules "
            f"(at most {MAX_RULES}); write the allowed values as conditional allow rules instead")))
        return [allow]
    return [replace(allow, args=(ArgCondition(index=index, op=ArgOp.MASKED_EQ, value=value, mask=mask),))
            for mask, value in around]
