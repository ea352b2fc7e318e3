"""The shim's own configuration: /etc/enforcer/shim.json.

    {
      "default_policy": "default",      # used when neither --policy nor the
                                        #   io.enforcer.policy annotation names one
      "on_no_policy": "refuse",         # or "passthrough" (start without a policy,
                                        #   warn, and register it for the monitor)
      "runc": "/usr/sbin/runc",         # the real runc (default: `runc` on PATH)
      "plans_dir": "/etc/enforcer/plans",  # precompiled Plans: NAME.json
      "cache_dir": null,                # the Plan cache (enforcer/planstore.py)
      "runtime_dir": null,              # registry root (default: $ENFORCER_RUNTIME_DIR
                                        #   or /run/enforcer)
      "require_seccomp_flags": false,   # refuse when runc cannot take the filter's
                                        #   flags (e.g. LOG) instead of dropping them
      "annotation_policies": null       # the policies the io.enforcer.policy
                                        #   annotation may choose (null: any installed)
      "landlock_helper": null           # enforcer-landlock (default: next to the shim's
                                        #   program); see enforcer/shim/landlock.py
    }

Found at `--config FILE`, else $ENFORCER_SHIM_CONFIG, else the default path
(which may be absent: then every key has its default). An unknown key or a
wrong type is an error: a typo must not silently turn refusal into
pass-through.
"""

from __future__ import annotations

import os

from enforcer import fastjson
from enforcer.shim.errors import ShimError

DEFAULT_CONFIG_PATH = "/etc/enforcer/shim.json"
DEFAULT_PLANS_DIR = "/etc/enforcer/plans"

_KEYS = {"default_policy": str, "on_no_policy": str, "runc": str, "plans_dir": str,
         "cache_dir": str, "runtime_dir": str, "require_seccomp_flags": bool,
         "annotation_policies": list,
         "landlock_helper": str}


class ShimConfig:
    __slots__ = ("path", "default_policy", "on_no_policy", "runc", "plans_dir", "cache_dir",
                 "runtime_dir", "require_seccomp_flags", "annotation_policies",
                 "landlock_helper")

    def __init__(self, path: str | None = None) -> None:
        self.path = path
        self.default_policy: str | None = None
        self.on_no_policy = "refuse"
        self.runc: str | None = None
        self.plans_dir = DEFAULT_PLANS_DIR
        self.cache_dir: str | None = None
        self.runtime_dir: str | None = None
        self.require_seccomp_flags = False
        self.annotation_policies: list[str] | None = None
        self.landlock_helper: str | None = None

    def registry_root(self) -> str:
        return os.environ.get("ENFORCER_RUNTIME_DIR") or self.runtime_dir or "/run/enforcer"


def load_config(explicit: str | None) -> ShimConfig:
    path = explicit or os.environ.get("ENFORCER_SHIM_CONFIG") or None
    required = path is not None
    path = path or DEFAULT_CONFIG_PATH
    cfg = ShimConfig(path)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        if required:
            raise ShimError(f"shim config {path}: no such file") from None
        return cfg
    except OSError as e:
        raise ShimError(f"shim config {path}: cannot read: {e.strerror}") from None
    try:
        doc = fastjson.loads(data)
    except ValueError as e:
        raise ShimError(f"shim config {path}: not valid JSON: {e}") from None
    if not isinstance(doc, dict):
        raise ShimError(f"shim config {path}: expected a JSON object")
    for key, value in doc.items():
        if key not in _KEYS:
            raise ShimError(f"shim config {path}: unknown key {key!r}; "
                            f"allowed: {', '.join(sorted(_KEYS))}")
        if value is None:
            continue
        if _KEYS[key] is bool:
            if not isinstance(value, bool):
                raise ShimError(f"shim config {path}: {key} must be true or false")
        elif _KEYS[key] is list:
            if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
                raise ShimError(f"shim config {path}: {key} must be a list of policy names")
        elif not isinstance(value, str) or not value:
            raise ShimError(f"shim config {path}: {key} must be a non-empty string")
        setattr(cfg, key, value)
    if cfg.on_no_policy not in ("refuse", "passthrough"):
        raise ShimError(f"shim config {path}: on_no_policy is {cfg.on_no_policy!r}; "
                        "allowed: refuse, passthrough")
    return cfg
