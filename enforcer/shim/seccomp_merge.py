"""The intersection of two OCI seccomp profiles: the container's and the policy's.

runc loads exactly one filter from config.json, so the shim cannot stack
the policy's filter on the runtime's (`docker run --security-opt
seccomp=...`, RuntimeDefault, a Localhost profile). It writes one profile
that decides every call as the kernel would decide it with both filters
stacked:

* a call is allowed only if both profiles allow it;
* a call one profile denies gets that profile's action; one both deny gets
  the stricter action, in the kernel's order of precedence (KILL_PROCESS >
  KILL_THREAD > TRAP > ERRNO > USER_NOTIF > TRACE > LOG > ALLOW); two
  actions of the same kind (two errno values, say) keep the container's;
* the default action is the stricter of the two defaults;
* an architecture is admitted only if both admit it (runc always admits
  the native one, so that one stays);
* flags: SECCOMP_FILTER_FLAG_LOG, TSYNC and WAIT_KILLABLE_RECV from either
  side (they log more or synchronise threads; they allow nothing), SPEC_ALLOW
  only if both ask for it (it turns a CPU mitigation off); anything else is
  refused.

How the profiles are read (what runc and libseccomp 2.5 do with them): a
rule whose action equals its profile's default is skipped; unknown syscall
names are ignored; a rule with two conditions on one argument becomes one
rule per condition (libseccomp takes one comparison per argument index, so
runc ORs them); an unconditional rule for a syscall overrides every
conditional one for it (the first unconditional rule added wins).

How the intersection is written. Per syscall each profile is a small
decision: a constant action, or actions on regions of the argument space
(each an OR of ANDs of comparisons) and the default elsewhere. The merged
decision is computed cell by cell -- each pair of (a region or "elsewhere"
of one profile, a region or "elsewhere" of the other) -- and written as
rules without negation: a region is the product of the two profiles'
conditions (conjunction pairs, pairwise), or one profile's region whole
when every cell in it decides alike. Two comparisons on the same argument
index are merged into one (EQ with anything, two masked-EQs, intervals that
one comparison can say); when they cannot be, the rule is left out if its
action is weaker than the default (the default then denies those calls),
or the whole syscall gets the strictest action of its cells if it is
stricter. Either way the merged profile is never weaker than stacking, and
each such place is reported in the notes. Regions of different actions
never overlap, so libseccomp's way of building its rule tree cannot pick
between them.

The conditions are compared as 64-bit values; on a 32-bit architecture
libseccomp compares the low 32 bits only, so when one is admitted, merging
two comparisons that involve a constant of 32 bits or more counts as
"cannot be merged" (above).

runc's own addition to the filter, -ENOSYS for syscall numbers above the
highest one a profile names, sees every name of both profiles when the
merged default is stricter than ERRNO (a rule with the default action lists
them: runc skips it for libseccomp but counts it), so numbers newer than
both profiles get ENOSYS as under either alone.

Stdlib only, no `typing` at run time: this runs on the shim's start path
(and is cached per pair of profiles, see `intersect_cached`).
"""

from __future__ import annotations

import os

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Optional, Tuple

    Action = Tuple[int, str, Optional[int]]  # (precedence, name, errno/trace data)
    Cond = Tuple[str, int, int]  # (op, value, valueTwo); masked: (op, mask, datum)
    Conj = Tuple[Tuple[int, Cond], ...]  # ((index, cond), ...) sorted by index
    Region = list[Conj]  # OR of conjunctions; [()] is "always"

from enforcer.kernel.arch import MACHINE_ARCH, SCMP_ARCH
from enforcer.shim.errors import ShimError

MERGE_FORMAT = 2  # bump when the output for the same inputs changes (cache key)
U64 = (1 << 64) - 1
U32 = (1 << 32) - 1
EPERM = 1

