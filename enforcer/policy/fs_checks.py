"""Checks across the effective `filesystem` section (after `extends`): paths
that the policy's own mounts would hide, and bind targets that clash with
another rule for the same path.

A tmpfs, masked or hidden directory is an empty file system laid over the
host's: whatever the policy names *below* it is not there when the
workload starts. A writable or read-only exception, a masked or hidden
path below it would fail at run time ("path does not exist", although it
exists on the host) -- so `check` reports it with both lines. A bind target
below a tmpfs is fine (its mount point is made in the tmpfs and the bind
stays visible, as bwrap does); below a masked or hidden directory it is
not (that one is read-only and empty).
"""

from __future__ import annotations

from enforcer.errors import Location, PolicyError
from enforcer.policy.model import FilesystemPolicy


def _below(path: str, cover: str) -> bool:
    return cover == "/" or path.startswith(cover.rstrip("/") + "/")


def _covers(fs: FilesystemPolicy) -> list[tuple[str, str, str]]:
    """(path, what it is, origins key) of every mount that starts empty."""
    out = [(t.path, "tmpfs", f"filesystem.tmpfs[{t.path}]") for t in fs.tmpfs]
    out += [(p, "masked path", f"filesystem.masked_paths[{p}]") for p in fs.masked_paths]
    out += [(p, "hidden path", f"filesystem.hidden_paths[{p}]") for p in fs.hidden_paths]
    return out


def _where(origins: dict[str, Location], key: str) -> str:
    loc = origins.get(key)
    return f" ({loc})" if loc is not None else ""


def check(fs: FilesystemPolicy, origins: dict[str, Location]) -> list[PolicyError]:
    errors: list[PolicyError] = []
    covers = _covers(fs)
    named = [(p, "writable_paths") for p in fs.writable_paths]
    named += [(p, "read_only_paths") for p in fs.read_only_paths]
    named += [(p, "masked_paths") for p in fs.masked_paths]
    named += [(p, "hidden_paths") for p in fs.hidden_paths]
    for path, field in named:
        for cover, what, key in covers:
            if not _below(path, cover):
                continue
            hint = (f"to keep the host's {path}, bind it (filesystem.bind: [{{source: {path}, "
                    f"target: {path}}}])")
            if what == "tmpfs":
                hint += f" or drop the tmpfs (filesystem.tmpfs_remove: [{cover}])"
            errors.append(PolicyError(origins.get(f"filesystem.{field}[{path}]"), (
                f"filesystem.{field}: {path} lies under the policy's {what} at {cover}"
                f"{_where(origins, key)}, which starts empty: {path} does not exist there "
                f"when the workload starts; {hint}")))
            break
    others = {p: "a writable path" for p in fs.writable_paths}
    others.update({p: "a read-only path" for p in fs.read_only_paths})
    for bind in fs.bind:
        loc = origins.get(f"filesystem.bind[{bind.target}]")
        clash = others.get(bind.target)
        if clash is None:
            clash = next((f"the policy's {what}{_where(origins, key)}"
                          for cover, what, key in covers if cover == bind.target), None)
        if clash is not None:
            errors.append(PolicyError(loc, (
                f"filesystem.bind: target {bind.target} is also {clash}; one rule per path "
                "(a bind is writable unless `read_only: true`)")))
            continue
        for cover, what, key in covers:
            if what != "tmpfs" and _below(bind.target, cover):
                errors.append(PolicyError(loc, (
                    f"filesystem.bind: target {bind.target} lies under the policy's {what} at "
                    f"{cover}{_where(origins, key)}, an empty read-only directory where no "
                    "mount point can be made; bind somewhere else or leave the path out of "
                    f"filesystem.{key.split('[')[0].split('.')[1]}")))
                break
    return errors
