"""The compiled front end of the shim (enforcer-runc.c), the static
Landlock helper (enforcer-landlock.c), and how they are built.

    python -m enforcer.shim.frontend OUTPUT              the front end
    python -m enforcer.shim.frontend --landlock OUTPUT   the Landlock helper

`enforcer-runc` is this small C program: it hands runc's command line to
enforcer-shimd (enforcer/shim/server.py), which runs the Python shim
already loaded, and falls back to `enforcer-runc-py` next to itself when
no server listens. `python -m enforcer.launcher DIR` builds it along with
the Python launchers.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "enforcer-runc.c")
# Runs inside containers (enforcer/shim/landlock.py): always static, since
# an image may have no C library or another one.
LANDLOCK_SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "enforcer-landlock.c")
# Hardening as Debian builds its packages; -static saves the dynamic
# loader's work on every container operation (~0.5 ms) where glibc's
# static archive is installed, and the build falls back to dynamic linking.
CFLAGS = ["-std=gnu11", "-O2", "-Wall", "-Wextra", "-Wformat=2", "-D_FORTIFY_SOURCE=2",
          "-fstack-protector-strong"]


class BuildError(Exception):
    pass


def compiler() -> str | None:
    """The C compiler to use: $CC, else cc or gcc on PATH."""
    explicit = os.environ.get("CC")
    if explicit:
        return explicit
    return shutil.which("cc") or shutil.which("gcc")


def build(output: str, cc: str | None = None, source: str = SOURCE,
          static_only: bool = False) -> str:
    """Compile the front end (or `source`) to `output` (atomically); returns
    `output`. `static_only`: no fallback to dynamic linking."""
    cc = cc or compiler()
    if not cc:
        raise BuildError("no C compiler (set CC, or install gcc)")
    tmp = f"{output}.tmp-{os.getpid()}"
    errors = ""
    links = [["-static"]] if static_only else [["-static"], ["-pie", "-fPIE"]]
    for link in links:
        try:
            result = subprocess.run([cc, *CFLAGS, *link, "-o", tmp, source],
                                    capture_output=True, text=True)
        except OSError as e:
            raise BuildError(f"cannot run the C compiler {cc}: {e.strerror}") from None
        if result.returncode == 0:
            os.chmod(tmp, 0o755)
            os.rename(tmp, output)
            return output
        errors = result.stderr.strip()
    try:
        os.unlink(tmp)
    except OSError:
        pass
    raise BuildError(f"{cc} failed to build {source}: {errors.splitlines()[-1] if errors else '?'}")


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    landlock = args[:1] == ["--landlock"]
    if landlock:
        del args[0]
    if len(args) != 1 or args[0].startswith("-"):
        print("usage: python -m enforcer.shim.frontend [--landlock] OUTPUT", file=sys.stderr)
        return 2
    try:
        if landlock:
            build(args[0], source=LANDLOCK_SOURCE, static_only=True)
        else:
            build(args[0])
    except BuildError as e:
        print(f"enforcer.shim.frontend: {e}", file=sys.stderr)
        return 1
    print(f"wrote {args[0]}")
    return 0
