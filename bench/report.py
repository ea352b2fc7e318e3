"""Write bench/results/: README.md (tables), results.json (raw samples),
syscalls.png (chart).

The chart needs matplotlib. bench/run installs it into the venv when it is
missing (it is a bench-only tool, not a dependency of enforcer); if that
is impossible the report says so and everything else is still written.
"""

from __future__ import annotations

import datetime
import json
import os
from typing import Any

import bpf_tools as bt
import microbench as mb

NOISE_ARGPOS = "the difference of medians is smaller than the larger interquartile range"


def _fmt(ns: float) -> str:
    return f"{ns / 1000:.1f} µs" if ns >= 10_000 else f"{ns:.0f}"


def _cell(s: mb.Series | None) -> str:
    if s is None or not s.samples:
        return "–"
    return f"{_fmt(s.median)} ({_fmt(s.lo)}–{_fmt(s.hi)})"


def _pct(a: float, b: float) -> str:
    return f"{(a / b - 1) * 100:+.1f}%"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return out


def _syscall_nr(name: str) -> int | None:
    try:
        import pyseccomp

        nr = pyseccomp.resolve_syscall(pyseccomp.Arch.NATIVE, name)
        return int(nr) if nr >= 0 else None
    except Exception:
        return None


def _native_syscalls() -> list[int]:
    try:
        from enforcer.compile.seccomp import native_syscall_table

        return sorted(native_syscall_table())
    except Exception:
        return list(range(0, 460))


# -- acceptance ---------------------------------------------------------------


def acceptance(micro: dict[str, dict[str, mb.Series]], probes: dict[str, Any],
               ap_results: dict[str, dict[str, mb.Series]]) -> list[list[str]]:
    rows: list[list[str]] = []
    d, fl, dk = micro.get("default"), micro.get("floor"), micro.get("docker")

    def allowed(variant: str, name: str) -> bool:
        return variant in probes and probes[variant][name].status == "allowed"

    if d and fl:
        ratios = [(d[n].median / fl[n].median - 1, n) for n in mb.ARG_FREE
                  if n in d and n in fl and allowed("default", n)]
        if ratios:
            worst, name = max(ratios)
            rows.append(["argument-free syscalls: `default` ≤ floor + 10% (medians)",
                         f"worst: {name} {worst * 100:+.1f}%", "PASS" if worst <= 0.10 else "FAIL"])
    else:
        rows.append(["argument-free syscalls: `default` ≤ floor + 10%",
                     "`default` filter not available", "NOT RUN"])
    if d and dk:
        slower, above = [], []
        compared = 0
        for n in mb.ARG_FREE + mb.ARG_CHECKED:
            if n in d and n in dk and allowed("default", n) and allowed("docker", n):
                compared += 1
                if d[n].median > dk[n].median:
                    above.append(f"{n} {_pct(d[n].median, dk[n].median)}")
                    same, _ = same_within_noise(d[n], dk[n])
                    if not same:
                        slower.append(f"{n} {_pct(d[n].median, dk[n].median)}")
        not_cmp = [n for n in mb.ARG_FREE + mb.ARG_CHECKED
                   if not (allowed("default", n) and allowed("docker", n))]
        detail = ("slower beyond noise on: " + ", ".join(slower)) if slower else (
            "no slower on any")
        if above:
            detail += ("; median above Docker's by less than the noise (larger IQR) on: "
                       + ", ".join(above))
        if not_cmp:
            detail += f"; not compared (denied by one side): {', '.join(not_cmp)}"
        rows.append([f"every measured syscall: `default` no slower than Docker (medians, "
                     f"{compared} syscalls; a higher median counts only beyond the IQR)",
                     detail, "PASS" if not slower and compared else "FAIL"])
    else:
        rows.append(["`default` ≤ Docker on every syscall", "a filter is missing", "NOT RUN"])
    f, last = ap_results.get("enforcer-first"), ap_results.get("enforcer-last")
    if f and last and "personality" in f and "personality" in last:
        same, text = same_within_noise(f["personality"], last["personality"])
        rows.append(["argument-checked syscall: same cost with its rule first or last",
                     "personality " + text, "PASS" if same else "FAIL"])
    else:
        rows.append(["rule first vs last", "enforcer compiler not available", "NOT RUN"])
    return rows


