"""The errors enforcer raises, one family per stage of the data flow.

policy  -> PolicyError   (always names file:line:column of the bad input)
compile -> CompileError  (a valid policy the compiler cannot turn into a Plan)
plan    -> PlanError     (a cached or shipped Plan that cannot be trusted)
apply   -> ApplyError    (a step of the privileged sequence failed; names the step)

The CLI turns every one of these into one line on stderr and an exit code
(see enforcer/exitcodes.py); none of them should ever reach the user as a
traceback.
"""

from __future__ import annotations

import errno
import os


class EnforcerError(Exception):
    """Base class: anything enforcer reports to a user as one clear line."""


class Location:
    """Where a value was written: file, 1-based line and column.

    Immutable, compared and hashed by value (it behaved as a frozen
    dataclass before; written out by hand because this module is imported
    on every start and `dataclasses` costs ~7 ms to import).
    """

    __slots__ = ("file", "line", "column")
    file: str
    line: int
    column: int

    def __init__(self, file: str, line: int, column: int) -> None:
        object.__setattr__(self, "file", file)
        object.__setattr__(self, "line", line)
        object.__setattr__(self, "column", column)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"cannot assign to field {name!r}: Location is immutable")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"cannot delete field {name!r}: Location is immutable")

    def _key(self) -> tuple[str, int, int]:
        return (self.file, self.line, self.column)

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        return f"Location(file={self.file!r}, line={self.line!r}, column={self.column!r})"

    def __reduce__(self) -> tuple[type, tuple[str, int, int]]:
        return (Location, self._key())

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}"


class PolicyError(EnforcerError):
    """A problem in a policy file, tied to where it was written.

    `message` says what is wrong and, where it helps, what is allowed.
    """

    def __init__(self, location: Location | None, message: str) -> None:
        self.location = location
        self.message = message
        super().__init__(self.__str__())

    def __str__(self) -> str:
        if self.location is None:
            return f"error: {self.message}"
        return f"{self.location}: error: {self.message}"


class PolicyErrors(EnforcerError):
    """Every error found in one load, so the user can fix them all at once."""

    def __init__(self, errors: list[PolicyError]) -> None:
        self.errors = errors
        super().__init__("\n".join(str(e) for e in errors))


class CompileError(EnforcerError):
    """A valid policy that cannot be compiled (e.g. libseccomp refused a rule)."""


class ConfinedCompileError(EnforcerError):
    """The confined compiler (enforcer/confined_compile.py) could not
    compile a policy; str(e) is one line for the user,
    `lines` every line of the reason (a policy's errors, one per line) and
    `kind` "policy" when those are the policy's own errors (file:line)."""

    def __init__(self, reason: "str | list[str]", kind: str = "error") -> None:
        self.lines = reason.splitlines() if isinstance(reason, str) else list(reason)
        self.lines = self.lines or ["failed"]
        self.kind = kind
        more = f" (and {len(self.lines) - 1} more)" if len(self.lines) > 1 else ""
        super().__init__(self.lines[0] + more)

    def wire(self) -> bytes:
        """How the child sends it: the kind, then the lines."""
        return "\n".join([self.kind, *self.lines]).encode()

    @classmethod
    def from_wire(cls, data: bytes) -> "ConfinedCompileError":
        kind, _, text = data.decode(errors="replace").partition("\n")
        return cls(text.strip().splitlines(), kind if kind in ("policy", "error") else "error")


class PlanError(EnforcerError):
    """A Plan that must not be applied: corrupt, unknown version, wrong arch."""


class ApplyError(EnforcerError, OSError):
    """One step of the apply sequence failed; the workload does not run.

    `step` is the name of the step (e.g. "mounts", "seccomp"), `what` the
    path, syscall or file involved, and `err` the errno if there is one.

    An OSError, as the system call under it was: `except PermissionError`
    catches an ApplyError of EPERM or EACCES (and FileNotFoundError one of
    ENOENT, ...), the way OSError(errno, ...) picks its subclass. Code that
    catches OSError around a step must catch ApplyError first where it
    means to keep the step's own message.
    """

    def __new__(cls, step: str, what: str, err: int | None = None,
                detail: str = "") -> "ApplyError":
        if cls is ApplyError and err is not None:
            cls = _APPLY_ERROR_BY_ERRNO.get(err, cls)
        return super().__new__(cls)

    def __init__(self, step: str, what: str, err: int | None = None, detail: str = "") -> None:
        self.step = step
        self.what = what
        self.detail = detail
        super().__init__(self._message(err))
        self.errno = err  # after OSError.__init__, which resets it
        self.strerror = os.strerror(err) if err is not None else None

    def __reduce__(self) -> tuple[object, ...]:
        return (ApplyError, (self.step, self.what, self.errno, self.detail))

    def __str__(self) -> str:
        return self._message(self.errno)

    def _message(self, err: int | None) -> str:
        parts = [f"{self.step}: {self.what}"]
        if err is not None:
            name = errno.errorcode.get(err, str(err))
            parts.append(f"{name} ({os.strerror(err)})")
        if self.detail:
            parts.append(self.detail)
        return ": ".join(parts)


class ApplyPermissionError(ApplyError, PermissionError):
    """An ApplyError of EPERM or EACCES."""


class ApplyFileNotFoundError(ApplyError, FileNotFoundError):
    """An ApplyError of ENOENT."""


class ApplyFileExistsError(ApplyError, FileExistsError):
    """An ApplyError of EEXIST."""


class ApplyProcessLookupError(ApplyError, ProcessLookupError):
    """An ApplyError of ESRCH."""


# errno -> the ApplyError that is also the OSError subclass OSError(errno,
# ...) would be (PEP 3151), for the errors an apply step meets.
_APPLY_ERROR_BY_ERRNO: dict[int, type[ApplyError]] = {
    errno.EPERM: ApplyPermissionError, errno.EACCES: ApplyPermissionError,
    errno.ENOENT: ApplyFileNotFoundError, errno.EEXIST: ApplyFileExistsError,
    errno.ESRCH: ApplyProcessLookupError,
}
