"""From a policy name to the patch the shim merges, fast.

Where a policy's Plan comes from, in order:
  1. a path to a compiled Plan file (`--policy /etc/enforcer/plans/web.json`);
  2. `<plans_dir>/<name>.json`, a Plan precompiled with `enforcer compile`;
  3. the compiler's cache, `enforcer.compile.cache.load_or_compile(name)`.

Plan files (1, 2) are verified (sha256, strict fields) by enforcer.plan once;
the patch made from them is cached under <runtime_dir>/shim-cache keyed by
the file's identity (device, inode, size, mtime, ctime), so a later start
reads one small JSON file and imports nothing heavy. Any change to the
Plan file changes its ctime, and so misses the cache.
Route 3 loads and converts the Plan on every start (the compiler's own
cache decides whether the YAML changed); precompile for the fast path.
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

CACHE_FORMAT = 1


def _is_plan_path(spec: str) -> bool:
    return spec.endswith(".json")


def _identity(st: os.stat_result) -> list[int]:
    return [st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]


def _cache_file(cache_dir: str, plan_path: str) -> str:
    """One cache file per Plan path: the path itself, escaped, when it fits."""
    key = plan_path.replace("%", "%25").replace("/", "%2F")
    if len(key) > 200:
        import _sha256  # a C module; hashlib would load OpenSSL (~5 ms)

        key = _sha256.sha256(plan_path.encode()).hexdigest()
    return os.path.join(cache_dir, key + ".json")


def _read_cached(path: str, plan_path: str, ident: list[int]) -> dict[str, Any] | None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        # Only trust a cache entry that only we could have written.
        if st.st_uid != os.geteuid() or st.st_mode & 0o022:
            return None
        data = os.read(fd, 4 << 20)
    finally:
        os.close(fd)
    try:
        doc = fastjson.loads(data)
    except ValueError:
        return None
    if not isinstance(doc, dict) or doc.get("format") != CACHE_FORMAT \
            or doc.get("plan") != plan_path or doc.get("identity") != ident:
        return None
    patch = doc.get("patch")
    return patch if isinstance(patch, dict) else None


def _write_cached(path: str, plan_path: str, ident: list[int], patch: dict[str, Any]) -> None:
    """Best effort: a cache we cannot write only costs time on the next start."""
    from enforcer.atomicfile import write_atomic

    data = fastjson.dumps({"format": CACHE_FORMAT, "plan": plan_path, "identity": ident,
                           "patch": patch}).encode()
    try:
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        write_atomic(path, data, mode=0o600, tag="patch")
    except OSError:
        pass


def patch_from_plan_file(plan_path: str, cache_dir: str | None) -> dict[str, Any]:
    try:
        st = os.stat(plan_path)
    except OSError as e:
        raise ShimError(f"Plan {plan_path}: {e.strerror}") from None
    ident = _identity(st)
    cache_path = _cache_file(cache_dir, plan_path) if cache_dir else None
    if cache_path:
        patch = _read_cached(cache_path, plan_path, ident)
        if patch is not None:
            return patch
    # Slow path: verify the Plan strictly, then remember the result.
    from enforcer.errors import EnforcerError
    from enforcer.plan import load_plan_file
    from enforcer.shim.patch import patch_from_plan

    try:
        patch = patch_from_plan(load_plan_file(plan_path))
    except EnforcerError as e:
        raise ShimError(str(e)) from None
    if cache_path:
        _write_cached(cache_path, plan_path, ident, patch)
    return patch


def _first_line(text: str) -> str:
    lines = text.strip().splitlines() or [""]
    more = f" (and {len(lines) - 1} more)" if len(lines) > 1 else ""
    return lines[0] + more


def _enable_site_packages() -> None:
    """The fast launcher starts Python without `site` (-S); the compiler needs
    PyYAML and libseccomp from site-packages, so load them now, on the slow path."""
    import sys

    if sys.flags.no_site and "site" not in sys.modules:
        import site

        site.main()


def patch_from_compiler(spec: str, compile_cache_dir: str | None) -> dict[str, Any]:
    _enable_site_packages()
    try:
        from enforcer.compile.cache import load_or_compile
    except ImportError as e:
        raise ShimError(f"policy {spec!r}: no precompiled Plan found and the compiler is not "
                        f"available ({e})") from None
    from enforcer.errors import EnforcerError
    from enforcer.shim.patch import patch_from_plan

    try:
        plan = load_or_compile(spec, cache_dir=compile_cache_dir)
        return patch_from_plan(plan)
    except EnforcerError as e:
        raise ShimError(f"policy {spec!r}: {_first_line(str(e))}") from None


def patch_for_policy(spec: str, plans_dir: str, compile_cache_dir: str | None,
                     shim_cache_dir: str | None) -> dict[str, Any]:
    """The merge patch for a policy name or Plan file; raises ShimError."""
    if _is_plan_path(spec):
        return patch_from_plan_file(os.path.abspath(spec), shim_cache_dir)
    if "/" not in spec and not spec.startswith("."):
        candidate = os.path.join(plans_dir, spec + ".json")
        if os.path.exists(candidate):
            return patch_from_plan_file(candidate, shim_cache_dir)
    return patch_from_compiler(spec, compile_cache_dir)
