"""The `landlock` policy section: reading one file's section, merging the
sections of an `extends` chain, and its JSON Schema fragment.

    landlock:
      abi: 4                          # minimum ABI; absent: best effort
      inherit: true                   # false: replace the parents' grants
      filesystem:
        read:    [/usr, /etc/app]
        write:   [/var/lib/app, {path: /run/app, optional: true}]
        execute: [/usr/bin]
      network:
        bind:    [8080]               # TCP ports, or `any`
        connect: [5432, 443]
      scope: [signal, abstract-unix-socket]

A section is written so that a program can emit it too (`enforcer record`):
plain lists of paths and port numbers, a mapping only where a path needs
`optional`. What each word grants, and which ABI brings it, is the table in
enforcer/landlock.py. Merge rules (docs/policy-reference.md): grants and
scopes are unions; `abi` is the highest any file asks for; `inherit: false`
drops the grants of every file this one extends.
"""

from __future__ import annotations

from typing import Any

from enforcer import landlock as ll
from enforcer.errors import Location, PolicyError
from enforcer.policy.model import LandlockPath, LandlockPolicy
from enforcer.policy.validate import Checker, Layer, _describe
from enforcer.policy.yamlsafe import Map, Node, Scalar

KEYS = ("abi", "inherit", "filesystem", "network", "scope")
FS_KEYS = tuple(ll.GRANTS)  # read, write, execute
NET_KEYS = tuple(ll.NETWORK_WORDS)  # bind, connect
PATH_KEYS = ("path", "optional")
ANY = "any"  # a network list's word for "not restricted"
MAX_ABI = 99

# Layer keys. Grants live in Layer.lists as (text, Location) like the other
# path lists; `.optional` lists the paths of that grant marked optional.
PRESENT = "landlock"
ABI = "landlock.abi"
INHERIT = "landlock.inherit"
SCOPE = "landlock.scope"


def fs_key(grant: str) -> str:
    return f"landlock.filesystem.{grant}"


def net_key(kind: str) -> str:
    return f"landlock.network.{kind}"


# -- one file --------------------------------------------------------------------


def read_section(chk: Checker, layer: Layer, node: Node, key: Scalar) -> None:
    """validate.read_layer's handler for the top-level `landlock` key."""
    m = chk.mapping(node, "landlock", KEYS)
    if m is None:
        return
    layer.scalars[PRESENT] = (None, node.loc)
    for k, v in m.items:
        if k.text == "abi":
            # Above KNOWN_ABI only raises what the kernel must have: rules
            # can only use what this enforcer knows.
            n = chk.integer(v, "landlock.abi", 1, MAX_ABI)
            if n is not None:
                layer.scalars[ABI] = (n, v.loc)
        elif k.text == "inherit":
            b = chk.boolean(v, "landlock.inherit")
            if b is not None:
                layer.scalars[INHERIT] = (b, v.loc)
        elif k.text == "filesystem":
            fm = chk.mapping(v, "landlock.filesystem", FS_KEYS)
            for fk, fv in fm.items if fm else []:
                _paths(chk, layer, fv, fk.text)
        elif k.text == "network":
            nm = chk.mapping(v, "landlock.network", NET_KEYS)
            for nk, nv in nm.items if nm else []:
                _ports(chk, layer, nv, nk.text)
        elif k.text == "scope":
            _scope(chk, layer, v)


def _paths(chk: Checker, layer: Layer, node: Node, grant: str) -> None:
    what = f"landlock.filesystem.{grant}"
    out = layer.lists.setdefault(fs_key(grant), [])
    optional = layer.lists.setdefault(fs_key(grant) + ".optional", [])
    items = [node] if isinstance(node, Scalar) and isinstance(node.value, str) else chk.seq(node, what)
    seen = {p: loc for p, loc in out}
    for item in items or []:
        entry = _path_entry(chk, item, what)
        if entry is None:
            continue
        path, is_optional = entry
        if path in seen:
            chk.error(item.loc, f"{what}: {path} is listed twice (first at line {seen[path].line})")
            continue
        seen[path] = item.loc
        out.append((path, item.loc))
        if is_optional:
            optional.append((path, item.loc))


