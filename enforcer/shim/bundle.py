"""Read and atomically rewrite a bundle's config.json.

The rewrite goes to a temporary file in the bundle directory, is fsynced,
takes the original's mode and owner, and is renamed over config.json; the
directory is fsynced too. A reader (runc) therefore sees the old file or
the new one, never half of one; on any error the old file is untouched.
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

SUPPORTED_OCI_MAJOR = "1"
# config.json is read whole and parsed (~10x its size in memory), in
# enforcer-shimd's worker too: a bound keeps one bundle from taking the
# node's memory. runc's own configs are kilobytes; Docker's, with its
# seccomp profile, tens of kilobytes.
MAX_CONFIG_BYTES = 16 << 20


def config_path(bundle: str) -> str:
    return os.path.join(bundle, "config.json")


def read_config(bundle: str) -> dict[str, Any]:
    path = config_path(bundle)
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_CONFIG_BYTES + 1)
    except FileNotFoundError:
        raise ShimError(f"bundle {bundle}: no config.json") from None
    except OSError as e:
        raise ShimError(f"bundle {bundle}: cannot read config.json: {e.strerror}") from None
    if len(data) > MAX_CONFIG_BYTES:
        raise ShimError(f"{path}: larger than {MAX_CONFIG_BYTES >> 20} MiB; refusing to read it "
                        "(a container's config is kilobytes)")
    try:
        config = fastjson.loads(data)
    except ValueError as e:
        raise ShimError(f"{path}: not valid JSON: {e}") from None
    if not isinstance(config, dict):
        raise ShimError(f"{path}: expected a JSON object")
    version = config.get("ociVersion")
    if not isinstance(version, str):
        raise ShimError(f"{path}: no ociVersion; expected {SUPPORTED_OCI_MAJOR}.x")
    if version.split(".", 1)[0] != SUPPORTED_OCI_MAJOR:
        raise ShimError(f"{path}: ociVersion {version!r} is not supported; "
                        f"expected {SUPPORTED_OCI_MAJOR}.x")
    return config


def write_config(bundle: str, config: dict[str, Any]) -> None:
    _atomic_write(config_path(bundle), bundle, fastjson.dumps(config).encode())


def rewrite_process_file(path: str, patch: dict[str, Any], proc: str = "self") -> None:
    """Merge the process-level rules into a `runc exec --process` spec.

    `proc`: the process runc will be started from (merge.inherited_rlimits)."""
    from enforcer.shim.merge import merge_process

    try:
        with open(path, "rb") as f:
            process = fastjson.loads(f.read())
    except OSError as e:
        raise ShimError(f"exec process spec {path}: cannot read: {e.strerror}") from None
    except ValueError as e:
        raise ShimError(f"exec process spec {path}: not valid JSON: {e}") from None
    if not isinstance(process, dict):
        raise ShimError(f"exec process spec {path}: expected a JSON object")
    merge_process(process, patch, proc)
    directory = os.path.dirname(os.path.abspath(path))
    _atomic_write(path, directory, fastjson.dumps(process).encode())


def _atomic_write(path: str, bundle: str, data: bytes) -> None:
    name = os.path.basename(path)
    try:
        st = os.stat(path)
    except OSError as e:
        raise ShimError(f"bundle {bundle}: cannot stat {name}: {e.strerror}") from None
    tmp = os.path.join(bundle, f".{name}.enforcer-{os.getpid()}")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    except FileExistsError:
        os.unlink(tmp)  # left by a crashed shim with our pid; it is ours to remove
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    except OSError as e:
        raise ShimError(f"bundle {bundle}: cannot write {name}: {e.strerror}") from None
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fchmod(fd, st.st_mode & 0o7777)
            if (st.st_uid, st.st_gid) != (os.geteuid(), os.getegid()):
                os.fchown(fd, st.st_uid, st.st_gid)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(tmp, path)
    except OSError as e:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise ShimError(f"bundle {bundle}: cannot write {name}: {e.strerror}") from None
    try:
        dir_fd = os.open(bundle, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError:
        pass  # the rename is done; a directory that cannot be fsynced is not our error
