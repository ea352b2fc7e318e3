"""`enforcer record --merge`: the union of several recordings.

One run rarely exercises every path of a program, so recordings of
several runs are merged: the result allows what any of them allows (counts
added) and nothing else. What each file allows is read from the file
itself through the policy loader (so a syscall removed by hand in review
stays removed); the counts come from its `# enforcer-record:` line.

Recordings of different bases, architectures or default actions describe
different things; merging them is refused with a message naming both.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from enforcer.policy.loader import _looks_like_path, extends_spec_for, load_policy, resolve_extends
from enforcer.policy.model import Policy, SyscallRule
from enforcer.record.learn import Learned
from enforcer.record.recorder import RecordError
from enforcer.record.render import Provenance, read_metadata


@dataclass
class Recording:
    path: str
    policy: Policy
    meta: dict[str, Any]
    base_path: str  # the base, resolved to a file


def read_recording(path: str) -> Recording:
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise RecordError(f"{path}: cannot read: {e.strerror}") from None
    try:
        meta = read_metadata(text, path)
    except ValueError as e:
        raise RecordError(str(e)) from None
    policy = load_policy(path)  # PolicyErrors (file:line) go to the user as they are
    base = meta.get("base")
    if not isinstance(base, str):
        raise RecordError(f"{path}: recording metadata names no base")
    try:
        base_path = resolve_extends(base, os.path.abspath(path))
    except Exception as e:  # PolicyErrors: say which recording
        raise RecordError(f"{path}: its base {base!r} cannot be found: {e}") from None
    return Recording(path=path, policy=policy, meta=meta, base_path=base_path)


def allowed_by(rec: Recording) -> tuple[dict[str, int], list[SyscallRule]]:
    """(unconditionally allowed name -> count, conditional rules) of one file."""
    counts = rec.meta.get("counts") or {}
    allow: dict[str, int] = {}
    rules: list[SyscallRule] = []
    for rule in rec.policy.syscalls.rules:
        if rule.args:
            rules.append(rule)
        elif not rule.action.blocks:
            allow[rule.syscall] = int(counts.get(rule.syscall, 0))
    return allow, rules


def _check_same(recs: list[Recording], what: str, key: Any) -> None:
    first = recs[0]
    for other in recs[1:]:
        if key(other) != key(first):
            raise RecordError(
                f"cannot merge recordings with different {what}: {first.path} has "
                f"{key(first)!r}, {other.path} has {key(other)!r}")


def merge(paths: list[str], default_action: str | None = None) -> tuple[Learned, Provenance]:
    if len(paths) < 2:
        raise RecordError("--merge needs at least two recordings")
    recs = [read_recording(p) for p in paths]
    _check_same(recs, "bases", lambda r: r.base_path)
    # Syscall names mean different things on different hosts (`open` has no
    # aarch64 number): recordings of two host architectures are not added up.
    # Which of the admitted architectures a run happened to use may differ.
    _check_same(recs, "architectures", lambda r: r.meta.get("host_arch"))
    _check_same(recs, "target architectures", lambda r: r.policy.syscalls.architectures)
    if default_action is None:
        _check_same(recs, "default actions (pass --default-action to choose one)",
                    lambda r: str(r.policy.syscalls.default_action))
        default_action = str(recs[0].policy.syscalls.default_action)

    learned = Learned()
    seen_rules: list[SyscallRule] = []
    runs: list[dict[str, Any]] = []
    records = 0
    for rec in recs:
        allow, rules = allowed_by(rec)
        for name, n in allow.items():
            learned.allow[name] = learned.allow.get(name, 0) + n
        for rule in rules:
            key = (rule.syscall, rule.action, rule.args)
            if key in {(r.syscall, r.action, r.args) for r in seen_rules}:
                continue
            seen_rules.append(rule)
        for name, value in (rec.meta.get("left_out") or {}).items():
            n, why = int(value[0]), str(value[1])
            prev = learned.left_out.get(name)
            learned.left_out[name] = (n + (prev[0] if prev else 0), why)
        runs.extend(rec.meta.get("runs") or [])
        records += int(rec.meta.get("records") or 0)
    # Counts of conditionally allowed syscalls, summed over the recordings.
    for rule in seen_rules:
        total = sum(int((r.meta.get("counts") or {}).get(rule.syscall, 0)) for r in recs
                    if any(x.syscall == rule.syscall for x in allowed_by(r)[1]))
        learned.rules.append((rule, total, "kept from the recordings (the base's conditions)"))
    # A name allowed outright by one recording needs no conditional rule.
    learned.rules = [t for t in learned.rules if t[0].syscall not in learned.allow]
    for name in learned.allowed_names():
        learned.left_out.pop(name, None)

    base_spec = recs[0].meta["base"]
    if _looks_like_path(base_spec):
        base_spec = extends_spec_for(recs[0].base_path)
    prov = Provenance(base=base_spec, host_arch=str(recs[0].meta.get("host_arch")),
                      arches_seen=tuple(sorted({a for r in recs for a in r.meta.get("arches_seen") or ()})),
                      default_action=default_action, records=records, runs=runs,
                      merged_from=tuple(paths))
    # Files, ports, limits and the user: merged only when every recording
    # learned them (recordings made before enforcer learned them have none).
    rests = [r.meta.get("rest") for r in recs]
    if all(isinstance(x, dict) for x in rests):
        prov.merged_rests = rests  # type: ignore[assignment]
    return learned, prov