def _path_entry(chk: Checker, node: Node, what: str) -> tuple[str, bool] | None:
    """A path, or {path: P, optional: true|false}."""
    if not isinstance(node, Map):
        path = chk.path(node, f"each entry of {what}")
        return (path, False) if path is not None else None
    m = chk.mapping(node, f"an entry of {what}", PATH_KEYS)
    if m is None:
        return None
    path_node, optional_node = m.get("path"), m.get("optional")
    if path_node is None:
        chk.error(node.loc, f"an entry of {what} needs `path:` (an absolute path)")
        return None
    path = chk.path(path_node, f"{what} path")
    optional = chk.boolean(optional_node, f"{what} optional") if optional_node is not None else False
    if path is None or optional is None:
        return None
    return path, optional


def _ports(chk: Checker, layer: Layer, node: Node, kind: str) -> None:
    what = f"landlock.network.{kind}"
    out = layer.lists.setdefault(net_key(kind), [])
    if isinstance(node, Scalar) and node.value == ANY:
        out.append((ANY, node.loc))
        return
    if isinstance(node, Scalar) and isinstance(node.value, int) and not isinstance(node.value, bool):
        items: list[Node] = [node]
    else:
        seq = chk.seq(node, what) if not isinstance(node, Scalar) else None
        if seq is None:
            chk.error(node.loc, f"{what} must be a list of TCP port numbers (0-65535) or `{ANY}`, "
                                f"not {_describe(node)}")
            return
        items = seq
    seen: dict[int, Location] = {}
    for item in items:
        if isinstance(item, Scalar) and item.value == ANY:
            chk.error(item.loc, f"{what}: `{ANY}` stands alone ({kind}: {ANY}), not in a list of ports")
            continue
        port = chk.integer(item, f"a port in {what}", 0, 65535)
        if port is None:
            continue
        if port in seen:
            chk.error(item.loc, f"{what}: port {port} is listed twice (first at line {seen[port].line})")
            continue
        seen[port] = item.loc
        out.append((str(port), item.loc))


def _scope(chk: Checker, layer: Layer, node: Node) -> None:
    from enforcer.policy.validate import _did_you_mean

    out = layer.lists.setdefault(SCOPE, [])
    for word, loc in chk.word_list(node, "landlock.scope"):
        if word not in ll.SCOPE_WORDS:
            chk.error(loc, f"unknown landlock scope {word!r}{_did_you_mean(word, ll.SCOPE_WORDS)}; "
                           f"allowed: {', '.join(ll.SCOPE_WORDS)}")
        elif word in [w for w, _ in out]:
            chk.error(loc, f"landlock scope {word!r} is listed twice")
        else:
            out.append((word, loc))


# -- the extends chain -------------------------------------------------------------


def merge(layers: list[Layer], ancestors_of: Any, origins: dict[str, Location],
          no_new_privileges: bool, errors: list[PolicyError]) -> LandlockPolicy | None:
    """The effective `landlock` section of a chain (parents first), or None
    when no file has one. `ancestors_of(i)` is the set of layer indexes that
    layers[i] extends (for `inherit: false`)."""
    present = [i for i, layer in enumerate(layers) if PRESENT in layer.scalars]
    if not present:
        return None
    origins[PRESENT] = layers[present[-1]].scalars[PRESENT][1]
    # Which layers' grants count: a file with `inherit: false` cuts off
    # every file it extends, directly or not.
    counted = set(range(len(layers)))
    for i, layer in enumerate(layers):
        inherit = layer.scalars.get(INHERIT)
        if inherit is not None and inherit[0] is False:
            counted -= ancestors_of(i)
            origins[INHERIT] = inherit[1]
    abi: int | None = None
    for layer in layers:
        if ABI in layer.scalars and (abi is None or layer.scalars[ABI][0] > abi):
            abi = layer.scalars[ABI][0]
            origins[ABI] = layer.scalars[ABI][1]
    grants = {grant: _merge_paths(layers, counted, grant, origins) for grant in FS_KEYS}
    ports = {kind: _merge_ports(layers, counted, kind, origins) for kind in NET_KEYS}
    scope: dict[str, Location] = {}
    for layer in layers:
        for word, loc in layer.lists.get(SCOPE, []):
            if word not in scope:
                scope[word] = loc
                origins[f"{SCOPE}[{word}]"] = loc
    if not no_new_privileges:
        errors.append(PolicyError(origins.get("no_new_privileges", origins[PRESENT]), (
            "landlock needs no_new_privileges: true: the kernel lets a process restrict "
            "itself with Landlock only under no_new_privs (or with CAP_SYS_ADMIN), so that "
            "a setuid program cannot be confused by a sandbox")))
    return LandlockPolicy(abi=abi, read=grants["read"], write=grants["write"],
                          execute=grants["execute"], bind=ports["bind"],
                          connect=ports["connect"], scope=tuple(scope))


