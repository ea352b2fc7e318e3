"""The shim's JSON: see enforcer/fastjson.py (shared with `enforcer run`'s start path)."""

from enforcer.fastjson import dumps, loads

__all__ = ["dumps", "loads"]
