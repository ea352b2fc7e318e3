"""The Plan store: compiled Plans, found again by the policy they came from.

    lookup(spec, mode=None, cache_dir=None) -> (Lookup, Plan | None)
    store(entry, sources, plan, top=..., mode=...)

This module is on the start path (`enforcer run`, the shim,
enforcer-shimd), beside enforcer/plan.py: it finds and verifies Plans and
never compiles one. A miss is filled by the compiler in a separate,
unprivileged step (enforcer/confined_compile.py), which hands the entry
back to be stored here; `enforcer compile` and the compiler's own
load_or_compile (enforcer/compile/cache.py) write entries the same way.
It imports only the standard library and enforcer.plan -- never PyYAML,
pyseccomp, psutil, prometheus_client, nor the compile, policy-loading or
emit packages (lint-imports checks; enforcer.policy.names and the syscall
table's digest are the two stdlib-only leaves it reads).

Content addressing. A policy is a chain of files (`extends`), but finding
the parents needs the YAML parser, which the fast path must not load. So:

* key = sha256 over: a tag, enforcer's version, libseccomp's identity, the
  syscall table's digest (enforcer/policy/systable), the
  machine architecture, the mode, the top file's absolute path and its
  bytes. The path is in the key because relative `extends` make the same
  bytes mean different policies in different directories.
* The entry lists every source file of the policy (the whole extends
  chain, from Policy.sources) with its sha256. A hit re-hashes each listed
  file; any difference (or a missing file) means stale: recompile.

Anything else wrong with an entry -- unreadable, not our format, a Plan
that fails its own checks or has an unknown format version -- is an error
(PlanError), not a silent recompile: a corrupt entry in a root-owned cache
means something is wrong on the host, and the user must see it. The error
names the file to delete.

libseccomp enters the key as the identity of its library file (resolved
name, size, mtime; a few stat calls, ~0.02 ms) rather than its version
number: asking the library (ctypes seccomp_version()) costs 1.8 ms for the
ctypes import, pyseccomp ~30 ms, ctypes.util.find_library runs ldconfig;
and distributions patch new syscalls into a library without changing its
version (Debian's 2.5.4 knows x86_64 syscalls up to 456, upstream 2.5.4
fewer), so the file is the better key anyway. The file is looked up where
the dynamic loader would look (LD_LIBRARY_PATH, then the usual library
directories); only if it is not found there does the key fall back to
seccomp_version() through ctypes.

Entry file layout: line 1 is a JSON header (cache format, key inputs, the
source files and digests); the rest is Plan.to_json() text, parsed by
enforcer.plan's strict loader.
"""

from __future__ import annotations

import os
import sys

from enforcer import __version__, fastjson
from enforcer.cachehint import default_cache_dir
from enforcer.errors import PlanError
from enforcer.filetrust import UntrustedFile, read_trusted
from enforcer.plan import PLAN_FORMAT, Plan, plan_from_json, sha256
from enforcer.policy import names
# The syscall table's digest, a constant: importing it reads no table.
from enforcer.policy.systable import TABLE_DIGEST

# No `json`, `hashlib`, `dataclasses` or `tempfile` at import: a cache hit is
# on every start, and those cost ~10 ms together (json -> re -> enum,
# hashlib -> OpenSSL). The write path imports what it needs.

CACHE_FORMAT = 1
_TAG = b"enforcer-plan-cache-v1"


class Lookup:
    """What a cache lookup found (for messages and tests)."""

    __slots__ = ("path", "hit", "reason")

    def __init__(self, path: str, hit: bool, reason: str) -> None:
        self.path = path  # the cache entry file
        self.hit = hit
        self.reason = reason  # "hit", "miss", "stale: <file> changed", ...

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Lookup):
            return NotImplemented
        return (self.path, self.hit, self.reason) == (other.path, other.hit, other.reason)

    def __repr__(self) -> str:
        return f"Lookup(path={self.path!r}, hit={self.hit!r}, reason={self.reason!r})"


# -- inputs of the key --------------------------------------------------------

_libseccomp_version: str | None = None


def libseccomp_version() -> str:
    """'2.5.4', read from the library itself; 'none' if it is not installed."""
    global _libseccomp_version
    if _libseccomp_version is None:
        import ctypes

        class _Version(ctypes.Structure):
            _fields_ = [("major", ctypes.c_uint), ("minor", ctypes.c_uint),
                        ("micro", ctypes.c_uint)]

        try:
            lib = ctypes.CDLL("libseccomp.so.2")
            lib.seccomp_version.restype = ctypes.POINTER(_Version)
            v = lib.seccomp_version().contents
            _libseccomp_version = f"{v.major}.{v.minor}.{v.micro}"
        except (OSError, AttributeError):
            _libseccomp_version = "none"
    return _libseccomp_version


