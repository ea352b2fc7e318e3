"""A/B start latency of `enforcer run --policy restricted -- /bin/true` for two
checkouts, interleaved round by round (the order alternates every round).

    python3 bench/ab_start.py DIR [ROUNDS]

DIR holds `base-bin/` and `head-bin/` (each written by `python -m
enforcer.launcher --python /usr/bin/python3 DIR/<tree>-bin` run from that
tree's checkout, so each launcher imports its own tree) and `base-cache/`,
`head-cache/` (0700; each filled once by that tree's compiler, so every
measured start is a cache hit). The checkouts must pass the policy-file
trust checks (not under a world- or group-writable directory).
"""
import os
import statistics
import sys
import time

root = sys.argv[1]
runs = int(sys.argv[2]) if len(sys.argv) > 2 else 100
cmds = {t: [f"{root}/{t}-bin/enforcer", "run", "--policy", "restricted", "--", "/bin/true"]
        for t in ("base", "head")}
wall: dict[str, list[float]] = {t: [] for t in cmds}
cpu: dict[str, list[float]] = {t: [] for t in cmds}
null = os.open(os.devnull, os.O_RDWR)
load0 = os.getloadavg()[0]
for i in range(runs + 5):
    order = list(cmds) if i % 2 == 0 else list(reversed(cmds))
    for t in order:
        env = dict(os.environ, ENFORCER_CACHE_DIR=f"{root}/{t}-cache")
        t0 = time.perf_counter_ns()
        pid = os.posix_spawn(cmds[t][0], cmds[t], env,
                             file_actions=[(os.POSIX_SPAWN_DUP2, null, 1)])
        _, status, ru = os.wait4(pid, 0)
        dt = (time.perf_counter_ns() - t0) / 1e6
        if status != 0:
            raise SystemExit(f"ab_start: {t} failed (wait status {status})")
        if i >= 5:  # warm-up rounds
            wall[t].append(dt)
            cpu[t].append((ru.ru_utime + ru.ru_stime) * 1000)
print(f"{runs} rounds, interleaved, load {load0:.2f} -> {os.getloadavg()[0]:.2f}")
print("| tree | wall median ms | wall p10 | wall p90 | CPU median ms | CPU mean ms |")
print("| --- | ---: | ---: | ---: | ---: | ---: |")
for t in cmds:
    w = sorted(wall[t])
    print(f"| {t} | {statistics.median(w):.1f} | {w[len(w) // 10]:.1f} | "
          f"{w[9 * len(w) // 10]:.1f} | {statistics.median(cpu[t]):.1f} | "
          f"{statistics.fmean(cpu[t]):.1f} |")