# How many pairs of conjunctions (one from each profile) may be combined:
# per syscall, and for the whole profile. The work and the merged profile
# grow with the product of the two profiles' conditions, and the
# container's profile comes from config.json (hostile input): without a
# bound, a few hundred conditions made the shim (and enforcer-shimd's
# worker) spin for minutes and grow by gigabytes. Real profiles need a few
# dozen pairs per syscall; past the bound the syscall gets the strictest
# action of its cells (never weaker than stacking; reported). The other
# pairwise steps (the overlap check of one profile's rules, absorption)
# spend the same budget.
MAX_PAIRS_PER_SYSCALL = 4096
MAX_PAIRS = 1 << 16


def _spend(budget: list[int] | None, pairs: int) -> bool:
    """Take `pairs` from `budget` ([pairs left], None: unbounded) if it has them."""
    if budget is None:
        return True
    if pairs > budget[0]:
        return False
    budget[0] -= pairs
    return True

_PRECEDENCE = {
    "SCMP_ACT_KILL_PROCESS": 7, "SCMP_ACT_KILL_THREAD": 6, "SCMP_ACT_KILL": 6,
    "SCMP_ACT_TRAP": 5, "SCMP_ACT_ERRNO": 4, "SCMP_ACT_NOTIFY": 3, "SCMP_ACT_TRACE": 2,
    "SCMP_ACT_LOG": 1, "SCMP_ACT_ALLOW": 0,
}
_SAME = {"SCMP_ACT_KILL": "SCMP_ACT_KILL_THREAD"}  # libseccomp: the same action
_WITH_DATA = ("SCMP_ACT_ERRNO", "SCMP_ACT_TRACE")  # runc: errnoRet, EPERM if absent
ERRNO_RANK = _PRECEDENCE["SCMP_ACT_ERRNO"]

_OPS = ("SCMP_CMP_NE", "SCMP_CMP_LT", "SCMP_CMP_LE", "SCMP_CMP_EQ", "SCMP_CMP_GE",
        "SCMP_CMP_GT", "SCMP_CMP_MASKED_EQ")
EQ, NE, MASKED = "SCMP_CMP_EQ", "SCMP_CMP_NE", "SCMP_CMP_MASKED_EQ"

_UNION_FLAGS = ("SECCOMP_FILTER_FLAG_LOG", "SECCOMP_FILTER_FLAG_TSYNC",
                "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV")
_BOTH_FLAGS = ("SECCOMP_FILTER_FLAG_SPEC_ALLOW",)

# libseccomp compares only the low 32 bits of an argument on these.
_NARROW_ARCHES = frozenset({
    "SCMP_ARCH_X86", "SCMP_ARCH_X32", "SCMP_ARCH_ARM", "SCMP_ARCH_MIPS", "SCMP_ARCH_MIPSEL",
    "SCMP_ARCH_MIPS64N32", "SCMP_ARCH_MIPSEL64N32", "SCMP_ARCH_PPC", "SCMP_ARCH_S390",
    "SCMP_ARCH_PARISC"})

_PROFILE_KEYS = frozenset({"defaultAction", "defaultErrnoRet", "architectures", "flags",
                           "listenerPath", "listenerMetadata", "syscalls"})
_ENTRY_KEYS = frozenset({"names", "action", "errnoRet", "args"})
_ARG_KEYS = frozenset({"index", "value", "valueTwo", "op"})


def native_arch() -> str:
    """The OCI name of the architecture runc always admits (libseccomp's native)."""
    machine = os.uname().machine
    if machine not in MACHINE_ARCH:
        raise ShimError(f"seccomp: unknown machine architecture {machine!r}; cannot tell which "
                        "architecture runc admits")
    return SCMP_ARCH[MACHINE_ARCH[machine]]


# -- reading a profile -----------------------------------------------------------


