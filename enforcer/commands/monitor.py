"""`enforcer monitor`: serve violation metrics (Prometheus) and a JSON event log."""

from __future__ import annotations

import argparse
import getpass
import os
import signal
import sys
import threading
from typing import Any

from enforcer import exitcodes
from enforcer.errors import EnforcerError

HELP = "serve violation metrics (Prometheus) and a JSON event log"
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT)


class MonitorError(EnforcerError):
    pass


def _positive_int(value: str) -> int:
    try:
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not an integer") from None
    if n <= 0:
        raise argparse.ArgumentTypeError(f"{value!r} must be positive")
    return n


def _positive_float(value: str) -> float:
    try:
        n = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number") from None
    if not n > 0:
        raise argparse.ArgumentTypeError(f"{value!r} must be positive")
    return n


def add_arguments(p: argparse.ArgumentParser) -> None:
    from enforcer.registry import DEFAULT_RUNTIME_DIR

    p.add_argument("--listen", default="127.0.0.1:9469", metavar="ADDR:PORT",
                   help="where to serve /metrics and /healthz (default 127.0.0.1:9469)")
    p.add_argument("--source", choices=("audit", "kmsg"), default="audit",
                   help="audit: the kernel audit stream (needs CAP_AUDIT_READ; see "
                        "--audit-mode). kmsg: /dev/kmsg (lossy fallback)")
    p.add_argument("--audit-mode", choices=("auto", "daemon", "multicast"), default="auto",
                   help="daemon: register as the kernel's audit daemon, so that a full buffer "
                        "makes the logging process wait instead of losing records (needs "
                        "CAP_AUDIT_CONTROL and no auditd). multicast: read alongside any "
                        "auditd; a full buffer loses records (counted exactly). auto "
                        "(default): daemon where possible, else multicast")
    p.add_argument("--audit-backlog-limit", type=int, default=8192, metavar="N",
                   help="as the audit daemon, raise the kernel's audit backlog to N records "
                        "while running, and give the host's value back on exit (default 8192, "
                        "as auditd's rules set it; 0 leaves it alone)")
    p.add_argument("--recordings", choices=("count", "ignore"), default="count",
                   help="syscalls logged by `enforcer record` sessions: count them apart "
                        "(enforcer_recorded_syscalls_total; default) or ignore them. Never "
                        "counted or logged as violations")
    p.add_argument("--events", metavar="FILE",
                   help="write one JSON line per violation to FILE (rotated by size)")
    p.add_argument("--events-max-bytes", type=_positive_int, default=64 << 20, metavar="N",
                   help="rotate the event log when it would exceed N bytes (default 64 MiB)")
    p.add_argument("--events-backups", type=int, default=5, metavar="N",
                   help="rotated event logs to keep: FILE.1 .. FILE.N (default 5)")
    p.add_argument("--runtime-dir", default=None, metavar="DIR",
                   help=f"the registry's runtime directory (default $ENFORCER_RUNTIME_DIR "
                        f"or {DEFAULT_RUNTIME_DIR})")
    p.add_argument("--cgroup-root", default="/sys/fs/cgroup", metavar="DIR",
                   help="where cgroups are mounted (default /sys/fs/cgroup)")
    p.add_argument("--max-workloads", type=_positive_int, default=1000, metavar="N",
                   help="workloads with their own series; more are counted as "
                        "workload=\"_overflow\" (default 1000)")
    p.add_argument("--grace", type=_positive_float, default=300.0, metavar="SECONDS",
                   help="keep an ended workload's series this long (default 300)")
    p.add_argument("--poll-interval", type=_positive_float, default=1.0, metavar="SECONDS",
                   help="how often to read the registry and cgroup counters (default 1)")
    p.add_argument("--procs-interval", type=_positive_float, default=5.0, metavar="SECONDS",
                   help="how often to measure processes, memory and CPU (default 5)")
    p.add_argument("--enable-audit", action="store_true",
                   help="turn the kernel's audit on (and its backlog limit up to 8192) so it "
                        "logs Landlock denials; a host setting that stays after the monitor")
    p.add_argument("--rcvbuf", type=_positive_int, default=32 << 20, metavar="BYTES",
                   help="audit socket receive buffer (default 32 MiB; doubled on overrun)")
    p.add_argument("--tls-cert", metavar="FILE", help="serve HTTPS with this certificate")
    p.add_argument("--tls-key", metavar="FILE", help="the certificate's private key")
    p.add_argument("--basic-auth-file", metavar="FILE",
                   help="require basic auth for /metrics; lines USER:pbkdf2_sha256$...")
    p.add_argument("--insecure-listen", action="store_true",
                   help="allow serving beyond loopback without TLS and basic auth (refused "
                        "otherwise: anyone who can reach the port would read the metrics)")
    p.add_argument("--hash-password", metavar="USER",
                   help="print a --basic-auth-file line for USER (password from stdin) and exit")


def _hash_password(user: str) -> int:
    from enforcer.monitor.server import hash_password

    if ":" in user or not user:
        raise MonitorError(f"--hash-password: user {user!r} must be non-empty and without ':'")
    if sys.stdin.isatty():
        password = getpass.getpass(f"password for {user}: ")
    else:
        password = sys.stdin.readline().rstrip("\n")
    if not password:
        raise MonitorError("--hash-password: empty password")
    print(f"{user}:{hash_password(password)}")
    return exitcodes.OK


