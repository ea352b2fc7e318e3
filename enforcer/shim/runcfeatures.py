"""What the runc we hand over to supports, from `runc features` (cached).

runc 1.1.x refuses an OCI seccomp object with `flags` ("seccomp flags are
not yet supported by runc"); newer runc lists the flags it takes under
linux.seccomp.supportedFlags. The shim asks once per runc binary and keeps
the answer under <runtime_dir>/shim-cache, keyed by the binary's identity,
so the start path pays a stat and one small read.
"""

from __future__ import annotations

import os
# `typing` costs ~9 ms to import here; annotations are strings (PEP 563),
# so it is only needed by type checkers.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

from enforcer import fastjson
from enforcer.shim.errors import ShimError


def _identity(path: str) -> list[int]:
    st = os.stat(path)
    return [st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns]


def _ask_runc(runc: str) -> dict[str, Any]:
    import subprocess

    try:
        out = subprocess.run([runc, "features"], capture_output=True, timeout=10).stdout
        doc = fastjson.loads(out)
    except (OSError, ValueError, subprocess.SubprocessError):
        doc = None
    # A runc without `features` (< 1.1) supports no seccomp flags either.
    return doc if isinstance(doc, dict) else {}


def runc_features(runc: str, cache_dir: str | None) -> dict[str, Any]:
    ident = _identity(runc)
    cache = os.path.join(cache_dir, "runc-features.json") if cache_dir else None
    if cache:
        try:
            with open(cache, "rb") as f:
                st = os.fstat(f.fileno())
                doc = fastjson.loads(f.read()) if st.st_uid == os.geteuid() and \
                    not st.st_mode & 0o022 else None
            if isinstance(doc, dict) and doc.get("runc") == runc and doc.get("identity") == ident:
                features = doc.get("features")
                if isinstance(features, dict):
                    return features
        except (OSError, ValueError):
            pass
    features = _ask_runc(runc)
    if cache:
        tmp = f"{cache}.{os.getpid()}.tmp"
        try:
            os.makedirs(os.path.dirname(cache), mode=0o700, exist_ok=True)
            with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600),
                      "w") as f:
                f.write(fastjson.dumps({"runc": runc, "identity": ident, "features": features}))
            os.rename(tmp, cache)
        except OSError:
            pass  # a cache we cannot write costs time, not safety
    return features


def supported_seccomp_flags(features: dict[str, Any]) -> set[str]:
    seccomp = (features.get("linux") or {}).get("seccomp") or {}
    flags = seccomp.get("supportedFlags") if isinstance(seccomp, dict) else None
    return {f for f in flags if isinstance(f, str)} if isinstance(flags, list) else set()


def fit_seccomp_to_runc(config: dict[str, Any], features: dict[str, Any],
                        require_flags: bool) -> list[str]:
    """Drop seccomp filter flags this runc refuses; return the ones dropped.

    The flags (SECCOMP_FILTER_FLAG_LOG, ...) change what is logged, not what
    is allowed: without LOG, denials by errno are not audited but are still
    denied. With require_flags, the container is refused instead.
    """
    seccomp = (config.get("linux") or {}).get("seccomp")
    if not isinstance(seccomp, dict) or not seccomp.get("flags"):
        return []
    supported = supported_seccomp_flags(features)
    dropped = [f for f in seccomp["flags"] if f not in supported]
    if dropped and require_flags:
        raise ShimError(f"runc does not support seccomp flags {', '.join(dropped)} "
                        "(require_seccomp_flags is set); upgrade runc")
    if dropped:
        kept = [f for f in seccomp["flags"] if f in supported]
        if kept:
            seccomp["flags"] = kept
        else:
            del seccomp["flags"]
    return dropped
