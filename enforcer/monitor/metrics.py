"""The monitor's metrics: plain counters kept in dicts, exposed by a
prometheus_client Collector at scrape time.

Why not prometheus_client's Counter objects: the audit path counts up to
100,000 records a second, and ended workloads must disappear from /metrics
after a grace period; a dict increment under one lock is cheaper than
Counter.labels().inc(), and dropping a workload's series is one pass here.

Cardinality is bounded by construction: the `workload` label is a
registered workload id for at most --max-workloads workloads at a time
(further ones are counted under "_overflow"), "unmanaged" for processes of
no workload; `syscall` is a name libseccomp knows or "unknown"; `action`,
`resource`, `event`, `source` and `kind` are small fixed sets. See
docs/metrics.md.
"""

from __future__ import annotations

import threading
from typing import Iterable, Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily
from prometheus_client.registry import Collector

from enforcer import __version__

VIOLATION_LABELS = ("workload", "policy", "syscall", "action")
RECORDED_LABELS = ("workload", "policy")
LIMIT_LABELS = ("workload", "policy", "resource", "event")
FACT_LABELS = ("workload", "policy")
LANDLOCK_LABELS = ("workload", "policy", "access")


class MonitorMetrics(Collector):
    def __init__(self, sources: Iterable[str] = ("audit",)) -> None:
        self.lock = threading.Lock()
        self.violations: dict[tuple[str, str, str, str], int] = {}
        self.limit_events: dict[tuple[str, str, str, str], int] = {}
        # (recording id, base policy) -> syscalls an `enforcer record` logged
        self.recorded: dict[tuple[str, str], int] = {}
        # (workload, policy, access) -> Landlock denials (monitor/landlock.py)
        self.landlock_denials: dict[tuple[str, str, str], int] = {}
        self.workloads_by_policy: dict[str, int] = {}
        # Registry records whose process is gone (or whose pid now belongs to
        # another process): not counted in enforcer_workloads.
        self.stale_by_policy: dict[str, int] = {}
        # workload label -> (policy, processes, rss bytes, cpu seconds)
        self.facts: dict[str, tuple[str, int, int, float]] = {}
        self.events: dict[str, int] = {s: 0 for s in sources}
        self.lost: dict[str, int] = {s: 0 for s in sources}
        self.lost_estimated: dict[str, int] = {s: 0 for s in sources}
        self.malformed: dict[str, int] = {}
        self.source_info: dict[str, bool] = {}  # source -> complete?
        self.fork_tracking = 0
        self.audit_daemon = 0  # 1 while the monitor is the kernel's audit daemon
        # Bumped on every change (by anyone writing these tables, under the
        # lock), so a scrape can reuse the last rendering.
        self.version = 0
        self._rendered: tuple[int, bytes] | None = None
        self._prefixes: dict[tuple[str, tuple[str, ...]], str] = {}

    # -- updates (callers hold no lock; each takes it briefly) -----------------

    def count_violation(self, workload: str, policy: str, syscall: str, action: str,
                        n: int = 1) -> None:
        key = (workload, policy, syscall, action)
        with self.lock:
            self.violations[key] = self.violations.get(key, 0) + n
            self.version += 1

    def count_limit_event(self, workload: str, policy: str, resource: str, event: str,
                          n: int = 1) -> None:
        key = (workload, policy, resource, event)
        with self.lock:
            self.limit_events[key] = self.limit_events.get(key, 0) + n
            self.version += 1

    def count_landlock_denials(self, batch: dict[tuple[str, str, str], int]) -> None:
        """Add a batch of (workload, policy, access) -> denials."""
        with self.lock:
            table = self.landlock_denials
            for key, n in batch.items():
                table[key] = table.get(key, 0) + n
            self.version += 1

    def count_event(self, source: str, n: int = 1) -> None:
        with self.lock:
            self.events[source] = self.events.get(source, 0) + n
            self.version += 1

    def count_lost(self, source: str, n: int = 1) -> None:
        with self.lock:
            self.lost[source] = self.lost.get(source, 0) + n
            self.version += 1

    def count_lost_estimated(self, source: str, n: int) -> None:
        with self.lock:
            self.lost_estimated[source] = self.lost_estimated.get(source, 0) + n
            self.version += 1

    def set_audit_daemon(self, registered: bool) -> None:
        with self.lock:
            if self.audit_daemon != int(registered):
                self.audit_daemon = int(registered)
                self.version += 1

    def count_malformed(self, kind: str, n: int = 1) -> None:
        with self.lock:
            self.malformed[kind] = self.malformed.get(kind, 0) + n
            self.version += 1

    def set_workloads(self, by_policy: dict[str, int]) -> None:
        with self.lock:
            if by_policy != self.workloads_by_policy:
                self.workloads_by_policy = dict(by_policy)
                self.version += 1

    def set_stale_records(self, by_policy: dict[str, int]) -> None:
        with self.lock:
            if by_policy != self.stale_by_policy:
                self.stale_by_policy = dict(by_policy)
                self.version += 1

    def set_facts(self, facts: dict[str, tuple[str, int, int, float]]) -> None:
        with self.lock:
            if facts != self.facts:
                self.facts = dict(facts)
                self.version += 1

    def forget_workload(self, label: str) -> None:
        """Drop every series of an expired workload."""
        with self.lock:
            tables: tuple[dict[tuple[str, ...], int], ...] = (
                self.violations, self.limit_events, self.recorded)  # type: ignore[assignment]
            for table in tables:
                for key in [k for k in table if k[0] == label]:
                    del table[key]
            for key3 in [k for k in self.landlock_denials if k[0] == label]:
                del self.landlock_denials[key3]
            self.facts.pop(label, None)
            self._prefixes = {k: v for k, v in self._prefixes.items() if k[1][:1] != (label,)}
            self.version += 1

    # -- reading ----------------------------------------------------------------

    def violation_count(self, workload: str) -> int:
        with self.lock:
            return sum(v for k, v in self.violations.items() if k[0] == workload)

    def render_text(self) -> bytes:
        """The Prometheus text format (0.0.4), fast, cached until a change.

        Why not prometheus_client's generate_latest: with 1,000 workloads it
        spends ~20 ms building and formatting 4,000 samples, most of a 50 ms
        scrape budget on a busy node. Here each series' "name{labels} "
        prefix is escaped once and kept, and the whole body is reused until
        a metric changes. A unit test checks it against generate_latest and
        promtool.
        """
        with self.lock:
            if self._rendered is not None and self._rendered[0] == self.version:
                return self._rendered[1]
            version = self.version
            tables: list[tuple[str, tuple[str, ...], list[tuple[tuple[str, ...], int]]]] = [
                (name, labels, list(table.items())) for name, labels, table in (
                    ("enforcer_seccomp_violations_total", VIOLATION_LABELS, self.violations),
                    ("enforcer_limit_events_total", LIMIT_LABELS, self.limit_events),
                    ("enforcer_recorded_syscalls_total", RECORDED_LABELS, self.recorded),
                    ("enforcer_landlock_denials_total", LANDLOCK_LABELS, self.landlock_denials))]
            facts = list(self.facts.items())
            stale = list(self.stale_by_policy.items())
            rest = (list(self.workloads_by_policy.items()), list(self.events.items()),
                    list(self.lost.items()), list(self.lost_estimated.items()),
                    list(self.malformed.items()), list(self.source_info.items()),
                    self.fork_tracking, self.audit_daemon)
        (by_policy, events, lost, lost_estimated, malformed, source_info, fork_tracking,
         audit_daemon) = rest
        prefixes = self._prefixes
        out: list[str] = []
        append = out.append

        def prefix(name: str, labels: tuple[str, ...], values: tuple[str, ...]) -> str:
            key = (name, values)
            p = prefixes.get(key)
            if p is None:
                inner = ",".join(f'{k}="{_escape_label(v)}"' for k, v in zip(labels, values))
                p = prefixes[key] = f"{name}{{{inner}}} "
            return p

        for name, labels, rows in tables:
            append(_HEADERS[name])
            for key, value in rows:
                append(f"{prefix(name, labels, key)}{value}.0\n")
        append(_HEADERS["enforcer_workloads"])
        for policy, n in by_policy:
            append(f"{prefix('enforcer_workloads', ('policy',), (policy,))}{n}.0\n")
        append(_HEADERS["enforcer_registry_stale_records"])
        for policy, n in stale:
            append(f"{prefix('enforcer_registry_stale_records', ('policy',), (policy,))}{n}.0\n")
        for index, name in enumerate(("enforcer_workload_processes",
                                      "enforcer_workload_memory_bytes",
                                      "enforcer_workload_cpu_seconds_total")):
            append(_HEADERS[name])
            for label, row in facts:
                number = float(row[index + 1])
                append(f"{prefix(name, FACT_LABELS, (label, row[0]))}{_format_value(number)}\n")
        for name, label, rows2 in (("enforcer_monitor_events_total", "source", events),
                                   ("enforcer_monitor_events_lost_total", "source", lost),
                                   ("enforcer_monitor_events_lost_estimated_total", "source",
                                    lost_estimated),
                                   ("enforcer_monitor_malformed_total", "kind", malformed)):
            append(_HEADERS[name])
            for value_label, n in rows2:
                append(f"{prefix(name, (label,), (value_label,))}{n}.0\n")
        append(_HEADERS["enforcer_monitor_source"])
        for source, complete in source_info:
            values = (source, "true" if complete else "false")
            append(f"{prefix('enforcer_monitor_source', ('source', 'complete'), values)}1.0\n")
        append(_HEADERS["enforcer_monitor_fork_tracking"])
        append(f"enforcer_monitor_fork_tracking {fork_tracking}.0\n")
        append(_HEADERS["enforcer_monitor_audit_daemon"])
        append(f"enforcer_monitor_audit_daemon {audit_daemon}.0\n")
        append(_HEADERS["enforcer_build_info"])
        append(f'enforcer_build_info{{version="{_escape_label(__version__)}"}} 1.0\n')
        body = "".join(out).encode()
        with self.lock:
            self._rendered = (version, body)
        return body

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily | InfoMetricFamily]:
        with self.lock:
            violations = list(self.violations.items())
            limits = list(self.limit_events.items())
            recorded = list(self.recorded.items())
            landlock = list(self.landlock_denials.items())
            by_policy = list(self.workloads_by_policy.items())
            stale = list(self.stale_by_policy.items())
            facts = list(self.facts.items())
            events = list(self.events.items())
            lost = list(self.lost.items())
            lost_estimated = list(self.lost_estimated.items())
            malformed = list(self.malformed.items())
            source_info = list(self.source_info.items())
            fork_tracking = self.fork_tracking
            audit_daemon = self.audit_daemon

        yield _counter("enforcer_seccomp_violations",
                       "Seccomp filter decisions logged for a workload (denials, and would-be "
                       "denials of audit-mode policies as action=log).",
                       VIOLATION_LABELS, violations)
        yield _counter("enforcer_limit_events",
                       "cgroup limit events of a workload (memory oom/oom_kill/max/failcnt, pids "
                       "max, cpu throttled).", LIMIT_LABELS, limits)
        yield _counter("enforcer_recorded_syscalls",
                       "Syscalls logged by an `enforcer record` session (learning a policy: "
                       "counted apart, never as violations).", RECORDED_LABELS, recorded)

        c = CounterMetricFamily("enforcer_landlock_denials",
                                "Landlock denials the kernel logged for a workload, per denied "
                                "access (fs.write_file, net.bind_tcp, scope.signal, ...).",
                                labels=LANDLOCK_LABELS)
        for key3, value in landlock:
            c.add_metric(key3, value)
        yield c

        g = GaugeMetricFamily("enforcer_workloads", "Running workloads known from the registry.",
                              labels=("policy",))
        for policy, n in by_policy:
            g.add_metric((policy,), n)
        yield g
        g = GaugeMetricFamily("enforcer_registry_stale_records",
                              "Registry records whose process is gone (or whose pid a newer "
                              "process has taken): left behind by a launcher that died, not "
                              "counted in enforcer_workloads.", labels=("policy",))
        for policy, n in stale:
            g.add_metric((policy,), n)
        yield g

        procs = GaugeMetricFamily("enforcer_workload_processes",
                                  "Processes in the workload.", labels=FACT_LABELS)
        mem = GaugeMetricFamily("enforcer_workload_memory_bytes",
                                "Resident memory of the workload's processes.", labels=FACT_LABELS)
        cpu = CounterMetricFamily("enforcer_workload_cpu_seconds",
                                  "CPU time (user+system) used by the workload.", labels=FACT_LABELS)
        for label, (policy, n, rss, seconds) in facts:
            procs.add_metric((label, policy), n)
            mem.add_metric((label, policy), rss)
            cpu.add_metric((label, policy), seconds)
        yield procs
        yield mem
        yield cpu

        yield _counter("enforcer_monitor_events", "Records received, per source.",
                       ("source",), [((source,), n) for source, n in events])
        yield _counter("enforcer_monitor_events_lost",
                       "Records that did not reach the monitor, per source, from the kernel's "
                       "own counters (audit: the socket's drop counter, or the kernel's lost "
                       "counter while the monitor is the audit daemon; kmsg: printk suppression "
                       "and sequence gaps).", ("source",), [((source,), n) for source, n in lost])
        yield _counter("enforcer_monitor_events_lost_estimated",
                       "Audit serial numbers that never arrived: a cross-check of "
                       "enforcer_monitor_events_lost_total (an estimate).",
                       ("source",), [((source,), n) for source, n in lost_estimated])
        yield _counter("enforcer_monitor_malformed",
                       "Inputs that could not be read and were skipped.",
                       ("kind",), [((kind,), n) for kind, n in malformed])

        g = GaugeMetricFamily("enforcer_monitor_source",
                              "The active violation source; complete=\"false\" means records "
                              "can be lost (the kmsg fallback).", labels=("source", "complete"))
        for source, complete in source_info:
            g.add_metric((source, "true" if complete else "false"), 1)
        yield g
        yield GaugeMetricFamily("enforcer_monitor_fork_tracking",
                                "1 if short-lived processes are attributed through fork events.",
                                value=fork_tracking)
        yield GaugeMetricFamily("enforcer_monitor_audit_daemon",
                                "1 while the monitor is the kernel's audit daemon (no record is "
                                "dropped for its sake: the kernel waits), 0 on multicast.",
                                value=audit_daemon)

        info = InfoMetricFamily("enforcer_build", "enforcer version.")
        info.add_metric((), {"version": __version__})
        yield info


def _counter(name: str, documentation: str, labels: tuple[str, ...],
             rows: Iterable[tuple[tuple[str, ...], float]]) -> CounterMetricFamily:
    family = CounterMetricFamily(name, documentation, labels=labels)
    for key, value in rows:
        family.add_metric(key, value)
    return family


def _escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _format_value(value: float) -> str:
    if isinstance(value, int) or (isinstance(value, float) and value.is_integer()
                                  and abs(value) < 2**53):
        return f"{int(value)}.0"
    return repr(float(value))


def _headers() -> dict[str, str]:
    """"# HELP/# TYPE" lines per sample name, taken from collect() so the
    two renderings cannot drift apart."""
    headers: dict[str, str] = {}
    for family in MonitorMetrics().collect():
        if family.type == "counter":
            name, kind = family.name + "_total", "counter"
        elif family.type == "info":
            name, kind = family.name + "_info", "gauge"
        else:
            name, kind = family.name, family.type
        headers[name] = f"# HELP {name} {_escape_help(family.documentation)}\n# TYPE {name} {kind}\n"
    return headers


_HEADERS = _headers()
