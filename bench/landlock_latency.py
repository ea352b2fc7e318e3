"""Start latency of `enforcer run` with a 20-rule Landlock section against
the same policy without it (issue 16: within 2 ms).

    sudo .venv/bin/python bench/landlock_latency.py [--rounds N] [--json]

Both policies extend `restricted` (namespaces, mounts, cgroup limits,
capabilities, seccomp: a realistic start); the second adds a `landlock`
section of 20 rules (18 paths, 2 ports) and both scopes. Each round starts
`/bin/true` once under each, in alternating order, through the fast
launcher (`python -m enforcer.launcher --python /usr/bin/python3 DIR`, as
scripts/setup.sh installs it), with cached Plans; wall time is taken
around posix_spawn..wait4. The difference is reported as the median of the
per-round differences (paired, so machine load hits both alike) and as the
difference of the medians. Also timed in-process: the apply step itself
(landlock.prepare + restrict in a forked child, 20 rules).

Appends a section to bench/results/landlock-latency.md (with the command);
with --json prints the harness's one-object summary instead of the table.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, "bench", "results", "landlock-latency.md")
PLAIN = """name: bench-no-landlock
extends: restricted
"""
# 18 paths + 2 ports = 20 rules. Every path exists on a Debian host.
LANDLOCK = """name: bench-landlock
extends: restricted
landlock:
  filesystem:
    read: [/etc, /usr/share, /usr/lib, /usr/include, /proc, /dev, /sys, /run, /srv, /opt,
           /var/lib, /var/cache, /home]
    write: [/tmp, /dev/shm, /dev/null]
    execute: [/usr/bin, {loader}]
  network:
    bind: [8080]
    connect: [443]
  scope: [signal, abstract-unix-socket]