def _libseccomp_file() -> str | None:
    dirs = [d for d in os.environ.get("LD_LIBRARY_PATH", "").split(":") if d]
    multiarch = getattr(sys.implementation, "_multiarch", "")
    for base in ("/usr/local/lib", "/lib", "/usr/lib"):
        if multiarch:
            dirs.append(f"{base}/{multiarch}")
        dirs.append(base)
    dirs += ["/lib64", "/usr/lib64"]
    for d in dirs:
        path = os.path.join(d, "libseccomp.so.2")
        if os.path.exists(path):
            return os.path.realpath(path)
    return None


_libseccomp_identity: str | None = None


def libseccomp_identity() -> str:
    """What the cache key knows of libseccomp: its library file's resolved
    name, size and mtime (see the module docstring)."""
    global _libseccomp_identity
    if _libseccomp_identity is None:
        path = _libseccomp_file()
        if path is None:
            _libseccomp_identity = "version " + libseccomp_version()
        else:
            st = os.stat(path)
            _libseccomp_identity = f"{os.path.basename(path)}:{st.st_size}:{st.st_mtime_ns}"
    return _libseccomp_identity


def resolve_spec(spec: str) -> str:
    """A policy file path, or a policy name -> absolute path.

    The same rules as enforcer.policy.loader.resolve_policy_source: a spec
    with a `/`, a leading `.` or a .yaml/.yml suffix is a path; otherwise a
    name (enforcer/policy/names.py: shipped, then the admin's directory;
    never the working directory). When nothing matches, the spec comes back
    unchanged and the loader reports.
    """
    if names.looks_like_path(spec):
        return os.path.abspath(os.path.expanduser(spec))
    return names.find_named(spec) or spec


def cache_key(top_path: str, top_bytes: bytes, mode: str | None) -> str:
    h = sha256(_TAG)
    # The Plan format is in the key: an entry written in another format is
    # never read (it would be refused); the policy is compiled afresh.
    for part in (__version__, str(PLAN_FORMAT), libseccomp_identity(), TABLE_DIGEST,
                 os.uname().machine, mode or "policy", top_path):
        h.update(b"\0" + part.encode())
    h.update(b"\0" + top_bytes)
    return str(h.hexdigest())


def source_digest(path: str) -> str | None:
    """The digest of a policy file the loader would trust; None if it would
    not (or cannot be read): the entry is then stale, and recompiling lets
    the loader say why."""
    try:
        return str(sha256(read_trusted(path)).hexdigest())
    except (OSError, UntrustedFile):
        return None


# -- reading and writing entries ------------------------------------------------


def _check_dir_trust(directory: str) -> None:
    """A Plan decides what a workload may do: only trust a cache directory
    that nobody but its owner (us or root) can write to."""
    try:
        st = os.stat(directory)
    except FileNotFoundError:
        return
    if st.st_uid not in (os.geteuid(), 0) or st.st_mode & 0o022:
        raise PlanError(f"cache directory {directory} is writable by others or owned by uid "
                        f"{st.st_uid}; refusing to trust Plans in it (chmod go-w, or set "
                        "ENFORCER_CACHE_DIR)")


