#!/bin/sh
# Start latency of `enforcer run` against the other ways to start a confined
# /bin/true. Needs root, bubblewrap, firejail, runc and busybox-static (all
# Debian packages); hyperfine for the cross-check.
#
#   sh bench/start_latency.sh [RUNS]          (default 100 runs each)
#
# The commands are run interleaved, round by round (each round runs every
# command once, in turn), so that load from other work on the machine hits
# all of them alike; wall time per start is taken around posix_spawn+wait4
# of the command, CPU time from its rusage. Then a hyperfine run of the
# same commands as a cross-check (hyperfine runs all runs of one command,
# then the next). Appends both to bench/results/start-latency.md and writes
# the raw samples to bench/results/start-latency.json.
#
# `enforcer run` is measured three ways:
#   launcher, distro python3   what `python -m enforcer.launcher --python
#                              /usr/bin/python3 DIR` writes (when that
#                              python3 has the venv's minor version)
#   launcher, venv python      the same launcher on the venv's interpreter
#   console script             pip's entry point (runs Python's `site` and
#                              this checkout's editable-install hook first)
set -eu
cd "$(dirname "$0")/.."
RUNS=${1:-100}
PY=${ENFORCER_PYTHON:-.venv/bin/python}
WORK=$(mktemp -d /var/tmp/enforcer-bench.XXXXXX)
cleanup() {
    rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

# A cached Plan, as on any host that ran the policy once. Byte-compile the
# package too: an installed package ships .pyc files, and this environment
# may set PYTHONDONTWRITEBYTECODE.
export ENFORCER_CACHE_DIR="$WORK/cache"
"$PY" -m compileall -q enforcer >/dev/null
mkdir -p "$WORK/venv-bin" "$WORK/fast-bin"
"$PY" -m enforcer.launcher "$WORK/venv-bin" >/dev/null
FAST_PY="$PY"
if [ -x /usr/bin/python3 ] && [ "$(/usr/bin/python3 -c 'import sys; print(sys.version_info[:2])')" = \
        "$("$PY" -c 'import sys; print(sys.version_info[:2])')" ]; then
    FAST_PY=/usr/bin/python3
fi
"$PY" -m enforcer.launcher --python "$FAST_PY" "$WORK/fast-bin" >/dev/null
"$WORK/fast-bin/enforcer" run --policy restricted -- /bin/true
# pip's console script, written here as pip writes it: scripts/setup.sh
# replaces the one in .venv/bin with the fast launcher.
mkdir -p "$WORK/pip-bin"
printf '#!%s\nimport re\nimport sys\nfrom enforcer.cli import main\nif __name__ == "__main__":\n    sys.argv[0] = re.sub(r"(-script\\.pyw|\\.exe)?$", "", sys.argv[0])\n    sys.exit(main())\n' \
    "$(cd "$(dirname "$PY")" && pwd)/$(basename "$PY")" > "$WORK/pip-bin/enforcer"
chmod +x "$WORK/pip-bin/enforcer"

# A minimal OCI bundle for runc: busybox as rootfs, /bin/true as the process.
mkdir -p "$WORK/bundle/rootfs/bin"
cp /bin/busybox "$WORK/bundle/rootfs/bin/busybox"
ln -s busybox "$WORK/bundle/rootfs/bin/true"
(cd "$WORK/bundle" && runc spec)
"$PY" - "$WORK/bundle/config.json" <<'PYEOF'
import json, sys
p = sys.argv[1]
c = json.load(open(p))
c["process"]["terminal"] = False
c["process"]["args"] = ["/bin/true"]
json.dump(c, open(p, "w"))
PYEOF

"$PY" - "$WORK" "$RUNS" "$FAST_PY" <<'PYEOF'
import json, os, shutil, statistics, subprocess, sys, time

work, runs, fast_py = sys.argv[1], int(sys.argv[2]), sys.argv[3]
runc_state = f"{work}/runc-state"
commands = {
    "bare /bin/true": ["/bin/true"],
    f"enforcer run --policy restricted (launcher, {fast_py})":
        [f"{work}/fast-bin/enforcer", "run", "--policy", "restricted", "--", "/bin/true"],
    "enforcer run --policy restricted (launcher, venv python)":
        [f"{work}/venv-bin/enforcer", "run", "--policy", "restricted", "--", "/bin/true"],
    "enforcer run --policy restricted (pip console script)":
        [f"{work}/pip-bin/enforcer", "run", "--policy", "restricted", "--", "/bin/true"],
    "bwrap (ro /, unshare-all)": ["bwrap", "--ro-bind", "/", "/", "--dev", "/dev", "--proc",
                                  "/proc", "--unshare-all", "--die-with-parent", "/bin/true"],
    "firejail (default profile)": ["firejail", "--quiet", "/bin/true"],
    "runc run (busybox bundle)": ["runc", "--root", runc_state, "run", "--bundle",
                                  f"{work}/bundle", "bench-true"],
}
for name, argv in commands.items():
    argv[0] = shutil.which(argv[0]) or argv[0]
wall = {n: [] for n in commands}
cpu = {n: [] for n in commands}
devnull = os.open(os.devnull, os.O_RDWR)
load = os.getloadavg()
for i in range(runs + 5):
    for name, argv in commands.items():
        t0 = time.perf_counter_ns()
        pid = os.posix_spawn(argv[0], argv, os.environ,
                             file_actions=[(os.POSIX_SPAWN_DUP2, devnull, 1)])
        _, status, ru = os.wait4(pid, 0)
        elapsed = time.perf_counter_ns() - t0
        if status != 0:
            raise SystemExit(f"start_latency: {name} failed (wait status {status})")
        if i >= 5:  # warm-up rounds
            wall[name].append(elapsed / 1e6)
            cpu[name].append((ru.ru_utime + ru.ru_stime) * 1000)
load_end = os.getloadavg()

def q(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p * len(xs)))]

