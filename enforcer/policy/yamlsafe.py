"""Safe YAML reading for policies: located nodes, no surprises.

Plain `yaml.safe_load` is not good enough for a security policy:

* it silently keeps the last of two duplicate keys (`allow:` written twice
  loses the first list without a word);
* it forgets where each value was written, so errors cannot name file:line;
* anchors and aliases let a 1 KB file expand into billions of values
  ("billion laughs"), which exhausts memory and time before any check runs.

So we drive the (C, when available) event parser ourselves and build a small
tree of located nodes. Aliases are *not* copied: an alias node is the same
Python object as its anchor, and we count the size the document would have
if it were expanded. Past `MAX_EXPANDED_NODES` we stop at once, naming the
alias that pushed it over. Recursive aliases are refused. Nothing here is
recursive in Python, so deep nesting cannot raise RecursionError either.

Scalars keep their raw text as well as the YAML 1.1 value, because some
fields must not be read the YAML 1.1 way (`device: 8:0` is the integer 480
in YAML 1.1; `mode: 1777` is meant in octal).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Union

import yaml

from enforcer.errors import Location, PolicyError, PolicyErrors

# A policy is a few KB; the largest sensible one (every syscall with rules)
# stays far below these. They bound time and memory for hostile input.
MAX_FILE_BYTES = 1024 * 1024
MAX_EXPANDED_NODES = 100_000
MAX_DEPTH = 64
MAX_ERRORS = 50

_Loader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_resolver = yaml.resolver.Resolver()
_constructor = yaml.constructor.SafeConstructor()

# Tags a policy value may carry; anything else (!!python/object, !!binary,
# custom !tags) is refused rather than guessed at.
_STD = "tag:yaml.org,2002:"
_ALLOWED_TAGS = {_STD + t for t in ("str", "int", "float", "bool", "null")}


@dataclass(eq=False)
class Scalar:
    loc: Location
    text: str  # exactly as written (without quotes)
    value: Any  # the YAML 1.1 value: str, int, float, bool or None
    plain: bool  # written without quotes

    kind = "scalar"


@dataclass(eq=False)
class Seq:
    loc: Location
    items: list["Node"] = field(default_factory=list)

    kind = "list"


@dataclass(eq=False)
class Map:
    loc: Location
    items: list[tuple[Scalar, "Node"]] = field(default_factory=list)

    kind = "mapping"

    def get(self, key: str) -> "Node | None":
        for k, v in self.items:
            if k.text == key:
                return v
        return None

    def keys(self) -> list[str]:
        return [k.text for k, _ in self.items]


Node = Union[Scalar, Seq, Map]


def _loc(filename: str, mark: Any) -> Location:
    if mark is None:
        return Location(filename, 1, 1)
    return Location(filename, mark.line + 1, mark.column + 1)


def _line_col(text: str, index: int) -> tuple[int, int]:
    line = text.count("\n", 0, index) + 1
    col = index - (text.rfind("\n", 0, index) + 1) + 1
    return line, col


_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def _precheck_text(data: bytes, filename: str) -> str:
    """Size, encoding, control characters and tab indentation, before parsing."""
    if len(data) > MAX_FILE_BYTES:
        raise PolicyErrors([PolicyError(
            Location(filename, 1, 1),
            f"file is {len(data)} bytes; a policy may be at most {MAX_FILE_BYTES} bytes (1 MiB)",
        )])
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line, col = _line_col(data[: e.start].decode("utf-8", "replace"), e.start)
        raise PolicyErrors([PolicyError(
            Location(filename, line, col),
            f"not UTF-8 text (byte 0x{data[e.start]:02x}); a policy is a UTF-8 YAML file",
        )]) from None
    if text.startswith("\ufeff"):
        text = text[1:]
    errors: list[PolicyError] = []
    bad = _CONTROL.search(text)
    if bad is not None:
        line, col = _line_col(text, bad.start())
        errors.append(PolicyError(
            Location(filename, line, col),
            f"control character U+{ord(bad.group()):04X}; a policy is plain text (binary file?)",
        ))
    for lineno, line_text in enumerate(text.split("\n"), start=1):
        stripped = line_text.lstrip(" \t")
        indent = line_text[: len(line_text) - len(stripped)]
        if "\t" in indent and stripped and not stripped.startswith("#"):
            errors.append(PolicyError(
                Location(filename, lineno, indent.index("\t") + 1),
                "tab used for indentation; YAML allows only spaces there",
            ))
            if len(errors) >= MAX_ERRORS:
                break
    if errors:
        raise PolicyErrors(errors)
    if not text.strip() or all(
        not ln.strip() or ln.lstrip().startswith("#") for ln in text.split("\n")
    ):
        raise PolicyErrors([PolicyError(
            Location(filename, 1, 1),
            "file is empty; a policy is a mapping with at least `name:`",
        )])
    return text


def _scalar_value(event: Any, loc: Location, errors: list[PolicyError]) -> Any:
    tag = event.tag
    if tag in (None, "!"):
        tag = _resolver.resolve(yaml.ScalarNode, event.value, event.implicit)
    elif tag not in _ALLOWED_TAGS:
        errors.append(PolicyError(loc, f"YAML tag {tag!r} is not allowed in a policy"))
        return event.value
    if tag not in _ALLOWED_TAGS:
        # Implicit timestamps and the like: keep the text, the field decides.
        return event.value
    node = yaml.ScalarNode(tag, event.value, style=event.style)
    try:
        return _constructor.construct_object(node, deep=True)
    except (yaml.YAMLError, ValueError, TypeError, OverflowError):
        errors.append(PolicyError(loc, f"cannot read {event.value!r} as {tag.rsplit(':', 1)[-1]}"))
        return event.value


class _Frame:
    __slots__ = ("node", "anchor", "pending_key", "seen")

    def __init__(self, node: Seq | Map, anchor: str | None) -> None:
        self.node = node
        self.anchor = anchor
        self.pending_key: Scalar | None = None
        self.seen: dict[str, Scalar] = {}


class _Composer:
    def __init__(self, filename: str) -> None:
        self.filename = filename
        self.errors: list[PolicyError] = []
        self.anchors: dict[str, Node] = {}
        self.sizes: dict[int, int] = {}  # id(node) -> expanded size
        self.open_anchors: set[str] = set()
        self.stack: list[_Frame] = []
        self.expanded = 0
        self.root: Node | None = None
        self.documents = 0

    def fatal(self, loc: Location, message: str) -> PolicyErrors:
        return PolicyErrors(self.errors + [PolicyError(loc, message)])

    def count(self, n: int, loc: Location) -> None:
        self.expanded += n
        if self.expanded > MAX_EXPANDED_NODES:
            raise self.fatal(loc, (
                f"document expands to more than {MAX_EXPANDED_NODES} values through "
                "aliases (an alias bomb?); refused"
            ))

    def attach(self, node: Node, loc: Location) -> None:
        if not self.stack:
            self.root = node
            return
        frame = self.stack[-1]
        if isinstance(frame.node, Seq):
            frame.node.items.append(node)
            return
        if frame.pending_key is None:
            if not isinstance(node, Scalar):
                self.errors.append(PolicyError(loc, "a mapping key must be a plain word, not a list or mapping"))
                frame.pending_key = Scalar(loc, "?", None, True)
                return
            if node.text == "<<":
                self.errors.append(PolicyError(loc, "YAML merge keys (<<) are not supported; use `extends:`"))
            first = frame.seen.get(node.text)
            if first is not None:
                self.errors.append(PolicyError(loc, (
                    f"duplicate key {node.text!r} (first written at line {first.loc.line}); "
                    "each key may appear once in a mapping"
                )))
            else:
                frame.seen[node.text] = node
            frame.pending_key = node
        else:
            frame.node.items.append((frame.pending_key, node))
            frame.pending_key = None

    def feed(self, event: Any) -> None:
        loc = _loc(self.filename, event.start_mark)
        if isinstance(event, yaml.DocumentStartEvent):
            self.documents += 1
            if self.documents > 1:
                raise self.fatal(loc, "more than one YAML document (---); a policy file holds exactly one")
        elif isinstance(event, yaml.ScalarEvent):
            self.count(1, loc)
            node: Node = Scalar(loc, event.value, _scalar_value(event, loc, self.errors),
                                plain=event.style in (None, ""))
            self.sizes[id(node)] = 1
            if event.anchor:
                self.anchors[event.anchor] = node
            self.attach(node, loc)
        elif isinstance(event, (yaml.SequenceStartEvent, yaml.MappingStartEvent)):
            self.count(1, loc)
            if len(self.stack) >= MAX_DEPTH:
                raise self.fatal(loc, f"nested more than {MAX_DEPTH} levels deep; refused")
            if event.tag not in (None, "!") and event.tag not in (_STD + "seq", _STD + "map"):
                self.errors.append(PolicyError(loc, f"YAML tag {event.tag!r} is not allowed in a policy"))
            coll: Seq | Map = Seq(loc) if isinstance(event, yaml.SequenceStartEvent) else Map(loc)
            if event.anchor:
                self.open_anchors.add(event.anchor)
            self.stack.append(_Frame(coll, event.anchor))
            self.sizes[id(coll)] = self.expanded  # start mark; turned into a size at the end
        elif isinstance(event, (yaml.SequenceEndEvent, yaml.MappingEndEvent)):
            frame = self.stack.pop()
            self.sizes[id(frame.node)] = self.expanded - self.sizes[id(frame.node)] + 1
            if frame.anchor:
                self.open_anchors.discard(frame.anchor)
                self.anchors[frame.anchor] = frame.node
            self.attach(frame.node, frame.node.loc)
        elif isinstance(event, yaml.AliasEvent):
            if event.anchor in self.open_anchors:
                raise self.fatal(loc, f"alias *{event.anchor} refers to a value that contains it (recursive alias)")
            target = self.anchors.get(event.anchor)
            if target is None:
                raise self.fatal(loc, f"alias *{event.anchor} names no anchor (&{event.anchor}) written before it")
            self.count(self.sizes[id(target)], loc)
            self.attach(target, loc)


def yaml_scalar(text: str) -> str:
    """`text` as YAML that reads back as that string, for the files enforcer
    writes (record, import): a plain scalar when YAML reads it back
    unchanged, else a double-quoted (JSON) one -- `true`, `null`, `1e3` or
    `a: b` need quotes (a policy named after `-o null.yaml` is "null")."""
    import json

    if re.match(r"^[A-Za-z0-9_./-][A-Za-z0-9_./ -]*$", text) and not text.endswith(" "):
        try:
            if yaml.safe_load(text) == text:
                return text
        except yaml.YAMLError:
            pass
    return json.dumps(text)


def parse_yaml(data: bytes, filename: str) -> Node:
    """Parse one policy file into located nodes, or raise PolicyErrors."""
    root, errors = parse_yaml_collect(data, filename)
    if errors:
        raise PolicyErrors(errors)
    return root


def parse_yaml_collect(data: bytes, filename: str) -> tuple[Node, list[PolicyError]]:
    """Like parse_yaml, but errors that leave a usable tree (duplicate keys,
    refused tags) are returned so the caller can report them together with
    the checks of the content. Fatal problems still raise PolicyErrors."""
    text = _precheck_text(data, filename)
    composer = _Composer(filename)
    loader = _Loader(text)
    try:
        while loader.check_event():
            composer.feed(loader.get_event())
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        problem = e.problem or "invalid YAML"
        context = f" ({e.context})" if e.context else ""
        raise composer.fatal(_loc(filename, mark), f"YAML syntax: {problem}{context}") from None
    except yaml.YAMLError as e:
        raise composer.fatal(Location(filename, 1, 1), f"YAML syntax: {e}") from None
    finally:
        loader.dispose()
    if composer.root is None or (isinstance(composer.root, Scalar) and composer.root.value is None):
        raise PolicyErrors([PolicyError(
            Location(filename, 1, 1), "file is empty; a policy is a mapping with at least `name:`"
        )])
    return composer.root, composer.errors[:MAX_ERRORS]
