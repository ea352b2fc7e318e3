"""The JSON Lines event log: one line per violation, size-based rotation.

Lines are buffered and flushed by the caller after each batch of records
(and on shutdown), so a burst costs one write(2) per batch rather than one
per record. Rotation keeps `backups` old files: FILE.1 (newest) .. FILE.N.

The log names workloads, their executables and what they tried: it is
created 0640 (a log shipper in the file's group may read it, nobody else),
an existing file with wider permissions is narrowed to that, and rotated
files keep the mode (rename). A symlink or anything but a regular file at
the path is refused.
"""

from __future__ import annotations

import errno
import json
import os
import stat
import threading
import time
from typing import Any

FILE_MODE = 0o640
DIR_MODE = 0o750

_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
json_value = _dumps


_last_second: list[Any] = [None, ""]


def iso_time(seconds: float) -> str:
    """RFC 3339 UTC with milliseconds; the formatted second is cached (bursts)."""
    whole = int(seconds)
    millis = int(round((seconds - whole) * 1000))
    if millis == 1000:
        whole, millis = whole + 1, 0
    if _last_second[0] != whole:
        _last_second[0] = whole
        _last_second[1] = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole))
    return f"{_last_second[1]}.{millis:03d}Z"


class EventLog:
    def __init__(self, path: str, max_bytes: int = 64 << 20, backups: int = 5) -> None:
        if max_bytes <= 0:
            raise ValueError("max_bytes must be positive")
        self.path = path
        self.max_bytes = max_bytes
        self.backups = backups
        self.lock = threading.Lock()
        self.written = 0  # lines written since start
        self._file = self._open()

    def _open(self) -> Any:
        directory = os.path.dirname(self.path)
        if directory:
            os.makedirs(directory, mode=DIR_MODE, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC
                     | os.O_NOFOLLOW | os.O_NONBLOCK, FILE_MODE)
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise OSError(errno.EINVAL, "not a regular file", self.path)
            if stat.S_IMODE(st.st_mode) & ~FILE_MODE:
                os.fchmod(fd, stat.S_IMODE(st.st_mode) & FILE_MODE)
            os.set_blocking(fd, True)
            f = open(fd, "a", encoding="utf-8", buffering=1 << 20, closefd=True)
        except BaseException:
            os.close(fd)
            raise
        self._size = f.tell()
        return f

    def write(self, event: dict[str, Any]) -> None:
        self.write_line(_dumps(event) + "\n")

    def write_line(self, line: str) -> None:
        """One pre-encoded JSON line, ending in a newline."""
        size = len(line.encode("utf-8")) if not line.isascii() else len(line)
        with self.lock:
            if self._size + size > self.max_bytes and self._size > 0:
                self._rotate()
            self._file.write(line)
            self._size += size
            self.written += 1

    def _rotate(self) -> None:
        self._file.close()
        if self.backups > 0:
            for i in range(self.backups - 1, 0, -1):
                src = f"{self.path}.{i}"
                if os.path.exists(src):
                    os.replace(src, f"{self.path}.{i + 1}")
            os.replace(self.path, f"{self.path}.1")
        else:
            os.unlink(self.path)
        self._file = self._open()

    def flush(self) -> None:
        with self.lock:
            self._file.flush()

    def close(self) -> None:
        with self.lock:
            if not self._file.closed:
                self._file.flush()
                os.fsync(self._file.fileno())
                self._file.close()
