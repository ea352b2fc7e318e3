"""HTTP endpoint: /metrics (Prometheus text or OpenMetrics) and /healthz.

Binds 127.0.0.1:9469 by default. A wider bind needs TLS (--tls-cert /
--tls-key) and basic auth (--basic-auth-file) for /metrics (the command
refuses it otherwise, unless --insecure-listen); /healthz answers without
credentials and says only "ok" or why not. The auth file holds
one `user:pbkdf2_sha256$ITERATIONS$SALT_B64$HASH_B64` line per user
(`enforcer monitor --hash-password USER` prints one); stdlib only.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable

from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import CollectorRegistry

from enforcer.errors import EnforcerError

PBKDF2_ITERATIONS = 200_000


class AuthFileError(EnforcerError):
    pass


def hash_password(password: str, iterations: int = PBKDF2_ITERATIONS,
                  salt: bytes | None = None) -> str:
    salt = salt if salt is not None else os.urandom(16)
    digest = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    return "pbkdf2_sha256${}${}${}".format(
        iterations, base64.b64encode(salt).decode(), base64.b64encode(digest).decode())


def load_auth_file(path: str) -> dict[str, tuple[int, bytes, bytes]]:
    """user -> (iterations, salt, digest); raises AuthFileError naming file:line."""
    users: dict[str, tuple[int, bytes, bytes]] = {}
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise AuthFileError(f"{path}: cannot read the basic-auth file: {e}") from None
    for number, line in enumerate(lines, 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        user, sep, spec = line.partition(":")
        parts = spec.split("$")
        try:
            if not sep or not user or len(parts) != 4 or parts[0] != "pbkdf2_sha256":
                raise ValueError
            iterations = int(parts[1])
            salt = base64.b64decode(parts[2], validate=True)
            digest = base64.b64decode(parts[3], validate=True)
            if iterations < 1 or len(digest) != 32:
                raise ValueError
        except ValueError:
            raise AuthFileError(
                f"{path}:{number}: expected USER:pbkdf2_sha256$ITERATIONS$SALT_B64$HASH_B64 "
                "(make one with `enforcer monitor --hash-password USER`)") from None
        users[user] = (iterations, salt, digest)
    if not users:
        raise AuthFileError(f"{path}: no users in the basic-auth file")
    return users


class BasicAuth:
    """Checks Authorization headers; remembers headers that passed, since
    PBKDF2 is deliberately slow and Prometheus sends the same one each scrape."""

    def __init__(self, users: dict[str, tuple[int, bytes, bytes]]) -> None:
        self.users = users
        self._good: set[bytes] = set()
        self._lock = threading.Lock()

    def check(self, header: str | None) -> bool:
        if not header or not header.startswith("Basic "):
            return False
        fingerprint = hashlib.sha256(header.encode()).digest()
        with self._lock:
            if fingerprint in self._good:
                return True
        try:
            user, _, password = base64.b64decode(header[6:], validate=True).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            return False
        entry = self.users.get(user)
        if entry is None:
            # Spend the same time as a real check: do not reveal which users exist.
            hashlib.pbkdf2_hmac("sha256", password.encode(), b"x" * 16, PBKDF2_ITERATIONS)
            return False
        iterations, salt, digest = entry
        ok = hmac.compare_digest(hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations),
                                 digest)
        if ok:
            with self._lock:
                if len(self._good) > 64:
                    self._good.clear()
                self._good.add(fingerprint)
        return ok


def make_server(host: str, port: int, registry: CollectorRegistry,
                healthy: Callable[[], tuple[bool, str]], *,
                tls_cert: str | None = None, tls_key: str | None = None,
                auth: BasicAuth | None = None,
                fast_text: Callable[[], bytes] | None = None) -> ThreadingHTTPServer:
    """`fast_text`, if given, renders the plain-text format instead of
    prometheus_client's encoder (OpenMetrics still goes through it)."""
    class Handler(BaseHTTPRequestHandler):
        server_version = "enforcer-monitor"
        timeout = 10  # seconds; a stuck client holds one thread, not the server
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            path = self.path.split("?", 1)[0]
            # /healthz says "ok" or why not, nothing else: it answers without
            # credentials, for probes (a kubelet cannot send a secret).
            if path != "/healthz" and auth is not None \
                    and not auth.check(self.headers.get("Authorization")):
                self._reply(401, b"unauthorized\n", "text/plain",
                            {"WWW-Authenticate": 'Basic realm="enforcer"'})
                return
            if path == "/metrics":
                encoder, content_type = choose_encoder(self.headers.get("Accept", ""))
                if fast_text is not None and content_type.startswith("text/plain"):
                    self._reply(200, fast_text(), content_type)
                else:
                    self._reply(200, encoder(registry), content_type)
            elif path == "/healthz":
                ok, detail = healthy()
                self._reply(200 if ok else 503, (detail + "\n").encode(), "text/plain")
            else:
                self._reply(404, b"not found: try /metrics or /healthz\n", "text/plain")

        def _reply(self, status: int, body: bytes, content_type: str,
                   extra: dict[str, str] | None = None) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            for key, value in (extra or {}).items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass  # scrapes every few seconds would flood stderr

    family = ThreadingHTTPServer.address_family
    if ":" in host:
        import socket

        family = socket.AF_INET6

    class Server(ThreadingHTTPServer):
        address_family = family
        daemon_threads = True
        allow_reuse_address = True

    server = Server((host, port), Handler)
    if tls_cert:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(tls_cert, tls_key)
        # The handshake happens on first read, in the request's own thread:
        # a client that connects and says nothing must not stall accept().
        server.socket = context.wrap_socket(server.socket, server_side=True,
                                            do_handshake_on_connect=False)
    return server


def parse_listen(value: str) -> tuple[str, int]:
    """"HOST:PORT", "[V6]:PORT" or ":PORT" (= 127.0.0.1) -> (host, port)."""
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"--listen {value!r}: expected HOST:PORT, e.g. 127.0.0.1:9469")
    host = host.strip("[]") or "127.0.0.1"
    return host, int(port)


def is_loopback(host: str) -> bool:
    return host in ("127.0.0.1", "::1", "localhost") or host.startswith("127.")