def same_within_noise(a: mb.Series, b: mb.Series) -> tuple[bool, str]:
    """The argpos pass rule: |Δ median| <= the larger interquartile range."""
    iqr = max(q[1] - q[0] for q in (a.quartiles(), b.quartiles()))
    diff = abs(a.median - b.median)
    return diff <= iqr, (f"first {a.median:.0f} ns, last {b.median:.0f} ns "
                         f"(Δ {diff:.1f} ns, larger IQR {iqr:.1f} ns)")


# -- anatomy ------------------------------------------------------------------


def anatomy(variants: list[mb.Variant]) -> tuple[list[str], list[list[str]]]:
    """Per filter: size, how many syscalls the action cache takes, and for
    each measured syscall either `cache` or the instructions it runs."""
    native = _native_syscalls()
    header = ["filter", "insns", "native syscalls cached"] + list(mb.SYSCALL_OF)
    rows = []
    for v in variants:
        if not v.bpf_path:
            continue
        with open(v.bpf_path, "rb") as fh:
            prog = bt.parse(fh.read())
        cached = sum(bt.kernel_cache_allows(prog, "x86_64", nr) for nr in native)
        cells = []
        for bench, sc in mb.SYSCALL_OF.items():
            nr = _syscall_nr(sc)
            if nr is None:
                cells.append("?")
            elif bt.kernel_cache_allows(prog, "x86_64", nr):
                cells.append("cache")
            else:
                ret, steps = bt.run(prog, "x86_64", nr, mb.SYSCALL_ARGS[bench])
                act = bt.action_name(ret)
                cells.append(f"{steps} → {act.lower()}" if act != "ALLOW" else f"{steps}")
        rows.append([v.key, str(len(prog)), f"{cached}/{len(native)}"] + cells)
    return header, rows


# -- externals ----------------------------------------------------------------


def _parse_json(text: str) -> Any:
    text = text.strip()
    if not text:
        return None
    for candidate in (text, text.splitlines()[-1]):
        try:
            return json.loads(candidate)
        except ValueError:
            continue
    return None


def _external_section(e: Any) -> tuple[str, list[str]]:
    """(headline, body lines) for one external script's output."""
    if e.status == "not present" or e.status.startswith("skipped"):
        return e.status, []
    obj = _parse_json(e.stdout)
    body: list[str] = []
    headline = ""
    if isinstance(obj, dict):
        headline = str(obj.get("summary", ""))
        rows = obj.get("rows")
        if isinstance(rows, list) and rows and all(isinstance(r, dict) for r in rows):
            # Rows of different kinds ({"kind": ...}) get a table each.
            groups: dict[str, list[dict[str, Any]]] = {}
            for r in rows:
                groups.setdefault(str(r.get("kind", "")), []).append(r)
            for kind, members in groups.items():
                cols: list[str] = []
                for r in members:
                    cols += [k for k in r if k not in cols and k != "kind"]
                if kind:
                    body += ([""] if body else []) + [f"**{kind}**", ""]
                body += _table(cols, [[str(r.get(c, "")) for c in cols] for r in members])
        else:
            body += _table(["key", "value"], [[str(k), str(v)] for k, v in obj.items()
                                              if k != "summary"])
        if obj.get("command"):
            body += ["", f"Command: `{obj['command']}`"]
    else:
        lines = e.stdout.rstrip().splitlines()
        tables = [i for i, line in enumerate(lines) if line.startswith("|")]
        if tables:
            # Keep the Markdown from the last heading above its first table
            # (progress output and older appended runs come before it); their
            # headings go below this report's "## <benchmark>".
            heads = [i for i, line in enumerate(lines[:tables[0]]) if line.startswith("#")]
            lines = lines[heads[-1]:] if heads else lines
            body += ["###" + line.lstrip("#") if line.startswith("#") else line
                     for line in lines]
        elif lines:
            body += ["```", *lines[-60:], "```"]
        headline = _headline(lines)
    if e.status != "ok":
        tail = e.stderr.strip().splitlines()[-15:]
        if tail:
            body += ["", f"**{e.status}**; last lines of stderr:", "```", *tail, "```"]
        else:
            body += ["", f"**{e.status}**, with nothing on stderr (the script's own pass/fail "
                     "check, if it has one, is in its output above)."]
    return headline[:160], body


