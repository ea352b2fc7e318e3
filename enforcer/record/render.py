"""Write a learned policy as reviewable YAML (text, so it can carry comments).

The file is meant to be read in code review: a header says when, what and
how much was recorded; every allowed syscall carries how often it was seen;
groups are used only where every member was seen; what was seen but left
out is listed with the reason. One comment line, `# enforcer-record: {...}`,
holds the same facts as JSON so `enforcer record --merge` can add recordings
up without guessing from prose.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from enforcer.policy import names
from enforcer.policy.model import ArgCondition, SyscallRule
from enforcer.policy.yamlsafe import yaml_scalar
from enforcer.record.learn import Learned, choose_groups

if TYPE_CHECKING:
    from enforcer.policy.model import Policy
    from enforcer.record.learn_access import LearnedRest

METADATA_PREFIX = "# enforcer-record: "
METADATA_VERSION = 1
# Wrap the per-group comment lines at about this width.
COMMENT_WIDTH = 96


@dataclass
class Provenance:
    """Where a learned policy came from (the header and the metadata line)."""

    base: str  # the `extends` value, as it will be written
    host_arch: str  # native architecture of the recording host (libseccomp name)
    arches_seen: tuple[str, ...]  # architectures of the records (names)
    default_action: str  # YAML text, e.g. "errno EPERM"
    records: int
    runs: list[dict[str, Any]] = field(default_factory=list)  # one per recording
    merged_from: tuple[str, ...] = ()

    rest: dict[str, Any] | None = None  # the learned rest, for --merge (rest_facts)
    # Set by --merge: the rests of the recordings merged, when every one has one.
    merged_rests: list[dict[str, Any]] | None = None

    def metadata(self, learned: Learned) -> dict[str, Any]:
        counts = dict(sorted(learned.allow.items()))
        for rule, seen, _ in learned.rules:
            counts[rule.syscall] = seen
        return {
            "version": METADATA_VERSION,
            "base": self.base,
            "host_arch": self.host_arch,
            "arches_seen": sorted(self.arches_seen),
            "default_action": self.default_action,
            "records": self.records,
            "counts": dict(sorted(counts.items())),
            "left_out": {k: list(v) for k, v in sorted(learned.left_out.items())},
            "runs": self.runs,
            **({"rest": self.rest} if self.rest is not None else {}),
        }


def policy_name_for(out_path: str) -> str:
    """A valid policy name from the output file's name (`web.yaml` -> `web`)."""
    stem = os.path.basename(out_path).rsplit(".", 1)[0].lower()
    stem = re.sub(r"[^a-z0-9._-]+", "-", stem).strip("-._")[:63]
    return stem if names.is_policy_name(stem) else "recorded"