def read_entry(entry: str) -> tuple[list[tuple[str, str]], Plan] | None:
    """(sources, plan) of a cache entry; None if there is none. PlanError if corrupt."""
    try:
        with open(entry, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return None
    except OSError as e:
        raise PlanError(f"cache entry {entry}: cannot read: {e.strerror}") from None
    return parse_entry(data, f"cache entry {entry}", f"; delete it (rm {entry}) to recompile")


def parse_entry(data: bytes, what: str, fix: str = "") -> tuple[list[tuple[str, str]], Plan]:
    """(sources, plan) from an entry's bytes (a cache file, or what a confined
    compiler hands back: enforcer/confined_compile.py). PlanError if malformed;
    `what` names the source in the message, `fix` says what to do."""
    header_raw, sep, body = data.partition(b"\n")
    try:
        header = fastjson.loads(header_raw)
    except (ValueError, UnicodeDecodeError):
        header = None
    if (not sep or not isinstance(header, dict) or header.get("cache_format") != CACHE_FORMAT
            or not isinstance(header.get("sources"), list)):
        raise PlanError(f"{what} is corrupt or of an unknown cache format{fix}")
    sources: list[tuple[str, str]] = []
    for item in header["sources"]:
        if (not isinstance(item, list) or len(item) != 2
                or not all(isinstance(x, str) for x in item)):
            raise PlanError(f"{what}: malformed source list{fix}")
        sources.append((item[0], item[1]))
    try:
        plan = plan_from_json(body, source=what)
    except PlanError as e:
        raise PlanError(f"{e}{fix}") from None
    return sources, plan


def entry_bytes(sources: list[tuple[str, str]], plan: Plan, *, top: str = "",
                mode: str | None = None) -> bytes:
    """An entry's bytes: a JSON header line (format, key inputs, sources), then the Plan."""
    header = {"cache_format": CACHE_FORMAT, "enforcer_version": __version__,
              "libseccomp": libseccomp_identity(), "machine": os.uname().machine,
              "top": top, "mode": mode or "policy",
              "sources": [list(s) for s in sources]}
    return (fastjson.dumps(header, sort_keys=True) + "\n" + plan.to_json()).encode()


def write_entry(entry: str, sources: list[tuple[str, str]], plan: Plan, *,
                top: str = "", mode: str | None = None) -> None:
    """Atomically: a reader sees the old entry, the new one, or none."""
    directory = os.path.dirname(entry)
    os.makedirs(directory, mode=0o700, exist_ok=True)
    data = entry_bytes(sources, plan, top=top, mode=mode)
    from enforcer.atomicfile import write_atomic

    # fsync: the cache outlives reboots, and a torn entry would be refused.
    write_atomic(entry, data, mode=0o600, fsync=True, tag="plan")


def prune(directory: str, keep: str, top: str, mode: str | None) -> int:
    """Remove the other entries for the same top file and mode: each edit of a
    policy (or an upgrade) leaves its old entry behind under an old key.
    Returns how many were removed. Only ever on the (slow) compile path."""
    removed = 0
    try:
        names = os.listdir(directory)
    except OSError:
        return 0
    for name in names:
        path = os.path.join(directory, name)
        if not name.endswith(".plan") or path == keep:
            continue
        try:
            with open(path, "rb") as f:
                header = fastjson.loads(f.readline())
            if header.get("top") == top and header.get("mode") == (mode or "policy"):
                os.unlink(path)
                removed += 1
        except (OSError, ValueError, AttributeError):
            continue  # not ours to judge here; lookup reports corrupt entries
    return removed


def _stale_reason(sources: list[tuple[str, str]], top: str, top_bytes: bytes) -> str | None:
    """Which source differs now; the top file was just read (and checked):
    its bytes are not read a second time."""
    for path, digest in sources:
        now = str(sha256(top_bytes).hexdigest()) if path == top else source_digest(path)
        if now != digest:
            return f"stale: {path} changed"
    return None


# -- the entry point -----------------------------------------------------------


def lookup(spec: str, *, mode: str | None = None,
           cache_dir: str | None = None) -> tuple[Lookup, Plan | None]:
    """A Plan if the store has a fresh one for `spec` (never compiles)."""
    if mode is not None and mode not in ("enforce", "audit"):
        raise PlanError(f"mode {mode!r} is not enforce or audit")
    top = resolve_spec(spec)
    directory = cache_dir or default_cache_dir()
    try:
        # Only the bytes of a file the loader would trust make a cache key: a
        # policy that became writable by others is never served from here.
        top_bytes = read_trusted(top)
    except (OSError, UntrustedFile):
        # Unreadable, untrusted or a name we could not resolve: the loader reports it.
        return Lookup(path="", hit=False, reason=f"miss: cannot read {top}"), None
    entry = os.path.join(directory, cache_key(top, top_bytes, mode) + ".plan")
    _check_dir_trust(directory)
    found = read_entry(entry)
    if found is None:
        return Lookup(entry, False, "miss"), None
    sources, plan = found
    stale = _stale_reason(sources, top, top_bytes)
    if stale:
        return Lookup(entry, False, stale), None
    return Lookup(entry, True, "hit"), plan


def entry_path(top: str, mode: str | None, cache_dir: str | None) -> str | None:
    """The cache entry for the policy file `top` as it is now; None when the
    file is no longer one the loader would trust (changed since it was read:
    not worth caching)."""
    try:
        top_bytes = read_trusted(top)
    except (OSError, UntrustedFile):
        return None
    return os.path.join(cache_dir or default_cache_dir(), cache_key(top, top_bytes, mode)
                        + ".plan")


def store(entry: str, sources: list[tuple[str, str]], plan: Plan, *, top: str,
          mode: str | None) -> None:
    """Write the entry and drop the older ones of the same policy; a cache that
    cannot be written costs a compile next time, and says so once."""
    try:
        write_entry(entry, sources, plan, top=top, mode=mode)
        prune(os.path.dirname(entry), entry, top, mode)
    except OSError as e:
        print(f"enforcer: note: cannot write Plan cache {entry}: {e.strerror}",
              file=sys.stderr)