def _landlock_audit(enable: bool) -> None:
    """Landlock denials reach the audit stream only while the kernel's audit
    is on: turn it on when asked, else say what is missing (one line)."""
    from enforcer.monitor.landlock import BACKLOG_FOR_LANDLOCK, audit_notice
    from enforcer.monitor.sources import audit_control as ac

    def status_now() -> ac.AuditStatus | None:
        try:
            return ac.read_status()
        except OSError:
            return None

    status = status_now()
    if enable:
        mask = ac.AUDIT_STATUS_ENABLED
        if status is None or status.backlog_limit < BACKLOG_FOR_LANDLOCK:
            mask |= ac.AUDIT_STATUS_BACKLOG_LIMIT
        try:
            ac.set_fields(mask, enabled=1, backlog_limit=BACKLOG_FOR_LANDLOCK)
        except OSError as e:
            raise MonitorError(f"--enable-audit: {e.strerror} (needs CAP_AUDIT_CONTROL)") from None
        status = status_now()
    notice = audit_notice(status)
    if notice is not None:
        print(f"enforcer monitor: note: {notice}", file=sys.stderr)


def main(args: argparse.Namespace) -> int:
    if args.hash_password:
        return _hash_password(args.hash_password)
    from enforcer import registry
    from enforcer.monitor.daemon import Monitor, MonitorConfig
    from enforcer.monitor.server import (BasicAuth, is_loopback, load_auth_file, make_server,
                                         parse_listen)

    try:
        host, port = parse_listen(args.listen)
    except ValueError as e:
        raise MonitorError(str(e)) from None
    if bool(args.tls_cert) != bool(args.tls_key):
        raise MonitorError("--tls-cert and --tls-key go together")
    auth = BasicAuth(load_auth_file(args.basic_auth_file)) if args.basic_auth_file else None
    if not is_loopback(host) and not (args.tls_cert and auth):
        if not args.insecure_listen:
            raise MonitorError(
                f"--listen {args.listen}: serving beyond loopback needs --tls-cert, --tls-key "
                "and --basic-auth-file (anyone who can reach the port would read workload "
                "names and what they tried); --insecure-listen to do it anyway")
        print(f"enforcer monitor: WARNING: serving {host}:{port} beyond loopback without "
              "TLS and basic auth (--insecure-listen); anyone who can reach it can read "
              "workload names", file=sys.stderr)

    source: Any
    if args.source == "audit":
        from enforcer.monitor.sources.audit import AuditSource

        if args.audit_backlog_limit < 0:
            raise MonitorError(f"--audit-backlog-limit {args.audit_backlog_limit}: must be 0 or more")
        runtime = args.runtime_dir or registry.runtime_dir()
        source = AuditSource(rcvbuf=args.rcvbuf, mode=args.audit_mode,
                             backlog_limit=args.audit_backlog_limit,
                             state_path=os.path.join(runtime, "monitor-audit-state.json"))
    else:
        from enforcer.monitor.sources.kmsg import WARNING, KmsgSource

        print(WARNING, file=sys.stderr)
        source = KmsgSource()
    config = MonitorConfig(
        runtime_dir=args.runtime_dir or registry.runtime_dir(),
        cgroup_root=args.cgroup_root,
        events_path=args.events,
        events_max_bytes=args.events_max_bytes,
        events_backups=max(0, args.events_backups),
        max_workloads=args.max_workloads,
        grace=args.grace,
        poll_interval=args.poll_interval,
        procs_interval=args.procs_interval,
        recordings=args.recordings,
    )
    try:
        monitor = Monitor(config, source)
    except OSError as e:
        raise MonitorError(f"cannot open the event log {args.events}: {e.strerror}") from None
    def on_signal(signum: int, _frame: Any) -> None:
        monitor.stop()

    # Before the source opens: every signal that would end us must go
    # through Monitor.close(), where a daemon-mode source unregisters (else
    # the kernel would go on sending to a reader that is gone, and make the
    # processes that log wait, until its next failed send notices).
    for signum in STOP_SIGNALS:
        signal.signal(signum, on_signal)
    try:
        monitor.start()
    except OSError as e:
        monitor.close()
        hint = "; try --source kmsg (lossy)" if args.source == "audit" else ""
        raise MonitorError(f"{args.source}: {e.strerror or e}{hint}") from None
    if args.source == "audit":
        _landlock_audit(args.enable_audit)

    from prometheus_client.registry import CollectorRegistry

    prom_registry = CollectorRegistry(auto_describe=False)
    prom_registry.register(monitor.metrics)
    try:
        server = make_server(host, port, prom_registry, monitor.healthy,
                             tls_cert=args.tls_cert, tls_key=args.tls_key, auth=auth,
                             fast_text=monitor.metrics.render_text)
    except OSError as e:
        monitor.close()
        raise MonitorError(f"cannot serve on {args.listen}: {e.strerror or e}") from None
    server_thread = threading.Thread(target=server.serve_forever, name="http", daemon=True)
    server_thread.start()

    scheme = "https" if args.tls_cert else "http"
    bound_port = server.server_address[1]
    print(f"enforcer monitor: source {source.name} ({source.mode}), serving "
          f"{scheme}://{host}:{bound_port}/metrics", file=sys.stderr, flush=True)
    try:
        monitor.run()
    finally:
        server.shutdown()
        server.server_close()
        monitor.close()
    return exitcodes.OK
