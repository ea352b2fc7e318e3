"""Write a fast launcher for the shim: `python -m enforcer.shim.launcher PATH`.

A pip console script (`enforcer-runc`) starts Python with its site
machinery, which costs 5-20 ms before any of our code runs (an editable
install's import hook alone was ~18 ms here). The launcher written here
starts the same interpreter with -I -S (isolated, no site) and puts the
directory holding the enforcer package on sys.path itself, so the shim's
start path stays within its 15 ms budget. Register PATH as the runtime.
"""

from __future__ import annotations

import os
import sys

TEMPLATE = """#!{python} -IS
# enforcer-runc launcher written by `python -m enforcer.shim.launcher`.
# -IS: skip site initialisation (see enforcer/shim/launcher.py for why).
import sys
sys.path.insert(0, {package_root!r})
from enforcer.shim.main import main
sys.exit(main())
"""


def launcher_text(python: str | None = None) -> str:
    import enforcer

    package_root = os.path.dirname(os.path.dirname(os.path.abspath(enforcer.__file__)))
    return TEMPLATE.format(python=python or sys.executable, package_root=package_root)


def write_launcher(path: str, python: str | None = None) -> None:
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(launcher_text(python))
    os.chmod(tmp, 0o755)
    os.rename(tmp, path)


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
