"""bench/run's engine: every benchmark of the suite, one report.

    bench/run [--rounds N] [--quick] [--skip-others] [--out DIR]

1. the per-syscall microbenchmark (microbench.py, syscall_bench.c) over
   the filter variants, round-robin;
2. the argument-position test (argpos.py) and the filter-cost experiment
   (filtercost.py: cache hit vs miss, arch checks, a linear list);
3. the other areas' scripts, each if present: bench/start_latency.*,
   bench/shim_bench.*, bench/compile_bench.py, bench/monitor_bench.py;
4. bench/results/README.md, results.json and syscalls.png (report.py).

Scripts of other areas are run as they are, with BENCH_RESULTS_DIR and
BENCH_QUICK in the environment, plus `--json` when their source mentions
that option. What they print is folded into the report:
a JSON object ({"summary": "...", "rows": [{...}, ...]}) becomes a table,
Markdown table lines are kept as they are, anything else is quoted.
"""

from __future__ import annotations

import argparse
import glob
import os
import platform
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import argpos  # noqa: E402
import microbench as mb  # noqa: E402

OTHERS = (
    ("start_latency", "Start latency (`enforcer run`)", "start_latency.*"),
    ("shim", "Shim overhead (runc vs enforcer shim)", "shim_bench.*"),
    ("compile", "Compile time", "compile_bench.py"),
    ("monitor", "Monitor throughput", "monitor_bench.py"),
    ("landlock", "Start latency with a Landlock section", "landlock_latency.py"),
)


@dataclass
class External:
    key: str
    title: str
    script: str | None
    status: str  # "ok" | "not present" | "failed (exit N)" | "timed out"
    seconds: float = 0.0
    stdout: str = ""
    stderr: str = ""


def log(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def _cmd_for(script: str, python: str) -> list[str]:
    if script.endswith(".py"):
        return [python, script]
    if os.access(script, os.X_OK):
        return [script]
    if script.endswith(".sh"):
        return ["bash", script]
    return [script]


def _advertises_json(script: str) -> bool:
    """A script whose source mentions `--json` gets it (machine-readable rows)."""
    try:
        with open(script, encoding="utf-8", errors="replace") as f:
            return "--json" in f.read()
    except OSError:
        return False


def run_others(out_dir: str, quick: bool, timeout: float, deadline: float) -> list[External]:
    """Each script present, in turn; none may run past `deadline` (monotonic)."""
    results = []
    for key, title, pattern in OTHERS:
        found = sorted(p for p in glob.glob(os.path.join(mb.BENCH_DIR, pattern))
                       if not p.endswith((".md", ".json", ".txt", ".pyc")))
        if not found:
            log(f"{title}: not present ({pattern})")
            results.append(External(key, title, None, "not present"))
            continue
        script = found[0]
        left = deadline - time.monotonic()
        if left < 15:
            log(f"{title}: skipped, the suite's time budget is spent")
            results.append(External(key, title, os.path.relpath(script, mb.ROOT),
                                    "skipped (time budget spent)"))
            continue
        this_timeout = min(timeout, left)
        env = dict(os.environ, BENCH_RESULTS_DIR=out_dir, BENCH_QUICK="1" if quick else "0")
        cmd = _cmd_for(script, sys.executable)
        if _advertises_json(script):
            cmd.append("--json")
        log(f"{title}: {' '.join(cmd)}")
        t0 = time.monotonic()
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=this_timeout, env=env,
                               cwd=mb.ROOT, stdin=subprocess.DEVNULL)
            status = "ok" if r.returncode == 0 else f"failed (exit {r.returncode})"
            out, err = r.stdout, r.stderr
        except subprocess.TimeoutExpired as e:
            status = f"timed out after {this_timeout:.0f}s"
            out = e.stdout.decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
            err = e.stderr.decode() if isinstance(e.stderr, bytes) else (e.stderr or "")
        results.append(External(key, title, os.path.relpath(script, mb.ROOT), status,
                                time.monotonic() - t0, out, err))
    return results


def _version(cmd: list[str]) -> str:
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=20)
        return (r.stdout or r.stderr).strip().splitlines()[0]
    except (OSError, subprocess.TimeoutExpired, IndexError):
        return "not installed"


