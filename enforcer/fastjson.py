"""JSON without `import json`, for the start paths (`enforcer run`, the shim).

Why this exists: `import json` pulls in `re`, which pulls in `enum`; on the
machines we measured that is ~10 ms of a 15 ms overhead budget for
`runc run` through the shim, and as much of `enforcer run`'s. The C accelerator `_json` does the actual
parsing and encoding for the `json` module anyway; here we drive it
directly. Behaviour matches `json.loads`/`json.dumps` for the data in an
OCI config (a unit test compares them on real configs). If `_json` is not
available (another Python implementation), we fall back to `json`.
"""

from __future__ import annotations

# `typing` costs ~9 ms to import here; annotations are strings (PEP 563),
# so it is only needed by type checkers.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

try:
    import _json
except ImportError:  # pragma: no cover - CPython always has it
    _json = None  # type: ignore[assignment]


class _ScanContext:
    """The attributes `_json.make_scanner` reads from a JSONDecoder."""

    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int
    memo: dict[str, str] = {}

    @staticmethod
    def parse_constant(name: str) -> Any:
        # NaN/Infinity are not JSON; config.json never has them legitimately.
        raise ValueError(f"invalid JSON constant {name}")


_WHITESPACE = " \t\n\r"


def loads(text: str | bytes) -> Any:
    """Parse one JSON document; raises ValueError on anything malformed."""
    if _json is None:  # pragma: no cover
        import json

        return json.loads(text)
    if isinstance(text, bytes):
        text = text.decode("utf-8")  # UnicodeDecodeError is a ValueError
    if text.startswith("\ufeff"):
        raise ValueError("JSON text starts with a byte order mark")
    scan = _json.make_scanner(_ScanContext())  # type: ignore[arg-type]  # duck-typed context
    i = 0
    n = len(text)
    while i < n and text[i] in _WHITESPACE:
        i += 1
    try:
        value, end = scan(text, i)
    except StopIteration as e:
        raise ValueError(f"expecting a JSON value at char {e.value}") from None
    except SystemError:
        # _json builds its error from json.decoder.JSONDecodeError, but only
        # if json.decoder is already imported; otherwise it fails like this.
        # Malformed input is the error path, so pay for `json` now and let it
        # produce the real message (a JSONDecodeError, i.e. a ValueError).
        import json

        return json.loads(text)
    while end < n and text[end] in _WHITESPACE:
        end += 1
    if end != n:
        raise ValueError(f"extra data after the JSON value at char {end}")
    return value


def _refuse(obj: Any) -> Any:
    raise TypeError(f"object of type {type(obj).__name__} is not JSON serializable")


def dumps(obj: Any, *, indent: int | None = None, sort_keys: bool = False,
          separators: tuple[str, str] | None = None) -> str:
    """Serialise like json.dumps(obj, indent=..., sort_keys=..., separators=...)."""
    if _json is None or indent is not None:
        # The C encoder does not indent; pretty output is off the hot path.
        import json

        return json.dumps(obj, indent=indent, sort_keys=sort_keys, separators=separators)
    item_sep, key_sep = separators or (", ", ": ")
    encoder = _json.make_encoder(
        {},  # markers: detect reference cycles
        _refuse,  # default
        _json.encode_basestring_ascii,
        None,  # indent
        key_sep,
        item_sep,
        sort_keys,
        False,  # skipkeys
        False,  # allow_nan
    )
    return "".join(encoder(obj, 0))