"""


def loader() -> str:
    """The dynamic loader of /bin/true (executing it needs that right too)."""
    out = subprocess.run(["readelf", "-l", "/bin/true"], capture_output=True, text=True).stdout
    for line in out.splitlines():
        if "Requesting program interpreter" in line:
            return os.path.realpath(line.split(":", 1)[1].strip(" ]"))
    raise SystemExit("landlock_latency: cannot find /bin/true's loader (readelf)")


def quantile(xs: list[float], p: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(p * len(s)))]


def apply_step_ms(plan_path: str, repeats: int) -> float:
    """Median ms of landlock.prepare + restrict for the Plan's ruleset, each
    in a fresh forked child (a domain cannot be undone)."""
    sys.path.insert(0, ROOT)
    from enforcer.apply import landlock
    from enforcer.plan import load_plan_file

    ll_plan = load_plan_file(plan_path).landlock
    assert ll_plan is not None
    times = []
    for _ in range(repeats):
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(r)
            from enforcer.apply import _sys

            _sys.prctl(_sys.PR_SET_NO_NEW_PRIVS, 1, step="bench", what="nnp")
            t0 = time.perf_counter_ns()
            prepared = landlock.prepare(ll_plan, lambda line: None)
            assert prepared is not None
            landlock.restrict(*prepared)
            os.write(w, str(time.perf_counter_ns() - t0).encode())
            os._exit(0)
        os.close(w)
        times.append(int(os.read(r, 64)) / 1e6)
        os.close(r)
        os.waitpid(pid, 0)
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int,
                        default=30 if os.environ.get("BENCH_QUICK") == "1" else 200)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("landlock_latency: needs root (restricted sets cgroup limits)", file=sys.stderr)
        return 2
    work = tempfile.mkdtemp(prefix="enforcer-ll-bench-", dir="/var/tmp")
    try:
        return run(work, args.rounds, args.json)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def run(work: str, rounds: int, as_json: bool) -> int:
    py = os.path.join(ROOT, ".venv", "bin", "python")
    fast = py
    version = "import sys; print(sys.version_info[:2])"
    if os.path.exists("/usr/bin/python3") and subprocess.run(
            ["/usr/bin/python3", "-c", version], capture_output=True, text=True).stdout == \
            subprocess.run([py, "-c", version], capture_output=True, text=True).stdout:
        fast = "/usr/bin/python3"
    bindir = os.path.join(work, "bin")
    os.mkdir(bindir)
    subprocess.run([py, "-m", "enforcer.launcher", "--python", fast, bindir], check=True,
                   capture_output=True, cwd=ROOT)
    env = dict(os.environ, ENFORCER_CACHE_DIR=os.path.join(work, "cache"))
    policies = {}
    for name, text in (("without landlock", PLAIN), ("with 20 landlock rules", LANDLOCK)):
        path = os.path.join(work, f"{len(policies)}.yaml")
        with open(path, "w") as f:
            f.write(text.format(loader=loader()))
        policies[name] = [os.path.join(bindir, "enforcer"), "run", "--policy", path, "--",
                          "/bin/true"]
        subprocess.run(policies[name], check=True, env=env)  # fills the Plan cache
    plan = os.path.join(work, "landlock.plan.json")
    subprocess.run([py, "-m", "enforcer", "compile", policies["with 20 landlock rules"][3], "-o",
                    plan], check=True, capture_output=True, cwd=ROOT)
    devnull = os.open(os.devnull, os.O_RDWR)
    wall: dict[str, list[float]] = {name: [] for name in policies}
    cpu: dict[str, list[float]] = {name: [] for name in policies}
    load = os.getloadavg()[0]
    names = list(policies)
    for i in range(rounds + 5):
        order = names if i % 2 == 0 else names[::-1]
        for name in order:
            argv = policies[name]
            t0 = time.perf_counter_ns()
            pid = os.posix_spawn(argv[0], argv, env,
                                 file_actions=[(os.POSIX_SPAWN_DUP2, devnull, 1)])
            _, status, usage = os.wait4(pid, 0)
            if status != 0:
                raise SystemExit(f"landlock_latency: {name} failed (wait status {status})")
            if i >= 5:
                wall[name].append((time.perf_counter_ns() - t0) / 1e6)
                cpu[name].append((usage.ru_utime + usage.ru_stime) * 1000)
    load_end = os.getloadavg()[0]
    base, ll = wall[names[0]], wall[names[1]]
    diffs = sorted(b - a for a, b in zip(base, ll))
    paired = statistics.median(diffs)
    middle = diffs[len(diffs) // 4: len(diffs) - len(diffs) // 4]  # interquartile mean
    iq_mean = statistics.fmean(middle)
    of_medians = statistics.median(ll) - statistics.median(base)
    of_mins = min(ll) - min(base)
    cpu_diff = statistics.median(cpu[names[1]]) - statistics.median(cpu[names[0]])
    step = apply_step_ms(plan, 50)
    rows = [{"kind": "start latency", "policy": name, "median ms": f"{statistics.median(w):.2f}",
             "p10 ms": f"{quantile(w, 0.1):.2f}", "p90 ms": f"{quantile(w, 0.9):.2f}"}
            for name, w in wall.items()]
    verdict = "within" if paired <= 2.0 else "NOT within"
    summary = (f"20 Landlock rules add {paired:+.2f} ms to `enforcer run` (median of paired "
               f"differences, {rounds} rounds; {verdict} the 2 ms target); the apply step "
               f"itself takes {step:.2f} ms")
    command = f"sudo .venv/bin/python bench/landlock_latency.py --rounds {rounds}"
    if as_json:
        print(json.dumps({"summary": summary, "command": command, "rows": rows}))
    lines = [
        "", f"## {time.strftime('%Y-%m-%dT%H:%MZ', time.gmtime())} — {os.uname().release}, "
            f"{os.cpu_count()} cores, {rounds} rounds",
        "", f"Command: `{command}` (launcher on {fast}; load average {load:.2f} at the start, "
            f"{load_end:.2f} at the end)", "",
        "| policy (extends restricted) | median ms | p10 ms | p90 ms |",
        "| --- | ---: | ---: | ---: |"]
    lines += [f"| {r['policy']} | {r['median ms']} | {r['p10 ms']} | {r['p90 ms']} |"
              for r in rows]
    lines += ["", f"Difference: **{paired:+.2f} ms** (median of the per-round differences); "
                  f"{iq_mean:+.2f} ms (their interquartile mean); {of_medians:+.2f} ms "
                  f"(difference of the medians); {of_mins:+.2f} ms (of the fastest starts); "
                  f"CPU time {cpu_diff:+.2f} ms (difference of the medians). The Landlock apply "
                  f"step alone (ABI query, create, 20 rules, restrict; in a fresh fork, 50 "
                  f"times): {step:.3f} ms median. Target: within 2 ms — **{verdict}**."]
    if not os.path.exists(RESULTS):
        with open(RESULTS, "w") as f:
            f.write("# Start latency with a Landlock section\n\n"
                    "`bench/landlock_latency.py`: `enforcer run --policy P -- /bin/true`, P "
                    "extending `restricted` with and without a 20-rule `landlock` section, "
                    "interleaved rounds (see the script's docstring). Runs are appended, newest "
                    "last. A shared 2-vCPU VM: compare rows within one run.\n")
    with open(RESULTS, "a") as f:
        f.write("\n".join(lines) + "\n")
    if not as_json:
        print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
