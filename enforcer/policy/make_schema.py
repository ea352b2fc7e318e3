"""Regenerate enforcer/policy/schema.json: `python -m enforcer.policy.make_schema`.

The JSON Schema is shipped as a static file (editors fetch it; `enforcer
schema` prints it without importing anything heavy). It is generated from
the same tables the validator uses, and a unit test checks that the shipped
file equals what this module generates, so the two cannot drift apart.
The schema checks shape only; names (syscalls, capabilities, constants,
errno) and cross-field rules are checked by `enforcer check`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def build() -> dict[str, Any]:
    from enforcer.kernel import capabilities as caps
    from enforcer.policy import constants, groups, landlock
    from enforcer.policy.model import NAMESPACES, SCOPES
    from enforcer.policy.validate import ARCH_WORDS, ENV_NAME_RE, ENV_PATTERN_RE, TMPFS_OPTIONS

    size: dict[str, Any] = {"description": "bytes: a number, or with a unit K M G T (1000s) or Ki Mi Gi Ti (1024s)",
            "oneOf": [{"type": "integer", "minimum": 0},
                      {"type": "string", "pattern": r"^[0-9]+(\.[0-9]+)?\s*(K|M|G|T|Ki|Mi|Gi|Ti)?$"}]}
    size_or_max = {"oneOf": size["oneOf"] + [{"enum": ["max", "unlimited"]}], "description": size["description"] + ", or max"}
    duration = {"description": "microseconds, or a number with us, ms or s",
                "oneOf": [{"type": "integer", "minimum": 1}, {"type": "string", "pattern": r"^[0-9]+(\.[0-9]+)?\s*(us|ms|s)$"}]}
    action_str = {"type": "string",
                  "pattern": r"^(allow|log|trap|kill|kill-thread|kill-process|errno\s+([A-Z][A-Z0-9]*|[0-9]+))$",
                  "examples": ["allow", "errno EPERM", "errno 1", "kill-process", "log", "trap"]}
    action = {"description": "allow, log, trap, kill-thread, kill-process (kill), errno NAME or errno N",
              "oneOf": [action_str, {"type": "object", "additionalProperties": False, "required": ["action"],
                                     "properties": {"action": {"enum": ["allow", "log", "trap", "kill", "kill-thread", "kill-process", "errno"]},
                                                    "errno": {"oneOf": [{"type": "string", "pattern": "^[A-Za-z][A-Za-z0-9]*$"}, {"type": "integer", "minimum": 0, "maximum": 4095}]}}}]}
    sc_word = {"type": "string", "anyOf": [{"pattern": r"^[a-z_][a-z0-9_]*$"}, {"enum": ["@" + g for g in groups.GROUPS]}],
               "examples": ["read", "@basic-io"]}
    def words(item: dict[str, Any]) -> dict[str, Any]:
        return {"oneOf": [item, {"type": "array", "items": item}]}

    argval = {"oneOf": [{"type": "integer", "minimum": 0, "maximum": 2**64 - 1},
                        {"type": "string", "pattern": r"^\s*([A-Za-z_][A-Za-z0-9_]*|0x[0-9a-fA-F]+|0o[0-7]+|0b[01]+|[0-9]+)(\s*\|\s*([A-Za-z_][A-Za-z0-9_]*|0x[0-9a-fA-F]+|0o[0-7]+|0b[01]+|[0-9]+))*\s*$",
                         "examples": ["AF_INET", "CLONE_NEWUSER|CLONE_NEWNS"]}]}
    cap = {"type": "string", "pattern": "^([Cc][Aa][Pp]_)?[A-Za-z_]+$", "examples": [c[4:] for c in caps.CAPABILITIES] + ["ALL"]}
    path = {"type": "string", "pattern": "^/"}
    paths = {"type": "array", "items": path}
    rl_value = {"oneOf": [{"type": "integer", "minimum": 0}, {"enum": ["unlimited", "infinity", "max"]},
                          {"type": "string", "pattern": r"^[0-9]+(\.[0-9]+)?\s*(K|M|G|T|Ki|Mi|Gi|Ti)?$"}]}
    id_ = {"oneOf": [{"type": "integer", "minimum": 0, "maximum": 4294967294}, {"type": "string", "pattern": r"^[a-z_][a-z0-9_.-]*\$?$"}]}
    
    def obj(props: dict[str, Any], required: tuple[str, ...] = ()) -> dict[str, Any]:
        d = {"type": "object", "additionalProperties": False, "properties": props}
        if required:
            d["required"] = list(required)
        return d
    
    schema = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://enforcer.invalid/schema/policy-v1.json",
        "title": "enforcer policy, format version 1",
        "description": "A runtime security policy for a Linux process or container. See docs/policy-reference.md.",
        **obj({
            "version": {"const": 1},
            "name": {"type": "string", "pattern": r"^[a-z0-9][a-z0-9._-]{0,62}$"},
            "description": {"type": "string"},
            "extends": words({"type": "string", "minLength": 1}),
            "mode": {"enum": ["enforce", "audit"]},
            "scope": {"enum": list(SCOPES),
                      "description": "host (default): a sandbox on the host; container: assumes "
                                     "a container runtime's own root, /dev and pid namespace. "
                                     "Never inherited."},
            "syscalls": obj({
                "default": action, "unknown": action, "deny_action": action,
                "log_denials": {"type": "boolean"}, "inherit": {"type": "boolean"},
                "architectures": words({"enum": list(ARCH_WORDS)}),
                "allow": words(sc_word), "deny": words(sc_word),
                "rules": {"type": "array", "items": obj({
                    "syscalls": words(sc_word), "action": action, "comment": {"type": "string"},
                    "args": {"type": "array", "maxItems": 6, "items": obj({
                        "index": {"type": "integer", "minimum": 0, "maximum": 5},
                        "op": {"enum": ["eq", "ne", "lt", "le", "gt", "ge", "masked_eq"]},
                        "value": argval, "mask": argval}, ("index", "op", "value"))},
                }, ("syscalls", "action"))},
            }),
            "capabilities": {**obj({"keep": words(cap), "drop": words(cap), "add": words(cap),
                                    "ambient": words(cap)}),
                             "not": {"anyOf": [{"required": ["keep", "drop"]}, {"required": ["keep", "add"]}]}},
            "no_new_privileges": {"type": "boolean"},
            "filesystem": obj({
                "read_only_root": {"type": "boolean"},
                "read_only_paths": paths, "writable_paths": paths, "hidden_paths": paths,
                "masked_paths": {"oneOf": [{"const": "default"}, {"type": "array", "items": {"oneOf": [path, {"const": "default"}]}}]},
                "tmpfs": {"type": "array", "items": {"oneOf": [path, obj({
                    "path": path, "size": size,
                    "mode": {"oneOf": [{"type": "string", "pattern": "^(0o)?[0-7]{1,5}$"}, {"type": "integer", "minimum": 0}]},
                    "options": words({"enum": list(TMPFS_OPTIONS)})}, ("path",))]}},
                "tmpfs_remove": paths,
                "bind": {"type": "array", "items": obj({
                    "source": path, "target": path, "read_only": {"type": "boolean"}},
                    ("source", "target"))},
                "rootfs": path,
                "private_devices": {"type": "boolean"},
            }),
            "resources": obj({
                "memory": obj({"max": size_or_max, "swap": size_or_max}),
                "pids": obj({"max": {"oneOf": [{"type": "integer", "minimum": 1}, {"enum": ["max", "unlimited"]}]}}),
                "cpu": {**obj({"cores": {"type": "number", "exclusiveMinimum": 0}, "quota": {"oneOf": [duration, {"enum": ["max", "unlimited"]}]}, "period": duration}),
                        "not": {"required": ["cores", "quota"]}},
                "io": obj({"weight": {"type": "integer", "minimum": 1, "maximum": 10000},
                           "devices": {"type": "array", "items": obj({
                               "device": {"type": "string", "pattern": r"^([0-9]+:[0-9]+|/dev/.+)$"},
                               "read_bps": size_or_max, "write_bps": size_or_max,
                               "read_iops": {"type": "integer", "minimum": 1}, "write_iops": {"type": "integer", "minimum": 1}}, ("device",))}}),
            }),
            "rlimits": {"type": "object",
                        "propertyNames": {"pattern": "^(?:[Rr][Ll][Ii][Mm][Ii][Tt]_)?(" + "|".join(n.lower() + "|" + n for n in constants.RLIMITS) + ")$"},
                        "additionalProperties": {"oneOf": [rl_value, obj({"soft": rl_value, "hard": rl_value}, ("soft", "hard"))]}},
            "user": {**obj({"uid": id_, "gid": id_, "groups": {"type": "array", "items": id_},
                            "dynamic": {"type": "boolean"}}),
                     "oneOf": [{"required": ["uid"], "not": {"properties": {"dynamic": {"const": True}}, "required": ["dynamic"]}},
                               {"required": ["dynamic"], "properties": {"dynamic": {"const": True}},
                                "not": {"anyOf": [{"required": ["uid"]}, {"required": ["gid"]}]}}]},
            "env": obj({
                "clear": {"type": "boolean"},
                "keep": words({"type": "string", "pattern": ENV_PATTERN_RE.pattern}),
                "set": {"type": "object", "propertyNames": {"pattern": ENV_NAME_RE.pattern},
                        "additionalProperties": {"type": "string"}},
            }),
            "namespaces": words({"enum": list(NAMESPACES)}),
            "landlock": landlock.schema(path, obj),
        }, ("name",)),
    }
    return schema


SCHEMA_PATH = Path(__file__).with_name("schema.json")


def render() -> str:
    return json.dumps(build(), indent=2) + "\n"


if __name__ == "__main__":
    SCHEMA_PATH.write_text(render())
    print(f"wrote {SCHEMA_PATH}")
