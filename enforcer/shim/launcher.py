"""Write a fast launcher for the shim: `python -m enforcer.shim.launcher PATH`.

The same launcher `python -m enforcer.launcher DIR` writes as
DIR/enforcer-runc (see enforcer/launcher.py for why it starts Python with
-I -S); kept as its own command so a runtime can be registered at any path.
"""

from __future__ import annotations

import sys

from enforcer.launcher import launcher_text as _launcher_text
from enforcer.launcher import write_launcher as _write_launcher


def launcher_text(python: str | None = None) -> str:
    return _launcher_text("enforcer-runc", python)


def write_launcher(path: str, python: str | None = None) -> None:
    _write_launcher(path, "enforcer-runc", python)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or args[0].startswith("-"):
        print("usage: python -m enforcer.shim.launcher PATH", file=sys.stderr)
        return 2
    write_launcher(args[0])
    print(f"wrote {args[0]}; register it as the OCI runtime (see docs/shim.md)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