lines = [f"Interleaved, {runs} rounds after 5 warm-up rounds; load average (1 min) "
         f"{load[0]:.2f} at the start, {load_end[0]:.2f} at the end.", "",
         "| command | median ms | mean ms | p10 ms | p90 ms | min ms | CPU ms (median) |",
         "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
for name in commands:
    w = wall[name]
    lines.append(f"| {name} | {statistics.median(w):.1f} | {statistics.fmean(w):.1f} | "
                 f"{q(w, 0.1):.1f} | {q(w, 0.9):.1f} | {min(w):.1f} | "
                 f"{statistics.median(cpu[name]):.1f} |")
open(f"{work}/interleaved.md", "w").write("\n".join(lines) + "\n")
json.dump({"runs": runs, "load": [load[0], load_end[0]], "wall_ms": wall, "cpu_ms": cpu},
          open(f"{work}/raw.json", "w"))
PYEOF

if command -v hyperfine >/dev/null; then
    hyperfine -N --warmup 5 --runs "$RUNS" --export-markdown "$WORK/table.md" \
        -n 'bare /bin/true' '/bin/true' \
        -n 'enforcer run (launcher, fast python)' "$WORK/fast-bin/enforcer run --policy restricted -- /bin/true" \
        -n 'bwrap (ro /, unshare-all)' 'bwrap --ro-bind / / --dev /dev --proc /proc --unshare-all --die-with-parent /bin/true' \
        -n 'firejail (default profile)' 'firejail --quiet /bin/true' \
        -n 'runc run (busybox bundle)' "runc --root $WORK/runc-state run --bundle $WORK/bundle bench-true" \
        >/dev/null
fi

OUT=bench/results/start-latency.md
{
    echo
    echo "## $(date -u +%Y-%m-%dT%H:%MZ) — $(uname -r), $(nproc) cores, $RUNS runs each"
    echo
    echo 'Command: `sh bench/start_latency.sh '"$RUNS"'`'
    echo
    cat "$WORK/interleaved.md"
    if [ -f "$WORK/table.md" ]; then
        echo
        echo "Cross-check with hyperfine (not interleaved):"
        echo
        cat "$WORK/table.md"
    fi
} >> "$OUT"
cp "$WORK/raw.json" bench/results/start-latency.json
tail -n 25 "$OUT"
