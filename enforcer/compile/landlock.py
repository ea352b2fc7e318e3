"""Landlock: the policy's `landlock` section as plain data for the Plan.

Each path gets the union of the rights its grants give (read, write,
execute: enforcer/landlock.py GRANTS), as bitmasks for every ABI; the
apply step cuts them to the running kernel, because a cached Plan may
outlive a kernel upgrade. Paths stay paths: they are opened where the
workload runs, after its mounts and new root (docs/run.md), never here.
"""

from __future__ import annotations

import posixpath

from enforcer import landlock as ll
from enforcer.plan import LandlockPlan, LandlockRule
from enforcer.policy.model import LandlockPolicy


def compile_landlock(policy: LandlockPolicy | None, notes: list[str]) -> LandlockPlan | None:
    if policy is None:
        return None
    access: dict[str, int] = {}
    required: set[str] = set()
    for grant, paths in policy.grants():
        for entry in paths:
            path = posixpath.normpath(entry.path)
            path = "/" if path == "//" else path
            access[path] = access.get(path, 0) | ll.GRANTS[grant]
            if not entry.optional:
                required.add(path)
    # Sorted, so equal policies give equal Plans (and digests).
    rules = tuple(LandlockRule(path=p, access=access[p], optional=p not in required)
                  for p in sorted(access))
    handled_net = 0
    for kind, right in ll.NETWORK_WORDS.items():
        if getattr(policy, kind) is not None:  # None: `any`, left unrestricted
            handled_net |= right
    scopes = 0
    for word in policy.scope:
        scopes |= ll.SCOPE_WORDS[word]
    if policy.abi is None:
        notes.append("landlock: no `abi`: on a kernel older than Landlock ABI "
                     f"{ll.KNOWN_ABI}, what it cannot enforce is dropped and reported at start "
                     "(best effort)")
    return LandlockPlan(min_abi=policy.abi or 0, rules=rules, handled_net=handled_net,
                        bind=tuple(policy.bind or ()), connect=tuple(policy.connect or ()),
                        scopes=scopes)