def _headline(lines: list[str]) -> str:
    """The line most likely to say the result: a bullet with a bold figure,
    else a bullet about enforcer, else the first bullet, else the first
    plain line."""
    bullets = [line[2:].strip() for line in lines if line.startswith("- ")]
    for b in bullets:
        if "**" in b:
            return b
    for b in bullets:
        if "enforcer" in b:
            return b
    if bullets:
        return bullets[0]
    # A table row about enforcer: "<first cell>: <second header> <second cell>".
    rows = [[c.strip() for c in line.strip().strip("|").split("|")]
            for line in lines if line.startswith("|")]
    if len(rows) > 2 and len(rows[0]) > 1:
        for cells in rows[2:]:
            if "enforcer" in cells[0] and len(cells) > 1:
                return f"{cells[0]}: {rows[0][1]} {cells[1]}"
    return next((line.strip() for line in lines
                 if line.strip() and not line.startswith(("#", "|", "```"))), "")


# -- chart --------------------------------------------------------------------


def chart(path: str, micro: dict[str, dict[str, mb.Series]], variants: list[mb.Variant],
          info: dict[str, str]) -> str | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed (bench/run could not install it); no chart"
    keys = [v.key for v in variants if micro.get(v.key)]
    panels = [("ns per call", [n for n in mb.ARG_FREE + ("personality",)], 1.0),
              ("µs per call", ["socket_inet"], 1000.0), ("µs per call", ["fork_wait"], 1000.0)]
    fig, axes = plt.subplots(1, 3, figsize=(14, 6.5),
                             gridspec_kw={"width_ratios": [3.2, 0.8, 0.8]})
    colors = plt.get_cmap("tab10")
    width = 0.8 / max(1, len(keys))
    for ax, (unit, names, div) in zip(axes, panels):
        for i, k in enumerate(keys):
            xs, ys, lo, hi = [], [], [], []
            for j, n in enumerate(names):
                s = micro[k].get(n)
                if not s or not s.samples:
                    continue
                # Whiskers: the interquartile range (min-max is in the tables;
                # one preempted process would otherwise dominate the picture).
                q1, q3 = s.quartiles()
                xs.append(j + (i - (len(keys) - 1) / 2) * width)
                ys.append(s.median / div)
                lo.append(max(0.0, s.median - q1) / div)
                hi.append(max(0.0, q3 - s.median) / div)
            ax.bar(xs, ys, width, yerr=[lo, hi], capsize=2, label=k, color=colors(i),
                   error_kw={"elinewidth": 0.8})
        ax.set_xticks(range(len(names)))
        ax.set_xticklabels(names, rotation=30, ha="right")
        ax.set_ylabel(f"{unit} (median; whiskers: interquartile range)")
        ax.grid(axis="y", alpha=0.3)
    axes[0].legend(ncol=3, fontsize=9)
    fig.suptitle("Per-syscall cost under seccomp filters (lower is better)")
    foot = (f"{info['cpu']} · {info['machine']} · kernel {info['kernel']} · libseccomp "
            f"{info['libseccomp']} · {info['runc'].split(chr(10))[0]} · {info['docker']} · "
            f"Python {info['python']}")
    fig.text(0.01, 0.01, foot, fontsize=8, color="0.3")
    fig.tight_layout(rect=(0, 0.03, 1, 0.96))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return None


# -- the README ---------------------------------------------------------------


