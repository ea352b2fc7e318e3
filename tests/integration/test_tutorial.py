"""docs/tutorial.md, run as written.

Every shell block of the tutorial preceded by `<!-- tutorial: all -->` or
`<!-- tutorial: SERVER -->` is part of SERVER's walkthrough; the blocks
are joined in the page's order and run by bash with `set -euo pipefail`,
with a scratch demo directory and free loopback ports in the variables
the page tells the reader to set (DEMO, NGINX_PORT, REDIS_PORT, PG_PORT,
MONITOR_PORT). So a command that stops working fails here, and a
command changed on the page is what runs. The script's own output is
then checked for what the page promises (load served, nothing refused).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
from typing import Iterator

import pytest

from bench_helpers import BENCH_DIR  # noqa: F401  (puts bench/ on sys.path)
from run_helpers import REPO, require_root, scratch_dir
from tests import session

import servers  # bench/servers.py

pytestmark = [pytest.mark.root, pytest.mark.slow]

TUTORIAL = os.path.join(REPO, "docs", "tutorial.md")
MARKER = re.compile(r"^<!-- tutorial: ([a-z]+) -->\n```sh\n(.*?)^```$", re.M | re.S)
SERVERS = ("nginx", "redis", "postgresql")


def blocks(text: str) -> list[tuple[str, str]]:
    """(tag, shell text) of every marked block, in the page's order."""
    return [(m.group(1), m.group(2)) for m in MARKER.finditer(text)]


def script_for(server: str) -> str:
    with open(TUTORIAL) as f:
        parts = [body for tag, body in blocks(f.read()) if tag in ("all", server)]
    return "set -euo pipefail\n" + "\n".join(parts)


def test_every_marked_block_belongs_to_a_walkthrough() -> None:
    with open(TUTORIAL) as f:
        text = f.read()
    found = blocks(text)
    tags = {tag for tag, _ in found}
    assert tags == {"all", *SERVERS}, tags
    # A marker not directly above a shell block would be skipped silently.
    assert text.count("<!-- tutorial:") == len(found)


@pytest.fixture
def demo() -> Iterator[str]:
    require_root()
    for tool in ("nginx", "redis-server", "redis-benchmark", "wrk", "pgbench", "curl"):
        if shutil.which(tool) is None and not os.path.exists(f"/usr/sbin/{tool}"):
            pytest.skip(f"{tool} not installed (scripts/setup.sh installs it)")
    d = scratch_dir("enforcer-tutorial-")
    try:
        yield d
    finally:
        session.remove_tree(d)


@pytest.mark.parametrize("server", SERVERS)
def test_tutorial_walkthrough(server: str, demo: str) -> None:
    env = {**os.environ,
           "DEMO": os.path.join(demo, "demo"),
           "NGINX_PORT": str(servers.free_port()), "REDIS_PORT": str(servers.free_port()),
           "PG_PORT": str(servers.free_port()), "MONITOR_PORT": str(servers.free_port()),
           # The page puts the checkout's .venv/bin first itself; the servers
           # are in the sbin directories.
           "PATH": f"{os.path.dirname(sys.executable)}:/usr/local/sbin:/usr/local/bin:"
                   "/usr/sbin:/usr/bin:/sbin:/bin"}
    proc = subprocess.Popen(["bash", "-c", script_for(server)], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=600)
    finally:
        # Whatever the script left (a server, the monitor) goes with it.
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()
    assert proc.returncode == 0, f"the {server} walkthrough failed:\n{out[-6000:]}"
    check_output(server, out)


def check_output(server: str, out: str) -> None:
    """What the page says the reader will see."""
    if server == "nginx":
        assert re.search(r"\d+ requests in", out) and "Non-2xx" not in out, out[-3000:]
        assert "Socket errors" not in out, out[-3000:]
        assert "demo-nginx: nothing refused" in out, out[-3000:]
    elif server == "redis":
        assert len(re.findall(r"^SET: [\d.]+ requests per second", out, re.M)) == 3, out[-3000:]
        refused = [line for line in out.splitlines()
                   if line.startswith("enforcer_seccomp_violations_total")]
        # Only clone3, as the page says (log in audit mode, errno enforced).
        assert all('syscall="clone3"' in line for line in refused), refused
    else:
        assert re.search(r"number of failed transactions: 0 ", out), out[-3000:]
        assert "demo-postgresql: nothing refused" in out, out[-3000:]