def machine_info() -> dict[str, str]:
    cpu = "unknown"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    try:
        from enforcer.planstore import libseccomp_version
        libseccomp = libseccomp_version()
    except Exception:
        libseccomp = "unknown"
    try:
        with open("/proc/sys/net/core/bpf_jit_enable") as f:
            jit = f.read().strip()
    except OSError:
        jit = "unknown"
    try:
        with open("/sys/devices/system/cpu/vulnerabilities/spec_store_bypass") as f:
            ssb = f.read().strip()
    except OSError:
        ssb = "unknown"
    return {
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
        "cpu": cpu,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "libseccomp": libseccomp,
        "runc": _version(["runc", "--version"]),
        "docker": _version(["docker", "--version"]),
        "gcc": _version(["gcc", "--version"]),
        "bpf_jit_enable": jit,
        "clocksource": mb.machine_clock_note(),
        "spec_store_bypass": ssb,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="bench/run", description="The whole benchmark suite; writes bench/results/.")
    ap.add_argument("--rounds", type=int, default=30,
                    help="round-robin rounds of the syscall microbench (default 30)")
    ap.add_argument("--argpos-rounds", type=int, default=40,
                    help="rounds of the argument-position and filter-cost tests (default 40)")
    ap.add_argument("--quick", action="store_true",
                    help="a fast smoke run (few rounds; other scripts get BENCH_QUICK=1)")
    ap.add_argument("--skip-others", action="store_true",
                    help="do not run the other areas' scripts")
    ap.add_argument("--other-timeout", type=float, default=180.0,
                    help="seconds one other area's script may take (default 180)")
    ap.add_argument("--budget", type=float, default=560.0,
                    help="seconds the whole suite may take; the other areas' scripts are cut "
                         "off to stay inside it (default 560: bench/run must end in 10 min)")
    ap.add_argument("--out", default=os.path.join(mb.BENCH_DIR, "results"),
                    help="where the report goes (default bench/results)")
    ap.add_argument("--docker-profile", default=mb.DOCKER_PROFILE_DEFAULT,
                    help="Docker's seccomp profile JSON (default: the shared fixture)")
    ap.add_argument("--check", action="store_true",
                    help="exit 1 if an acceptance check of issue 8 fails")
    ap.add_argument("--command", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.quick:
        args.rounds, args.argpos_rounds = min(args.rounds, 4), min(args.argpos_rounds, 6)
    command = args.command or "bench/run " + " ".join(
        shlex.quote(a) for a in (argv or sys.argv[1:]))
    t_start = time.monotonic()
    os.makedirs(args.out, exist_ok=True)

    if os.geteuid() != 0:
        log("note: not root; seccomp filters still load (no_new_privs), results are comparable")
    log("building syscall_bench")
    binary = mb.build_c()

    log("preparing filters")
    variants, missing = mb.prepare_variants(args.docker_profile)
    for m in missing:
        log(f"variant missing: {m}")
    import runc_check

    log("checking the Docker filter against the one runc loads")
    runc_ok, runc_text = runc_check.check(args.docker_profile)
    log(f"  {runc_text}")
    names = mb.ARG_FREE + mb.ARG_CHECKED
    log("probing which syscalls each filter allows")
    probes = {v.key: mb.probe(binary, v, names) for v in variants}
    measure = {v.key: tuple(n for n in names if probes[v.key][n].measurable) for v in variants}

    log(f"syscall microbench: {len(variants)} variants x {args.rounds} rounds")
    t0 = time.monotonic()
    micro = mb.round_robin(binary, variants, measure, args.rounds)
    micro_s = time.monotonic() - t0

    log("argument-position test")
    ap_variants, ap_notes = argpos.prepare()
    t0 = time.monotonic()
    ap_measure = {v.key: ("personality", "getppid") for v in ap_variants}
    ap_results = mb.round_robin(binary, ap_variants, ap_measure, args.argpos_rounds)
    ap_s = time.monotonic() - t0

    log("filter-cost experiment")
    import filtercost

    fc_variants = filtercost.prepare()
    t0 = time.monotonic()
    fc_results = mb.round_robin(binary, fc_variants, {v.key: ("getppid",) for v in fc_variants},
                                args.argpos_rounds)
    fc_s = time.monotonic() - t0

    others: list[External] = []
    if not args.skip_others:
        others = run_others(args.out, args.quick, args.other_timeout,
                            deadline=t_start + args.budget - 20)  # 20 s for the report

    import report

    total = time.monotonic() - t_start
    verdicts = report.write(
        out_dir=args.out, command=command, info=machine_info(), variants=variants,
        missing=missing, probes=probes, micro=micro, micro_seconds=micro_s,
        rounds=args.rounds, ap_variants=ap_variants, ap_notes=ap_notes, ap_results=ap_results,
        ap_seconds=ap_s, ap_rounds=args.argpos_rounds, fc_variants=fc_variants,
        fc_results=fc_results, fc_seconds=fc_s, runc_check=(runc_ok, runc_text), others=others,
        total_seconds=total,
        skipped_others=args.skip_others)
    for check, figure, result in verdicts:
        print(f"{result:8s} {check}: {figure}")
    where = os.path.relpath(args.out, mb.ROOT)
    log(f"done in {time.monotonic() - t_start:.0f}s: {where}/README.md")
    return 1 if args.check and any(v[2] == "FAIL" for v in verdicts) else 0


if __name__ == "__main__":
    sys.exit(main())