def write(*, out_dir: str, command: str, info: dict[str, str], variants: list[mb.Variant],
          missing: list[str], probes: dict[str, dict[str, mb.ProbeResult]],
          micro: dict[str, dict[str, mb.Series]], micro_seconds: float, rounds: int,
          ap_variants: list[mb.Variant], ap_notes: list[str],
          ap_results: dict[str, dict[str, mb.Series]], ap_seconds: float, ap_rounds: int,
          fc_variants: list[mb.Variant], fc_results: dict[str, dict[str, mb.Series]],
          fc_seconds: float, runc_check: tuple[bool, str], others: list[Any],
          total_seconds: float, skipped_others: bool) -> list[list[str]]:
    """Write the report; return the acceptance rows (check, figure, result)."""
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    chart_problem = chart(os.path.join(out_dir, "syscalls.png"), micro, variants, info)
    L: list[str] = ["# Benchmark results", ""]
    L += [f"Made by `{command}` on {now} in {total_seconds:.0f} s "
          "(run from the repository root; `bench/run --help` for options).", ""]
    L += ["## Machine", ""]
    L += _table(["what", "value"], [[k, v] for k, v in info.items()])
    L += ["", "## Acceptance (issue 8)", ""]
    verdicts = acceptance(micro, probes, ap_results)
    L += _table(["check", "figure", "result"], verdicts)

    L += ["", "## Summary of all benchmarks", ""]
    summary = [["per-syscall overhead", "bench/syscall_bench.c", "ok",
                f"{micro_seconds:.0f}", f"{len(variants)} filters × {rounds} rounds, below"],
               ["argument position", "bench/argpos.py", "ok", f"{ap_seconds:.0f}",
                f"{len(ap_variants)} filters × {ap_rounds} rounds, below"]]
    summary.append(["filter cost anatomy", "bench/filtercost.py", "ok", f"{fc_seconds:.0f}",
                    f"{len(fc_variants)} filters × {ap_rounds} rounds, below"])
    sections: list[tuple[str, list[str]]] = []
    for e in others:
        headline, body = _external_section(e)
        seconds = f"{e.seconds:.0f}" if e.script else "–"
        summary.append([e.title, e.script or "–", e.status, seconds,
                        headline.replace("|", "/")])
        if body:
            sections.append((e.title, body))
    if skipped_others:
        summary.append(["other areas' scripts", "–", "skipped (--skip-others)", "–", ""])
    L += _table(["benchmark", "script", "status", "seconds", "headline"], summary)

    # -- per-syscall
    L += ["", "## Per-syscall cost", "",
          f"ns per call: median over {rounds} processes (min–max); each process's figure is the "
          "minimum of 25 short timed batches (15 for fork_wait), pinned to one CPU. Variants ran "
          "round-robin, one process per variant per round. Filters are loaded by the "
          "benchmark itself (no_new_privs + "
          "seccomp(SET_MODE_FILTER, flags 0)), so only the BPF differs — except `default-run`, "
          "where `enforcer run --policy default` starts the program and applies the whole "
          "policy itself (filter flags from the Plan, capabilities, mounts): the end-to-end "
          "check that what enforcer loads costs what the `default` column says. "
          "![chart](syscalls.png)", ""]
    keys = [v.key for v in variants]
    header = ["syscall"] + keys
    rows = []
    for n in mb.ARG_FREE + mb.ARG_CHECKED:
        row = [f"`{n}`" + (" (args checked)" if n in mb.ARG_CHECKED else "")]
        for k in keys:
            p = probes[k][n]
            cell = _cell(micro[k].get(n)) if p.measurable else p.status
            if p.measurable and p.status != "allowed":
                cell += f" **[{p.status}: deny path]**"
            row.append(cell)
        rows.append(row)
    L += _table(header, rows)
    L += ["", "Relative to the floor (medians) — what each filter adds over seccomp being on:",
          ""]
    rel_keys = [k for k in keys if k not in ("none", "floor")]
    rel_rows = []
    for n in mb.ARG_FREE + mb.ARG_CHECKED:
        fl = micro.get("floor", {}).get(n)
        row = [f"`{n}`"]
        for k in rel_keys:
            s = micro[k].get(n)
            row.append(_pct(s.median, fl.median) if s and fl else "–")
        none = micro.get("none", {}).get(n)
        row.append(_pct(fl.median, none.median) if fl and none else "–")
        rel_rows.append(row)
    L += _table(["syscall"] + [f"{k} vs floor" for k in rel_keys] + ["floor vs none"], rel_rows)
    L += ["", "Why this floor: the issue's floor is \"the cost of seccomp being on at all\". "
          "The floor filter is the smallest one a real tool loads (libseccomp: architecture "
          "check, one errno rule for acct(2), allow). Every syscall timed here depends only on "
          "(arch, nr) in it, so the kernel's action cache allows them without running the "
          "filter: what is left is the syscall entry's seccomp slow path and the cache lookup. "
          "The 1-instruction allow-all filter (`allow1`) is timed beside it to show that no "
          "cheaper filter exists: the two are equal within noise.", "", "Filters:", ""]
    for v in variants:
        L.append(f"- **{v.key}**: {v.label}" + (f", {v.insns} instructions" if v.insns else "")
                 + (f" — {v.note}" if v.note else ""))
    for m in missing:
        L.append(f"- missing: {m}")
    L += ["", f"Docker's filter, checked against runc (bench/runc_check.py): {runc_check[1]}."]
    denied = [(k, n, probes[k][n].status) for k in keys for n in probes[k]
              if probes[k][n].status != "allowed"]
    if denied:
        L += ["", "Syscalls a filter does not allow (a denied call is timed on the deny path; a "
              "call that kills the process is not timed):", ""]
        L += [f"- {k}: `{n}` — {st}" for k, n, st in denied]
    else:
        L += ["", "Every filter allows every measured call as the benchmark makes it (checked by "
              "a probe run before the rounds), so no figure above is a deny path."]

    # -- anatomy
    h, rows = anatomy(variants)
    L += ["", "## What the filters make the kernel do", "",
          "Replayed in bench/bpf_tools.py: `cache` = the kernel's seccomp action cache "
          "allows the syscall without running the filter (same check as the kernel's "
          "seccomp_is_const_allow); a number = BPF instructions run for the call as the "
          "benchmark makes it (→ the action when it is not allow).", ""]
    L += _table(h, rows)

    # -- argpos
    L += ["", "## Argument position", "",
          "Two policies that differ only in order: 40 argument-checked allow rules on 40 "
          "other syscalls, and `personality(arg0 == 0xffffffff) -> allow` first or last. "
          f"`getppid` (no rule touches it) is the control. Median over {ap_rounds} rounds "
          "(min–max); insns = BPF instructions personality runs through.", ""]
    rows = []
    for v in ap_variants:
        with open(v.bpf_path or "", "rb") as fh:
            prog = bt.parse(fh.read())
        steps = bt.run(prog, "x86_64", _syscall_nr("personality") or 135, (0xFFFFFFFF,))[1]
        r = ap_results.get(v.key, {})
        rows.append([v.key, v.label, str(v.insns), str(steps), _cell(r.get("personality")),
                     _cell(r.get("getppid"))])
    L += _table(["filter", "what", "size", "insns run", "personality ns", "getppid ns"], rows)
    L += [""] + [f"- {n}" for n in ap_notes]
    for tag in ("enforcer", "linear"):
        first, last = ap_results.get(f"{tag}-first", {}), ap_results.get(f"{tag}-last", {})
        if "personality" in first and "personality" in last:
            same, text = same_within_noise(first["personality"], last["personality"])
            L.append(f"- {tag}: {text} → {'same within noise' if same else 'DIFFERENT'}")
    L += ["", f"Pass rule: {NOISE_ARGPOS}. The linear reference shows the rule can fail."]

    # -- filter cost anatomy
    L += ["", "## What each part of a filter costs", "",
          "getppid under hand-written programs that differ in one thing at a time "
          f"(bench/filtercost.py); median over {ap_rounds} rounds (min–max). "
          "Δ = added to the cache-hit figure.", ""]
    rows = []
    hit = fc_results.get("hit", {}).get("getppid")
    for v in fc_variants:
        series = fc_results.get(v.key, {}).get("getppid")
        path = "–"
        if v.bpf_path:
            with open(v.bpf_path, "rb") as fh:
                prog = bt.parse(fh.read())
            path = str(bt.run(prog, "x86_64", 110)[1])
            if bt.kernel_cache_allows(prog, "x86_64", 110):
                path += " (cached: not run)"
        delta = f"{series.median - hit.median:+.1f}" if series and hit else "–"
        rows.append([v.key, v.label, path, _cell(series), delta])
    L += _table(["filter", "what", "insns on the path", "getppid ns", "Δ ns vs hit"], rows)

    for title, body in sections:
        L += ["", f"## {title}", "", *body]
    if chart_problem:
        L += ["", f"Chart: {chart_problem}."]
    with open(os.path.join(out_dir, "README.md"), "w", encoding="utf-8") as out:
        out.write("\n".join(L) + "\n")

    raw = {
        "command": command, "when": now, "machine": info, "rounds": rounds,
        "variants": [{"key": v.key, "label": v.label, "insns": v.insns, "note": v.note}
                     for v in variants],
        "probes": {k: {n: p.status for n, p in pr.items()} for k, pr in probes.items()},
        "ns_per_call": {k: {n: s.samples for n, s in d.items()} for k, d in micro.items()},
        "argpos": {k: {n: s.samples for n, s in d.items()} for k, d in ap_results.items()},
        "others": [{"key": e.key, "script": e.script, "status": e.status,
                    "seconds": round(e.seconds, 1), "stdout": e.stdout[-4000:]} for e in others],
    }
    with open(os.path.join(out_dir, "results.json"), "w", encoding="utf-8") as out:
        json.dump(raw, out, indent=1, sort_keys=True)
    return verdicts