def _uint(value: Any, bits: int, where: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 1 << bits:
        raise ShimError(f"{where}: {value!r} is not a {bits}-bit unsigned number")
    return value


def _action(name: Any, ret: Any, where: str) -> Action:
    if name not in _PRECEDENCE:
        raise ShimError(f"{where}: unknown seccomp action {name!r}")
    name = _SAME.get(name, name)
    if name in _WITH_DATA:
        return (_PRECEDENCE[name], name, EPERM if ret is None else _uint(ret, 16, where))
    if ret is not None:
        raise ShimError(f"{where}: an errno value is only for SCMP_ACT_ERRNO and SCMP_ACT_TRACE")
    return (_PRECEDENCE[name], name, None)


def _stricter(config: Action, policy: Action) -> Action:
    """The kernel's pick between two stacked filters; the container's on a tie."""
    return policy if policy[0] > config[0] else config


def _object(doc: Any, fields: frozenset[str], where: str) -> dict[str, Any]:
    """`doc` as an object with only the fields runc knows: a field we do not
    know might say something we would silently drop."""
    if not isinstance(doc, dict):
        raise ShimError(f"{where}: expected an object")
    unknown = set(doc) - fields
    if unknown:
        raise ShimError(f"{where}: unknown field(s) {sorted(unknown)}; refusing to guess what "
                        "they mean")
    return doc


def _cond(arg: Any, where: str) -> Cond | bool:
    """One OCI comparison, normalised: a Cond, True (always holds) or False (never)."""
    op = _object(arg, _ARG_KEYS, where).get("op")
    if op not in _OPS:
        raise ShimError(f"{where}: unknown comparison {op!r}")
    value = _uint(arg.get("value", 0), 64, where + ".value")
    two = _uint(arg.get("valueTwo", 0), 64, where + ".valueTwo")
    if op == MASKED:
        if two & ~value:
            return False  # (arg & mask) can never equal a value with bits outside the mask
        if value == 0:
            return True
        return (EQ, two, 0) if value == U64 else (MASKED, value, two)
    # Kept as written (a rewrite such as GT 0xffffffff -> GE 0x100000000
    # would change its meaning on a 32-bit architecture); only the
    # comparisons that always or never hold are recognised.
    interval = _interval((op, value, 0))
    if interval is not None:
        whole = _from_interval(*interval)
        if isinstance(whole, bool):
            return whole
    return (op, value, 0)


def _rule_conjs(args: Any, where: str) -> list[Conj]:
    """An entry's conditions as runc hands them to libseccomp: one conjunction,
    or one per condition when an index repeats (runc ORs those)."""
    if not isinstance(args, list):
        raise ShimError(f"{where}: expected a list")
    parsed: list[tuple[int, Cond | bool]] = []
    for i, arg in enumerate(args):
        index = _uint(arg.get("index") if isinstance(arg, dict) else None, 3,
                      f"{where}[{i}].index")
        if index > 5:
            raise ShimError(f"{where}[{i}].index: {index} is not 0..5")
        parsed.append((index, _cond(arg, f"{where}[{i}]")))
    indexes = [i for i, _ in parsed]
    groups = [[p] for p in parsed] if len(set(indexes)) != len(indexes) else [parsed]
    conjs = []
    for group in groups:
        if any(c is False for _, c in group):
            continue  # never matches
        conjs.append(tuple(sorted((i, c) for i, c in group if isinstance(c, tuple))))
    return conjs


class Profile:
    """An OCI linux.seccomp object as runc would load it."""

    def __init__(self, doc: Any, where: str, native: str) -> None:
        doc = _object(doc, _PROFILE_KEYS, where)
        self.default = _action(doc.get("defaultAction"), doc.get("defaultErrnoRet"),
                               where + ".defaultAction")
        arches = doc.get("architectures") or []
        flags = doc.get("flags") or []
        for key, value in (("architectures", arches), ("flags", flags)):
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise ShimError(f"{where}.{key}: expected a list of names")
        self.arches = list(dict.fromkeys([native] + arches))  # runc always admits native
        self.flags = list(flags)
        self.listener = {k: doc[k] for k in ("listenerPath", "listenerMetadata") if k in doc}
        # syscall name -> [(action, unconditional, conjunctions)] in the order runc adds them
        self.rules: dict[str, list[tuple[Action, bool, list[Conj]]]] = {}
        entries = doc.get("syscalls") or []
        if not isinstance(entries, list):
            raise ShimError(f"{where}.syscalls: expected a list")
        for i, entry in enumerate(entries):
            self._entry(entry, f"{where}.syscalls[{i}]")

    def _entry(self, entry: Any, where: str) -> None:
        names = _object(entry, _ENTRY_KEYS, where).get("names")
        if not isinstance(names, list) or not names or \
                not all(isinstance(n, str) and n for n in names):
            raise ShimError(f"{where}.names: expected a list of syscall names")
        action = _action(entry.get("action"), entry.get("errnoRet"), where + ".action")
        if action[1:] == self.default[1:]:
            return  # runc skips a rule that does what the default does
        args = entry.get("args")
        unconditional = not args
        always: Conj = ()
        conjs = [always] if unconditional else _rule_conjs(args, where + ".args")
        for name in names:
            self.rules.setdefault(name, []).append((action, unconditional, conjs))


# -- comparisons on one argument -----------------------------------------------------


def _interval(c: Cond) -> tuple[int, int] | None:
    op, v, _ = c
    if op == EQ:
        return v, v
    if op == "SCMP_CMP_LT":
        return (0, v - 1) if v > 0 else (1, 0)  # empty
    if op == "SCMP_CMP_LE":
        return 0, v
    if op == "SCMP_CMP_GT":
        return (v + 1, U64) if v < U64 else (1, 0)
    if op == "SCMP_CMP_GE":
        return v, U64
    return None


def _from_interval(lo: int, hi: int) -> Cond | bool | None:
    """[lo, hi] as one comparison; True/False for all/none; None if it takes two."""
    if lo > hi:
        return False
    if lo == 0 and hi == U64:
        return True
    if lo == hi:
        return (EQ, lo, 0)
    if lo == 0:
        return ("SCMP_CMP_LE", hi, 0)
    if hi == U64:
        return ("SCMP_CMP_GE", lo, 0)
    return None


def _holds(c: Cond, x: int) -> bool:
    op, v, two = c
    if op == MASKED:
        return x & v == two
    if op == NE:
        return x != v
    lo, hi = _interval(c)  # type: ignore[misc]  # every other op is an interval
    return lo <= x <= hi


def _wide(c: Cond) -> bool:
    return c[1] > U32 or c[2] > U32


def _and(a: Cond, b: Cond, narrow: bool) -> Cond | bool | None:
    """One comparison equivalent to `a AND b`; True/False; None if none exists.

    `narrow`: a 32-bit architecture is admitted, where libseccomp compares
    the low 32 bits only: the reasoning here is 64-bit, so it is trusted
    only where both inputs and the result fit in 32 bits."""
    if a == b:
        return a
    if narrow and (_wide(a) or _wide(b)):
        return None
    both = _and64(a, b)
    if narrow and isinstance(both, tuple) and _wide(both):
        return None  # e.g. GT 0xffffffff AND GE 3 is GE 0x100000000: 0 on 32 bits
    return both


def _and64(a: Cond, b: Cond) -> Cond | bool | None:
    for x, y in ((a, b), (b, a)):
        if x[0] == EQ:
            return x if _holds(y, x[1]) else False
    if a[0] == MASKED and b[0] == MASKED:
        if (a[2] ^ b[2]) & a[1] & b[1]:
            return False  # the two masks disagree on a bit both look at
        mask, datum = a[1] | b[1], a[2] | b[2]
        return (EQ, datum, 0) if mask == U64 else (MASKED, mask, datum)
    ia, ib = _interval(a), _interval(b)
    if ia is not None and ib is not None:
        return _from_interval(max(ia[0], ib[0]), min(ia[1], ib[1]))
    for x, y in ((a, b), (b, a)):
        if x[0] == NE:
            iy = _interval(y)
            if y[0] == NE:
                return None  # x != v and x != w: two comparisons
            if iy is not None:
                lo, hi = iy
                if not lo <= x[1] <= hi:
                    return y
                if x[1] == lo:
                    return _from_interval(lo + 1, hi)
                if x[1] == hi:
                    return _from_interval(lo, hi - 1)
                return None
            return y if y[2] != x[1] & y[1] else None  # masked: the excluded value never matches
    # a masked comparison and an interval
    m, i = (a, b) if a[0] == MASKED else (b, a)
    lo, hi = _interval(i)  # type: ignore[misc]
    least, most = m[2], m[2] | (~m[1] & U64)
    if most < lo or least > hi:
        return False
    if lo <= least and most <= hi:
        return m
    return None


def _conj_and(a: Conj, b: Conj, narrow: bool) -> tuple[Conj | None, Conj | None]:
    """(exact conjunction or None, a conjunction that contains it or None).

    Both None: the two never hold together. (None, wider): they cannot be
    said as one rule; `wider` keeps only b's comparison where the two
    could not be merged."""
    merged: dict[int, Cond] = dict(a)
    exact = True
    for index, cond in b:
        if index not in merged:
            merged[index] = cond
            continue
        both = _and(merged[index], cond, narrow)
        if both is False:
            return None, None
        if both is None:
            exact = False
            merged[index] = cond
        elif both is True:
            del merged[index]
        else:
            merged[index] = both
    conj = tuple(sorted(merged.items()))
    return (conj if exact else None), conj


def _disjoint(a: Conj, b: Conj, narrow: bool) -> bool:
    """True when no argument values satisfy both (False when unsure)."""
    return _conj_and(a, b, narrow) == (None, None)


# -- one syscall -----------------------------------------------------------------------


class Side:
    """One profile's decision for one syscall: `const` everywhere, or each
    action of `groups` on its region (regions of different actions never
    overlap) and `default` elsewhere."""

    def __init__(self, const: Action | None, groups: list[tuple[Action, Region]],
                 default: Action) -> None:
        self.const, self.groups, self.default = const, groups, default

    @staticmethod
    def of(profile: Profile, name: str, narrow: bool, notes: list[str], who: str,
           budget: list[int] | None = None) -> "Side":
        rules = profile.rules.get(name, [])
        for action, unconditional, _ in rules:
            if unconditional:
                return Side(action, [], profile.default)  # libseccomp: it overrides the rest
        if not rules:
            return Side(profile.default, [], profile.default)
        by_action: dict[Action, Region] = {}
        for action, _, conjs in rules:
            by_action.setdefault(action, []).extend(conjs)
        groups = sorted(by_action.items(), reverse=True)
        sizes = [len(r) for _, r in groups]
        pairs = sum(a * b for i, a in enumerate(sizes) for b in sizes[i + 1:])
        # Past the bound on pairs, read as overlapping (never weaker) unchecked.
        if pairs > MAX_PAIRS_PER_SYSCALL or not _spend(budget, pairs) or any(
                not _disjoint(x, y, narrow)
                for i, (_, rx) in enumerate(groups) for _, ry in groups[i + 1:]
                for x in rx for y in ry):
            # Overlapping rules with different actions: libseccomp decides by
            # the shape of its rule tree, not by their order. Read as if the
            # strictest applied to all of them (never weaker than the truth).
            notes.append(f"seccomp: {who} profile's rules for {name} overlap with different "
                         f"actions; read as {groups[0][0][1]} for all of them")
            groups = [(groups[0][0], [c for _, r in groups for c in r])]
        return Side(None, groups, profile.default)

    def pieces(self) -> list[tuple[Action, Region | None]]:
        """(action, region); region None is "where no rule matches"."""
        if self.const is not None:
            return [(self.const, [()])]
        return [(a, r) for a, r in self.groups] + [(self.default, None)]


def _implies(a: Conj, b: Conj, narrow: bool) -> bool:
    """True when every call `a` matches `b` matches too (False when unsure)."""
    conds = dict(a)
    for index, cond in b:
        if index not in conds or _and(conds[index], cond, narrow) != conds[index]:
            return False
    return True


def _absorb(region: Region, sources: set[Conj], narrow: bool,
            budget: list[int] | None) -> Region:
    """`region` without the conjunctions another one of it contains, checked
    against the ones that are a profile's own (`sources`): the products
    x AND y of a conjunction with itself or with a wider one come out as x,
    and x contains every other product with x. Without this, merging a
    profile with one already merged (a bundle started twice) multiplied its
    rules by ~10 each time. The region's calls stay the same."""
    keep = [c for c in region if c in sources]
    kept = set(keep)
    if not _spend(budget, (len(region) - len(kept)) * len(keep)):
        return region  # a bounded merge first: this only makes it smaller
    return [c for c in region if c in kept or
            not any(_implies(c, q, narrow) for q in keep)]


def merge_syscall(name: str, config: Side, policy: Side, default: Action, narrow: bool,
                  notes: list[str], budget: list[int] | None = None
                  ) -> list[tuple[Action, Region]]:
    """The merged rules for one syscall: [(action, region)], regions of
    different actions disjoint, `default` everywhere else. `budget` is
    [pairs left for the whole profile], spent here (MAX_PAIRS)."""
    rows, cols = config.pieces(), policy.pieces()
    cells = {(i, j): _stricter(rows[i][0], cols[j][0])
             for i in range(len(rows)) for j in range(len(cols))
             if rows[i][1] is not None or cols[j][1] is not None}
    pairs = sum(len(rows[i][1] or ()) * len(cols[j][1] or ()) for i, j in cells)
    if pairs > MAX_PAIRS_PER_SYSCALL or not _spend(budget, pairs):
        notes.append(f"seccomp: {name}: the two profiles' conditions make {pairs} combinations "
                     f"(at most {MAX_PAIRS_PER_SYSCALL} per syscall, {MAX_PAIRS} per profile)")
        return _strictest(name, cells, notes)
    sources = {c for _, r in rows + cols for c in (r or ())}
    values = sorted({v for v in cells.values() if v != default}, reverse=True)
    out: list[tuple[Action, Region]] = []
    for value in values:
        cover = value[0] > default[0]  # must be said: the default would be weaker
        region: Region = []
        covered: set[tuple[int, int]] = set()
        for i, (_, r) in enumerate(rows):
            row = {c for c in cells if c[0] == i}
            if r is not None and all(cells[c] == value for c in row):
                region += r
                covered |= row
        for j, (_, r) in enumerate(cols):
            col = {c for c in cells if c[1] == j}
            if r is not None and all(cells[c] == value for c in col):
                region += r
                covered |= col
        for (i, j), v in cells.items():
            if v != value or (i, j) in covered:
                continue
            ri, rj = rows[i][1], cols[j][1]
            if ri is None or rj is None:
                # Only said by "where no rule of one profile matches": a
                # negation, which seccomp rules cannot say.
                if cover:
                    return _strictest(name, cells, notes)
                _left_to_default(name, value, default, notes)
                continue
            for x in ri:
                for y in rj:
                    exact, wider = _conj_and(x, y, narrow)
                    if exact is not None:
                        region.append(exact)
                    elif wider is not None:
                        if cover:
                            return _strictest(name, cells, notes)
                        _left_to_default(name, value, default, notes)
        region = _absorb(list(dict.fromkeys(region)), sources, narrow, budget)
        if region:
            out.append((value, [()] if () in region else region))
    return _fit_libseccomp(name, out, default, cells, notes)


def _fit_libseccomp(name: str, out: list[tuple[Action, Region]], default: Action,
                    cells: dict[tuple[int, int], Action],
                    notes: list[str]) -> list[tuple[Action, Region]]:
    """Keep to the rule sets libseccomp 2.5.4 decides as written.

    Its rule tree misplaces some calls of a syscall with several
    conditional rules when one of them compares more than one argument, or
    compares with a constant of 32 bits or more (a 64-bit comparison is two
    tests, on the high and the low word; after a failed test deep in one
    rule it goes on to the next with the accumulator still holding the
    other word or argument). Measured on random rule sets
    (tests/integration/test_shim_seccomp_merge_property.py): 13% of the
    sets with a several-argument rule, 7% of the sets of one-comparison
    rules with a wide constant, none of the sets of one-comparison rules
    with 32-bit constants, and none with a single rule. So either every
    rule is one comparison with 32-bit constants, or there is one
    conditional rule. Rules that allow more than the default and break this
    are left out (the default then decides; reported); if it still does not
    hold, the syscall gets the strictest action of its cells.
    """
    def fits(rules: list[tuple[Action, Region]]) -> bool:
        conjs = [c for _, region in rules for c in region if c]
        return len(conjs) <= 1 or all(_plain(c) for c in conjs)

    if fits(out):
        return out
    kept = []
    for action, region in out:
        if action[0] <= default[0]:
            plain = [c for c in region if not c or _plain(c)]
            if len(plain) < len(region):
                _left_to_default(name, action, default, notes)
            region = plain
        if region:
            kept.append((action, region))
    return kept if fits(kept) else _strictest(name, cells, notes)


def _plain(conj: Conj) -> bool:
    """One comparison, with constants that fit in 32 bits."""
    return len(conj) == 1 and not _wide(conj[0][1])


def _left_to_default(name: str, value: Action, default: Action, notes: list[str]) -> None:
    """A cell weaker than (or as strict as) the default that no rule can say:
    the default decides there. Never weaker; reported, since it may deny a
    call both profiles allow."""
    said = value[1] if value[2] is None else f"{value[1]}({value[2]})"
    notes.append(f"seccomp: {name}: some calls get the default action where stacking the two "
                 f"profiles would give {said}: their conditions cannot be said as one rule")


def _strictest(name: str, cells: dict[tuple[int, int], Action],
               notes: list[str]) -> list[tuple[Action, Region]]:
    action = max(cells.values())
    notes.append(f"seccomp: {name}: the two profiles' conditions cannot be combined exactly; "
                 f"{action[1]} for every call (the strictest either would give)")
    return [(action, [()])]


# -- the whole profile ------------------------------------------------------------------


def _flags(config: Profile, policy: Profile) -> list[str]:
    for flag in config.flags + policy.flags:
        if flag not in _UNION_FLAGS + _BOTH_FLAGS:
            raise ShimError(f"seccomp: unknown filter flag {flag!r}; refusing to guess whether "
                            "it weakens the filter")
    union = [f for f in dict.fromkeys(config.flags + policy.flags) if f in _UNION_FLAGS]
    both = [f for f in config.flags if f in _BOTH_FLAGS and f in policy.flags]
    return union + both


def _action_json(action: Action, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {f"{prefix}Action" if prefix else "action": action[1]}
    if action[2] is not None:
        out[f"{prefix}ErrnoRet" if prefix else "errnoRet"] = action[2]
    return out


def _arg_json(index: int, cond: Cond) -> dict[str, Any]:
    op, value, two = cond
    if op == MASKED:
        return {"index": index, "value": value, "valueTwo": two, "op": op}
    return {"index": index, "value": value, "op": op}


def intersect(config_doc: Any, policy_doc: Any, native: str | None = None
              ) -> tuple[dict[str, Any], list[str]]:
    """(the merged OCI linux.seccomp object, notes on where it is stricter
    than stacking the two would be). Raises ShimError on a profile it
    cannot read."""
    native = native or native_arch()
    config = Profile(config_doc, "config.json: linux.seccomp", native)
    policy = Profile(policy_doc, "policy seccomp profile", native)
    if policy.listener:
        raise ShimError("policy seccomp profile: a policy cannot bring a seccomp listener")
    notes: list[str] = []
    arches = [a for a in config.arches if a in policy.arches]
    narrow = any(a in _NARROW_ARCHES for a in arches)
    default = _stricter(config.default, policy.default)
    merged: dict[tuple[Action, Conj], list[str]] = {}
    unconditional: dict[Action, list[str]] = {}
    named = sorted(set(config.rules) | set(policy.rules))
    budget = [MAX_PAIRS]
    for name in named:
        rules = merge_syscall(
            name, Side.of(config, name, narrow, notes, "the container's", budget),
            Side.of(policy, name, narrow, notes, "the policy's", budget), default, narrow,
            notes, budget)
        for action, region in rules:
            if region == [()]:
                unconditional.setdefault(action, []).append(name)
            else:
                for conj in region:
                    merged.setdefault((action, conj), []).append(name)
    syscalls: list[dict[str, Any]] = []
    for action in sorted(unconditional, reverse=True):
        syscalls.append({"names": unconditional[action], **_action_json(action)})
    for (action, conj), names in merged.items():
        syscalls.append({"names": names, **_action_json(action),
                         "args": [_arg_json(i, c) for i, c in conj]})
    if default[0] > ERRNO_RANK:
        # runc answers ENOSYS for numbers above the highest syscall a profile
        # names; list every name of both (runc skips this rule for libseccomp
        # but counts it) so those numbers are the same as under either alone.
        said = {n for e in syscalls for n in e["names"]}
        rest = [n for n in named if n not in said]
        if rest:
            syscalls.append({"names": rest, **_action_json(default)})
    out: dict[str, Any] = {**_action_json(default, "default"), "architectures": arches}
    flags = _flags(config, policy)
    if flags:
        out["flags"] = flags
    out.update(config.listener)
    out["syscalls"] = syscalls
    return out, list(dict.fromkeys(notes))


# -- cached, for the start path -------------------------------------------------------------


def intersect_cached(config_doc: Any, policy_doc: Any, policy_key: str,
                     cache_dir: str | None) -> tuple[dict[str, Any], list[str]]:
    """intersect(), remembered under `cache_dir` per (container profile,
    policy, native architecture): most containers of a node share the
    runtime's default profile, so the intersection is computed once per
    policy. `policy_key` names the policy's profile (its Plan's digest)."""
    from enforcer import fastjson

    native = native_arch()
    try:
        import _sha256  # a C module; hashlib would load OpenSSL (~5 ms)

        key = _sha256.sha256(fastjson.dumps(
            [MERGE_FORMAT, native, policy_key, config_doc], sort_keys=True).encode()).hexdigest()
    except ImportError:  # pragma: no cover - other Pythons
        key = None
    except (TypeError, ValueError):
        raise ShimError("config.json: linux.seccomp is not plain JSON data") from None
    path = os.path.join(cache_dir, "seccomp", key + ".json") if cache_dir and key else None
    if path:
        from enforcer.atomicfile import read_private

        data = read_private(path, 16 << 20)
        if data is not None:
            try:
                doc = fastjson.loads(data)
                if isinstance(doc, dict) and doc.get("key") == key and \
                        isinstance(doc.get("merged"), dict) and isinstance(doc.get("notes"), list):
                    return doc["merged"], doc["notes"]
            except ValueError:
                pass
    merged, notes = intersect(config_doc, policy_doc, native)
    if path:
        from enforcer.atomicfile import write_atomic

        try:
            os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
            write_atomic(path, fastjson.dumps({"key": key, "merged": merged, "notes": notes}
                                              ).encode(), mode=0o600, tag="seccomp")
        except OSError:
            pass  # a cache we cannot write costs time on the next start, not safety
    return merged, notes
