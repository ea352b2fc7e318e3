"""No false positives: ordinary workloads run untouched under the shipped
policies (web-server serves 1,000 requests; default runs sh, coreutils and
python3)."""

from __future__ import annotations

import http.client
import os
import signal
import socket
import subprocess
import time
from typing import Iterator

import pytest

from tests import session

from run_helpers import PYTHON, REPO, enforcer_run, require_root, scratch_dir

pytestmark = pytest.mark.root


@pytest.fixture(scope="module")
def cache() -> Iterator[str]:
    require_root()
    d = scratch_dir()
    yield d
    session.remove_tree(d)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.slow
def test_web_server_answers_1000_requests(cache: str) -> None:
    root = scratch_dir("enforcer-www-")
    try:
        with open(os.path.join(root, "index.html"), "w") as f:
            f.write("<p>hello from enforcer</p>\n")
        port = free_port()
        # A file, not a pipe: the server logs every request to stderr, and a
        # full pipe would stall it.
        log = open(os.path.join(root, "server.log"), "w+")
        srv = subprocess.Popen(
            [PYTHON, "-m", "enforcer", "run", "--policy", "web-server", "--", "python3", "-m",
             "http.server", "--bind", "127.0.0.1", "--directory", root, str(port)],
            cwd=REPO, env={**os.environ, "ENFORCER_CACHE_DIR": cache},
            stdout=subprocess.DEVNULL, stderr=log)
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    break
                except OSError:
                    assert srv.poll() is None, open(log.name).read()
                    assert time.monotonic() < deadline, "server did not start"
                    time.sleep(0.05)
            errors = 0
            for _ in range(1000):
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
                conn.request("GET", "/index.html")
                resp = conn.getresponse()
                body = resp.read()
                conn.close()
                if resp.status != 200 or b"hello from enforcer" not in body:
                    errors += 1
            assert errors == 0
            assert srv.poll() is None, "server died"
        finally:
            srv.send_signal(signal.SIGINT)
            try:
                code = srv.wait(timeout=10)
            except subprocess.TimeoutExpired:
                srv.kill()
                code = srv.wait()
        log.close()
        stderr = open(log.name).read()
        assert stderr.count('"GET /index.html HTTP/1.1" 200') == 1000
        assert "enforcer run:" not in stderr, stderr  # no explanation of a death
        assert code in (0, 128 + signal.SIGINT, 1), (code, stderr)
    finally:
        session.remove_tree(root)


@pytest.mark.parametrize("argv, expect", [
    (["sh", "-c", "echo a b | tr a-z A-Z"], "A B"),
    (["sh", "-c", "ls / >/dev/null && cat /etc/hostname >/dev/null && echo ok"], "ok"),
    (["sh", "-c", "printf '3\\n1\\n2\\n' | sort | head -n1"], "1"),
    (["sh", "-c", "d=$(mktemp -d) && cp /etc/passwd $d/p && wc -l < $d/p >/dev/null "
      "&& rm -r $d && echo cleaned"], "cleaned"),
    (["sh", "-c", "date +%Y >/dev/null && id -u && sleep 0.1 && env | grep -c ^PATH="], "0\n1"),
    (["sh", "-c", "tar -C /etc -cf - hostname | tar -tf -"], "hostname"),
    (["python3", "-c", "import json, subprocess, threading, tempfile, sqlite3, ssl, hashlib;"
      "t = threading.Thread(target=print, args=('thread',)); t.start(); t.join();"
      "print(subprocess.run(['echo', 'sub'], capture_output=True, text=True).stdout.strip());"
      "c = sqlite3.connect(':memory:'); print(c.execute('select 6*7').fetchone()[0])"],
     "thread\nsub\n42"),
])
def test_default_policy_common_tools(cache: str, argv: list[str], expect: str) -> None:
    r = enforcer_run(["--policy", "default", "--", *argv], env={"ENFORCER_CACHE_DIR": cache})
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == expect
    assert r.stderr == ""