def one_line(text: object) -> str:
    """Text safe inside a one-line YAML comment (a command may hold newlines)."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(text))


def _hex(v: int) -> str:
    return str(v) if v < 10 else hex(v)


def _arg_text(c: ArgCondition) -> str:
    parts = [f"index: {c.index}", f"op: {c.op.value}", f"value: {_hex(c.value)}"]
    if c.mask is not None:
        parts.append(f"mask: {_hex(c.mask)}")
    return "{" + ", ".join(parts) + "}"


def _wrap_comment(prefix: str, items: list[str], indent: str) -> list[str]:
    lines: list[str] = []
    line = f"{indent}# {prefix}"
    for i, item in enumerate(items):
        piece = item + ("," if i < len(items) - 1 else "")
        if len(line) + 1 + len(piece) > COMMENT_WIDTH and not line.endswith(prefix):
            lines.append(line)
            line = f"{indent}#   {piece}"
        else:
            line = f"{line} {piece}" if not line.endswith("#") else f"{line}{piece}"
    lines.append(line)
    return lines


def render(learned: Learned, prov: Provenance, *, name: str, arches: tuple[str, ...],
           when: str, rest: "LearnedRest | None" = None, base: "Policy | None" = None) -> str:
    """The YAML text of the learned policy."""
    allowed = set(learned.allow)
    chosen = choose_groups(allowed, arches)
    covered = set().union(*(m for _, m in chosen)) if chosen else set()
    total_names = len(learned.allowed_names())

    out: list[str] = []
    out.append("# Learned by `enforcer record`. Review it before use: `enforcer diff BASE THIS`,")
    out.append("# `enforcer lint THIS`, then run it in `mode: audit` for a while (docs/record.md).")
    if prov.merged_from:
        out.append(one_line(f"# Merged ({when}) from {len(prov.merged_from)} recordings: "
                            + ", ".join(prov.merged_from)))
    for run in prov.runs:
        out.append(one_line(f"# Recorded {run.get('when', '?')} on "
                            f"{run.get('host_arch', prov.host_arch)}: {run.get('command', '?')}"))
        out.append(one_line(f"#   {run.get('records', 0)} audit records from "
                            f"{run.get('processes', '?')} process(es), none lost; workload exit "
                            f"status {run.get('exit_status', '?')}"))
    out.append(f"# Allows {total_names} syscalls, seen in {prov.records} audit records in all "
               f"(architectures seen: {', '.join(sorted(prov.arches_seen)) or 'none'}).")
    out.append(METADATA_PREFIX + json.dumps(prov.metadata(learned), sort_keys=True,
                                            separators=(",", ":")))
    out.append("version: 1")
    out.append(f"name: {yaml_scalar(name)}")
    out.append(f"description: {json.dumps(f'Learned from a recording, extending {prov.base}')}")
    out.append(f"extends: {yaml_scalar(prov.base)}")
    out.append("")
    out.append("syscalls:")
    out.append("  inherit: false                 # only what was seen: the base's syscall list "
               "does not apply")
    out.append(f"  default: {prov.default_action}")
    out.append("  log_denials: true")
    out.append("  allow:")
    if not allowed:
        out[-1] = "  allow: []"
    for gname, members in chosen:
        items = [f"{m} {learned.allow[m]}" for m in sorted(members)]
        out.extend(_wrap_comment(f"@{gname}:", items, "    "))
        out.append(f'    - "@{gname}"')
    width = max((len(n) for n in allowed - covered), default=0)
    for n in sorted(allowed - covered):
        out.append(f"    - {n:<{width}}  # {learned.allow[n]}")
    if learned.rules:
        out.append("  rules:")
        for rule, seen, why in learned.rules:
            seen_text = f"seen {seen} time(s)" if seen else "not seen itself"
            out.append(one_line(f"    # {rule.syscall} {seen_text}; {why}"))
            out.append(f"    - syscalls: [{rule.syscall}]")
            out.append(f"      action: {rule.action}")
            out.append("      args:")
            for c in rule.args:
                out.append(f"        - {_arg_text(c)}")
    if learned.left_out:
        out.append("")
        out.append("# Seen but not allowed here:")
        for n, (seen, why) in sorted(learned.left_out.items()):
            out.append(one_line(f"#   {n} ({seen}): {why}"))
    if rest is not None and base is not None:
        out.extend(render_rest(rest, base))
    return "\n".join(out) + "\n"


def _size(n: int) -> str:
    """Bytes as the policy format writes sizes (Mi when whole)."""
    return f"{n >> 20}Mi" if n % (1 << 20) == 0 else str(n)


def _mib(n: int) -> str:
    return f"{n / (1 << 20):.1f} MiB"


def _paths(key: str, paths: list[tuple[str, bool]], indent: str) -> list[str]:
    if not paths:
        return [f"{indent}{key}: []"]
    out = [f"{indent}{key}:"]
    for path, optional in paths:
        text = yaml_scalar(path)
        out.append(f"{indent}  - {{path: {text}, optional: true}}   # gone after the recording"
                   if optional else f"{indent}  - {text}")
    return out


def render_rest(rest: "LearnedRest", base: "Policy") -> list[str]:
    """The learned user, capabilities, file system, limits and Landlock
    section (docs/record.md, "What else is learned")."""
    from enforcer.record.learn_access import (MEMORY_FACTOR, MEMORY_MIN_HEADROOM, PIDS_FACTOR,
                                              PIDS_MIN_HEADROOM)

    out = [""]
    if rest.dynamic_user:
        out.append("# The recording saw nothing that needed root: no capability, no root-owned")
        out.append("# file written or read that others could not, no uid change.")
        out.append("user: {dynamic: true}")
    elif rest.capabilities is not None:
        out.append("# Needed root (kept, with only the capabilities seen needed):")
    for what, why in sorted(rest.needs.items()):
        out.append(one_line(f"#   {what}: {why}"))
    if rest.capabilities is not None:
        out.append("capabilities:")
        out.append(f"  keep: [{', '.join(rest.capabilities)}]")
    if rest.namespaces is not None:
        out.append(f"namespaces: [{', '.join(rest.namespaces)}]   # its own processes only "
                   "(pid), IPC and host name; mount: for the read-only root")
    elif "mount" not in base.namespaces:
        out.append(f"namespaces: [{', '.join([*base.namespaces, 'mount'])}]   # for the "
                   "read-only root")
    out.append("")
    out.append("filesystem:")
    out.append("  read_only_root: true")
    if rest.writable:
        out.append("  writable_paths:                # where the workload wrote")
        out.extend(f"    - {yaml_scalar(p)}" for p in rest.writable)
    if rest.memory_max is not None or rest.pids_max is not None:
        out.append("")
        out.append(f"# Limits: the peaks seen, times {MEMORY_FACTOR} and at least "
                   f"{MEMORY_MIN_HEADROOM >> 20} MiB more (memory), times {PIDS_FACTOR} and at "
                   f"least {PIDS_MIN_HEADROOM} more (tasks).")
        out.append("resources:")
        if rest.memory_max is not None:
            out.append(f"  memory: {{max: {_size(rest.memory_max)}}}   # peak "
                       f"{_mib(rest.peaks['memory'])}")
        if rest.pids_max is not None:
            out.append(f"  pids: {{max: {rest.pids_max}}}   # peak {rest.peaks['pids']} tasks")
    rlimits = []
    if rest.memlock is not None and not any(r.resource == "MEMLOCK" for r in base.rlimits):
        rlimits.append(f"  memlock: {rest.memlock}   # no mlock seen: locking more memory than "
                       "this fails")
    if not any(r.resource == "CORE" for r in base.rlimits):
        rlimits.append("  core: 0                        # no core dumps (they hold its memory)")
    if rlimits:
        out.append("rlimits:")
        out.extend(rlimits)
    g = rest.grants
    out.append("")
    out.append("# What the workload read, wrote and ran, collapsed to directories")
    out.append("# (docs/record.md, \"Files and ports\"), and the TCP ports it used.")
    out.append("landlock:")
    out.append("  inherit: false                 # the base's grants do not apply")
    out.append("  filesystem:")
    out.extend(_paths("read", g.read, "    "))
    out.extend(_paths("write", g.write, "    "))
    out.extend(_paths("execute", g.execute, "    "))
    out.append("  network:")
    out.append(f"    bind: [{', '.join(str(p) for p in g.bind)}]")
    out.append(f"    connect: [{', '.join(str(p) for p in g.connect)}]")
    out.append(f"  scope: [{', '.join(g.scope)}]")
    for note in rest.notes:
        out.append(one_line(f"# Note: {note}"))
    return out


def read_metadata(text: str, where: str) -> dict[str, Any]:
    """The `# enforcer-record:` JSON of a learned policy; ValueError if absent."""
    for line in text.splitlines():
        if line.startswith(METADATA_PREFIX):
            try:
                data = json.loads(line[len(METADATA_PREFIX):])
            except ValueError as e:
                raise ValueError(f"{where}: the `{METADATA_PREFIX.strip()}` line is not valid "
                                 f"JSON ({e})") from None
            if not isinstance(data, dict) or data.get("version") != METADATA_VERSION:
                raise ValueError(f"{where}: recording metadata of an unknown version")
            return data
    raise ValueError(f"{where}: not written by `enforcer record` (no `{METADATA_PREFIX.strip()}` "
                     "line); only recordings can be merged")


def rules_equal(a: SyscallRule, b: SyscallRule) -> bool:
    return (a.syscall, a.action, a.args) == (b.syscall, b.action, b.args)
