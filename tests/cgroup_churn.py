#!/usr/bin/env python3
"""Another program on the host that makes and removes cgroups all the time.

The suite must not depend on an idle machine: run this beside a full run
(as root) and the run must stay green, since the leak guard looks only at
what the test session made (tests/conftest.py, tests/session.py):

    sudo .venv/bin/python tests/cgroup_churn.py &
    flock /tmp/enforcer-fullsuite.lock .venv/bin/python -m pytest -p no:cacheprovider -q
    kill %1

In every hierarchy (the cgroup v1 controllers and the v2 tree) it creates
cgroups named churn-PID-N, at the top and one level down, puts a sleeping
process into some of them, and removes them again a moment later; SIGTERM
or SIGINT ends it, after it removed everything it made. It prints how many
it made and removed.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time

ROOT = "/sys/fs/cgroup"


def hierarchies() -> list[str]:
    found = []
    for name in sorted(os.listdir(ROOT)):
        path = os.path.join(ROOT, name)
        if os.path.isdir(path) and not os.path.islink(path) \
                and os.path.exists(os.path.join(path, "cgroup.procs")):
            found.append(path)
    if os.path.exists(os.path.join(ROOT, "cgroup.procs")):
        found.append(ROOT)  # pure v2
    return found


def remove(path: str) -> bool:
    for _ in range(50):
        try:
            os.rmdir(path)
            return True
        except FileNotFoundError:
            return True
        except OSError:
            time.sleep(0.01)
    return False


def main() -> int:
    if os.geteuid() != 0:
        print("cgroup_churn: run as root", file=sys.stderr)
        return 2
    stopping = []
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stopping.append(True))
    bases = hierarchies()
    rng = random.Random(os.getpid())
    made = removed = 0
    live: list[tuple[str, subprocess.Popen[bytes] | None]] = []
    n = 0
    try:
        while not stopping:
            n += 1
            base = rng.choice(bases)
            top = os.path.join(base, f"churn-{os.getpid()}-{n}")
            try:
                os.mkdir(top)
                made += 1
                nested = os.path.join(top, "child")
                os.mkdir(nested)
                made += 1
            except OSError:
                continue
            sleeper = None
            if rng.random() < 0.3:
                sleeper = subprocess.Popen(["sleep", "5"])
                try:
                    with open(os.path.join(nested, "cgroup.procs"), "w") as f:
                        f.write(str(sleeper.pid))
                except OSError:
                    pass  # e.g. a v1 controller that needs cpuset.mems first
            live.append((top, sleeper))
            # Keep a few dozen alive; remove the oldest.
            while len(live) > 40 or (live and stopping):
                old, proc = live.pop(0)
                if proc is not None:
                    proc.kill()
                    proc.wait()
                removed += remove(os.path.join(old, "child")) + remove(old)
            time.sleep(0.01)
    finally:
        for old, proc in live:
            if proc is not None:
                proc.kill()
                proc.wait()
            removed += remove(os.path.join(old, "child")) + remove(old)
        print(f"cgroup_churn: made {made} cgroups, removed {removed}", flush=True)
    return 0 if made == removed else 1


if __name__ == "__main__":
    sys.exit(main())
