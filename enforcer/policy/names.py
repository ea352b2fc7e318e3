"""What a policy *name* means: where `enforcer run --policy NAME`, `extends:
NAME` and the Plan cache look it up.

A name (lowercase letters, digits, `.`, `_`, `-`; no `/`, no .yaml suffix)
is looked up in two places, in this order, and nowhere else:

1. the policies shipped with enforcer (policies/ in the source tree,
   enforcer/policies in the package): a shipped name always means the
   shipped policy, so `extends: restricted` cannot be redirected;
2. the administrator's policy directory, NAME.yaml in /etc/enforcer/policies
   (or $ENFORCER_POLICY_DIR).

Never the working directory and never the directory of the file that says
`extends:` -- a name is not a path. Whatever is found is then opened with
enforcer.filetrust's checks, like any policy file.

Standard library only (no `re` either): the Plan cache resolves names on
the start path.
"""

from __future__ import annotations

import os

SHIPPED_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                           "policies")
ADMIN_DIR = "/etc/enforcer/policies"
_NAME_FIRST = frozenset("abcdefghijklmnopqrstuvwxyz0123456789")
_NAME_REST = _NAME_FIRST | frozenset("._-")
NAME_RULE = "1-63 characters: lowercase letters, digits, '.', '_' or '-', starting with a letter or digit"


def is_policy_name(text: str) -> bool:
    """A valid policy name: also what `name:` inside a policy must be."""
    return (0 < len(text) <= 63 and text[0] in _NAME_FIRST
            and all(c in _NAME_REST for c in text[1:]))


def looks_like_path(spec: str) -> bool:
    """A spec with a `/`, a leading `.` or a .yaml/.yml suffix names a file."""
    return "/" in spec or spec.startswith(".") or spec.endswith((".yaml", ".yml"))


def admin_dir() -> str:
    return os.environ.get("ENFORCER_POLICY_DIR") or ADMIN_DIR


def shipped_names() -> list[str]:
    try:
        return sorted(n[:-5] for n in os.listdir(SHIPPED_DIR) if n.endswith(".yaml"))
    except OSError:
        return []


def find_named(name: str) -> str | None:
    """Absolute path of the policy a name means, or None (see the module doc)."""
    if not is_policy_name(name):
        return None
    for directory in (SHIPPED_DIR, admin_dir()):
        path = os.path.join(directory, name + ".yaml")
        if os.path.isfile(path):
            return os.path.realpath(path)
    return None


def where_names_are_looked_up() -> str:
    """For messages: what a name may be."""
    shipped = ", ".join(shipped_names()) or "none found"
    return f"a shipped policy ({shipped}) or NAME.yaml in {admin_dir()}"
