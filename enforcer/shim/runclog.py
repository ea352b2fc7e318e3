"""Write a refusal into runc's log file, the way runc writes its own errors.

containerd (and so Docker and Kubernetes) does not show the runtime's
stderr: it reads the file it passed as `--log`, in the format it passed as
`--log-format` (json), and reports the last entry of level "error". So the
shim's one-line reason goes there too, as runc's logrus formatter writes it:

    json  {"level":"error","msg":"enforcer-runc: ...","time":"2024-05-01T12:00:00Z"}
    text  time="2024-05-01T12:00:00Z" level=error msg="enforcer-runc: ..."

Under enforcer-shimd the front end writes the line (the server tells it
what to write and where, and never opens the file itself).
"""

from __future__ import annotations

import os
import time

from enforcer.shim.cmdline import parse
from enforcer.shim.errors import ShimError


def log_target(argv: list[str]) -> tuple[str, str] | None:
    """(log file, "json" or "text") from runc's global flags, or None."""
    try:
        line = parse(argv)
    except ShimError:
        return None
    path = line.global_flags.get("log")
    if not path:
        return None
    return path, "json" if line.global_flags.get("log-format") == "json" else "text"


def log_line(fmt: str, message: str, now: float | None = None) -> str:
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() if now is None else now))
    if fmt == "json":
        from enforcer import fastjson

        return fastjson.dumps({"level": "error", "msg": message, "time": stamp}) + "\n"
    quoted = message.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'time="{stamp}" level=error msg="{quoted}"\n'


def write_runc_log(path: str, fmt: str, message: str) -> None:
    """Append the line; a log that cannot be written costs only the message."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError:
        return
    try:
        os.write(fd, log_line(fmt, message).encode())
    except OSError:
        pass
    finally:
        os.close(fd)