def _merge_paths(layers: list[Layer], counted: set[int], grant: str,
                 origins: dict[str, Location]) -> tuple[LandlockPath, ...]:
    """Union by path; a path stays optional only if every file that names it
    says so (a required path must exist)."""
    merged: dict[str, bool] = {}
    for i, layer in enumerate(layers):
        if i not in counted:
            continue
        optional = {p for p, _ in layer.lists.get(fs_key(grant) + ".optional", [])}
        for path, loc in layer.lists.get(fs_key(grant), []):
            if path not in merged:
                origins[f"{fs_key(grant)}[{path}]"] = loc
                merged[path] = path in optional
            else:
                merged[path] = merged[path] and path in optional
    return tuple(LandlockPath(p, optional) for p, optional in merged.items())


def _merge_ports(layers: list[Layer], counted: set[int], kind: str,
                 origins: dict[str, Location]) -> tuple[int, ...] | None:
    """Union of the ports; `any` in any counted file wins (None)."""
    ports: dict[int, None] = {}
    for i, layer in enumerate(layers):
        if i not in counted:
            continue
        for text, loc in layer.lists.get(net_key(kind), []):
            if text == ANY:
                origins[net_key(kind)] = loc
                return None
            if int(text) not in ports:
                ports[int(text)] = None
                origins[f"{net_key(kind)}[{text}]"] = loc
    return tuple(sorted(ports))


# -- for people --------------------------------------------------------------------


def describe(lp: LandlockPolicy) -> str:
    """One line: "read /usr, /etc; write /var/lib/app; bind 8080; connect any;
    scope signal" (what `diff` and the exporters' warnings show)."""
    parts = [f"{grant} {', '.join(e.path for e in paths)}" for grant, paths in lp.grants() if paths]
    for kind in NET_KEYS:
        ports = getattr(lp, kind)
        parts.append(f"{kind} {ANY if ports is None else ', '.join(map(str, ports)) or 'none'}")
    if lp.scope:
        parts.append(f"scope {', '.join(lp.scope)}")
    return "; ".join(parts)


# -- JSON Schema ---------------------------------------------------------------


def schema(path: dict[str, Any], obj: Any) -> dict[str, Any]:
    """The `landlock` property of the policy schema (make_schema.py)."""
    entry = {"oneOf": [path, obj({"path": path, "optional": {"type": "boolean"}}, ("path",))]}
    entries = {"oneOf": [path, {"type": "array", "items": entry}]}
    port = {"type": "integer", "minimum": 0, "maximum": 65535}
    ports = {"oneOf": [{"const": ANY}, port, {"type": "array", "items": port}]}
    return {
        **obj({
            "abi": {"type": "integer", "minimum": 1, "maximum": MAX_ABI},
            "inherit": {"type": "boolean"},
            "filesystem": obj({grant: entries for grant in FS_KEYS}),
            "network": obj({kind: ports for kind in NET_KEYS}),
            "scope": {"oneOf": [{"enum": list(ll.SCOPE_WORDS)},
                                {"type": "array", "items": {"enum": list(ll.SCOPE_WORDS)}}]},
        }),
        "description": "Landlock: what the workload may read, write, execute, bind and connect "
                       "to; everything else Landlock can restrict is denied. See "
                       "docs/policy-reference.md#landlock.",
    }
