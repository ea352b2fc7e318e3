"""Write fast launchers: `python -m enforcer.launcher DIR`.

Writes DIR/enforcer, DIR/enforcer-runc-py (the Python shim) and
DIR/enforcer-shimd, and builds DIR/enforcer-runc, the shim's compiled
front end (enforcer/shim/frontend), when a C compiler is there; without
one, DIR/enforcer-runc is the Python shim's launcher. A pip console script starts
Python with its site machinery, which costs 5-20 ms before any of our code
runs (an editable install's import hook alone was ~13-18 ms here); for
`enforcer run` and the shim that is most of a start. The launchers written
here start the same interpreter with -I -S (isolated: no user site, no
PYTHON* variables, no script directory on sys.path; no site: no .pth
files), append the directory holding the enforcer package to sys.path
(after the standard library, so stdlib imports do not look there first),
and skip the interpreter's teardown when nothing needs it. Everything else
behaves exactly like the console scripts.

Only the standard library and enforcer are importable from a launcher, so
a verb that needs a third-party package (PyYAML for a policy with no
cached Plan, prometheus_client for the monitor) re-executes itself through
the console script's interpreter with site enabled (see `TEMPLATE`).
"""

from __future__ import annotations

import os
import sys

TEMPLATE = """#!{fast_python} -IS
# {name} launcher written by `python -m enforcer.launcher`.
# -IS: skip site initialisation (start latency; see enforcer/launcher.py).
import sys
sys.path.append({package_root!r})
import enforcer
enforcer.SITE_PYTHON = {python!r}
try:
    from {module} import main
    code = main()
except ImportError as e:
    # A third-party package (PyYAML, ...) lives in site-packages, which -S
    # left out: start again the ordinary way (only off the fast path).
    if e.name is None or e.name.split(".")[0] == "enforcer":
        raise
    import os
    # -I: still no script directory or working directory on sys.path.
    os.execv({python!r}, [{python!r}, "-I", "-m", {module!r}, *sys.argv[1:]])
if "threading" in sys.modules or "logging" in sys.modules:
    sys.exit(code)
# Skip the interpreter's teardown (~2 ms of every start): with no threads
# to join and no logging handlers, there is nothing left for it to do but
# flush stdio.
try:
    sys.stdout.flush()
    sys.stderr.flush()
except OSError:
    sys.exit(code)
import os
os._exit(code if isinstance(code, int) else 1)
"""

# launcher name -> the module whose main() it runs
LAUNCHERS = {
    "enforcer": "enforcer.cli",
    "enforcer-runc": "enforcer.shim.main",  # written only when the front end cannot be built
    "enforcer-runc-py": "enforcer.shim.main",
    "enforcer-shimd": "enforcer.shim.server",
}


def package_root() -> str:
    import enforcer

    return os.path.dirname(os.path.dirname(os.path.abspath(enforcer.__file__)))


def launcher_text(name: str, python: str | None = None) -> str:
    """`python` runs the launcher (default: this interpreter); a verb that
    needs site-packages restarts under this interpreter."""
    return TEMPLATE.format(name=name, module=LAUNCHERS[name], python=sys.executable,
                           fast_python=python or sys.executable,
                           package_root=package_root())


def write_launcher(path: str, name: str, python: str | None = None) -> None:
    """Atomically write the launcher for `name` (a key of LAUNCHERS) at path."""
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(launcher_text(name, python))
    os.chmod(tmp, 0o755)
    os.rename(tmp, path)


USAGE = """usage: python -m enforcer.launcher [--python PATH] DIR

Writes DIR/enforcer, DIR/enforcer-runc-py and DIR/enforcer-shimd, and
builds DIR/enforcer-runc (the shim's C front end; the Python shim's
launcher when there is no C compiler) and DIR/enforcer-landlock (the
static helper that applies Landlock inside containers). --python: the interpreter that
runs them (default: this one). Any CPython of the same minor version works
for the start path, which uses only the standard library: a distribution's
python3 (statically linked, PGO-built) starts ~2 ms faster than a shared-
library build such as pyenv's. A verb that needs a third-party package
restarts under the interpreter that ran this command."""


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    python = None
    if len(args) == 3 and args[0] == "--python":
        python = args[1]
        del args[:2]
    if len(args) != 1 or args[0].startswith("-") or not os.path.isdir(args[0]):
        print(USAGE, file=sys.stderr)
        return 2
    for name in ("enforcer", "enforcer-runc-py", "enforcer-shimd"):
        path = os.path.join(args[0], name)
        write_launcher(path, name, python)
        print(f"wrote {path}")
    print(write_shim_front_end(args[0], python))
    print(write_landlock_helper(args[0]))
    return 0


def write_shim_front_end(directory: str, python: str | None = None) -> str:
    """Build DIR/enforcer-runc; returns what was written, for the user."""
    from enforcer.shim.frontend import BuildError, build

    path = os.path.join(directory, "enforcer-runc")
    try:
        build(path)
        return f"built {path} (the compiled front end: fast with enforcer-shimd running)"
    except BuildError as e:
        write_launcher(path, "enforcer-runc", python)
        return (f"wrote {path} as the Python shim: the compiled front end could not be "
                f"built ({e})")


def write_landlock_helper(directory: str) -> str:
    """Build DIR/enforcer-landlock, the static program the shim runs first in
    containers whose policy has a `landlock` section (docs/shim.md)."""
    from enforcer.shim.frontend import LANDLOCK_SOURCE, BuildError, build

    path = os.path.join(directory, "enforcer-landlock")
    try:
        build(path, source=LANDLOCK_SOURCE, static_only=True)
        return f"built {path} (the shim's Landlock helper)"
    except BuildError as e:
        return (f"did not build {path} ({e}): the shim refuses containers whose policy has a "
                "`landlock` section")


if __name__ == "__main__":
    sys.exit(main())
