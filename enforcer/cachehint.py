"""Where the Plan cache lives, and a hint `enforcer run` reads before its fork.

`enforcer run` forks the workload before it has loaded the Plan (the load
runs meanwhile), but a pid namespace must exist before that fork. So the
cache keeps, next to its entries, the namespaces of the Plan last loaded
for each policy spec: one small text file per (spec, mode), found without
reading the policy or computing the cache key, and without importing the
cache or the Plan modules: this module imports nothing but os and the
sha256 C module, and it sits outside the Plan store so that importing it
loads neither the store nor the Plan (enforcer.planstore does the rest,
after the fork).

It is only a hint. A wrong one -- a policy edited since, a spec spelled
two ways, a file someone else wrote -- costs `enforcer run` one more fork:
it discards the child and forks again once the Plan is known. The cache
writes the hint whenever a Plan it hands out disagrees with it.
"""

from __future__ import annotations

import os

try:  # the bare sha256 module: hashlib would load OpenSSL (~2 ms) first
    from _sha256 import sha256
except ImportError:  # pragma: no cover - other Pythons / 3.12+
    try:
        from _sha2 import sha256
    except ImportError:
        from hashlib import sha256


def default_cache_dir() -> str:
    env = os.environ.get("ENFORCER_CACHE_DIR")
    if env:
        return env
    if os.geteuid() == 0:
        return "/var/cache/enforcer"
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "enforcer")


def hint_path(spec: str, mode: str | None, cache_dir: str | None = None) -> str:
    """The hint file of a spec as the user wrote it (a path made absolute)."""
    if "/" in spec or spec.startswith(".") or spec.endswith((".yaml", ".yml")):
        spec = os.path.abspath(spec)
    digest = sha256(f"{spec}\0{mode or 'policy'}".encode()).hexdigest()[:32]
    return os.path.join(cache_dir or default_cache_dir(), f"{digest}.ns")


def read_namespaces(spec: str, mode: str | None,
                    cache_dir: str | None = None) -> tuple[str, ...] | None:
    """The namespaces last seen in the Plan for `spec`, or None."""
    try:
        with open(hint_path(spec, mode, cache_dir), "rb") as f:
            text = f.read(256)
    except OSError:
        return None
    if not text.endswith(b"\n"):
        return None  # empty or torn: no hint
    return tuple(text.decode(errors="replace").split())


def write_namespaces(spec: str, mode: str | None, namespaces: tuple[str, ...],
                     cache_dir: str | None = None) -> None:
    """Record the namespaces of the Plan handed out for `spec` (best effort:
    a cache directory we may not write only costs the next run a fork)."""
    path = hint_path(spec, mode, cache_dir)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, (" ".join(namespaces) + "\n").encode())
        finally:
            os.close(fd)
    except OSError:
        pass
