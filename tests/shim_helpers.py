"""Helpers for the shim tests: hand-built Plans, a fake runc, running the shim.

Plans are built by hand here (not compiled) so the shim's tests pin the
shim's behaviour and not the compiler's; the e2e tests use the shipped
policies through the real compiler.
"""

from __future__ import annotations

import base64
import copy
import json
import os
import shutil
import struct
import subprocess
from typing import Any

from enforcer.plan import PLAN_FORMAT, CgroupPlan, Plan, SeccompFilter, SeccompPlan

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURE_CONFIG = os.path.join(os.path.dirname(REPO), "shared", "fixtures",
                              "docker-20.10-oci-config.json")
RUNC = shutil.which("runc") or "/usr/sbin/runc"
PYTHON = os.path.join(REPO, ".venv", "bin", "python")

# One BPF instruction: return SECCOMP_RET_ALLOW (the kernel never sees it in
# unit tests; runc loads the OCI form).
ALLOW_BPF = base64.b64encode(struct.pack("<HBBI", 0x06, 0, 0, 0x7FFF0000)).decode()

# A filter that is easy to observe from busybox: mkdir fails with EPERM.
OCI_NO_MKDIR = {
    "defaultAction": "SCMP_ACT_ALLOW",
    "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
    "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1}],
}


def cap_mask(*numbers: int) -> int:
    mask = 0
    for n in numbers:
        mask |= 1 << n
    return mask


def make_plan(**overrides: Any) -> Plan:
    """A small, valid Plan; keyword arguments replace its fields."""
    fields: dict[str, Any] = dict(
        format=PLAN_FORMAT,
        enforcer_version="0.1.0",
        policy_name="handmade",
        policy_hash="ab" * 32,
        mode="enforce",
        seccomp=SeccompPlan(native_arch="x86_64", architectures=("x86_64",),
                            default_action="allow",
                            filter=SeccompFilter(bpf_b64=ALLOW_BPF, flags=()),
                            syscall_names={83: "mkdir"}, oci=copy.deepcopy(OCI_NO_MKDIR)),
        capabilities=None,
        mounts=(),
        cgroup=CgroupPlan(),
        rlimits=(),
        user=None,
        namespaces=(),
        no_new_privileges=True,
    )
    fields.update(overrides)
    return Plan(**fields)


def write_plan(path: str, plan: Plan) -> str:
    with open(path, "w") as f:
        f.write(plan.to_json())
    return path


def fixture_config() -> dict[str, Any]:
    with open(FIXTURE_CONFIG) as f:
        return json.load(f)


# -- running the shim ---------------------------------------------------------------


def fake_runc(path: str, marker: str) -> str:
    """An executable that records its arguments in `marker` and exits 0."""
    with open(path, "w") as f:
        f.write(f"#!/bin/sh\nprintf '%s\\n' \"$@\" > {marker}\nexit 0\n")
    os.chmod(path, 0o755)
    return path


# Which front end the shim tests drive: "python" (the Python shim in its own
# process) or "compiled" (frontend/enforcer-runc.c talking to enforcer-shimd,
# one server per shim configuration from "pool"). Set per test by the
# `shim_front_end` fixture (tests/shim_fixtures.py).
FRONT_END: dict[str, Any] = {"name": "python", "binary": "", "pool": None}


def shim_cmd() -> list[str]:
    """The shim as a command line, started the way a runtime would start it."""
    if FRONT_END["name"] == "compiled":
        return [FRONT_END["binary"]]
    return [PYTHON, "-IS", "-c",
            f"import sys; sys.path.insert(0, {REPO!r}); sys.argv[0] = 'enforcer-runc'; "
            "from enforcer.shim.main import main; sys.exit(main())"]


def _shim_env(env: dict[str, str] | None) -> dict[str, str]:
    """The caller's environment for the shim; with the compiled front end, the
    socket of a server configured like `env` (tests/shim_fixtures.py)."""
    full_env = {k: v for k, v in os.environ.items() if k != "ENFORCER_SHIM_ACTIVE"}
    full_env.update(env or {})
    if FRONT_END["name"] == "compiled" and "ENFORCER_SHIM_SOCKET" not in (env or {}):
        full_env["ENFORCER_SHIM_SOCKET"] = FRONT_END["pool"].for_env(full_env).socket
    return full_env


def run_shim(args: list[str], env: dict[str, str] | None = None, **kw: Any
             ) -> subprocess.CompletedProcess[str]:
    full_env = _shim_env(env)
    return subprocess.run(shim_cmd() + args, env=full_env, capture_output=True, text=True,
                          timeout=kw.pop("timeout", 60), **kw)


def force_delete(container_id: str, root: str | None = None) -> None:
    cmd = [RUNC] + (["--root", root] if root else []) + ["delete", "--force", container_id]
    subprocess.run(cmd, capture_output=True, timeout=30)


def run_shim_files(args: list[str], env: dict[str, str], workdir: str,
                   timeout: float = 60) -> tuple[int, str, str]:
    """Like run_shim, with stdio in files: a detached container keeps the
    stdio runc gave it, so waiting for EOF on a pipe would wait for it."""
    full_env = _shim_env(env)
    out_path = os.path.join(workdir, f"shim-{os.getpid()}-{len(args)}.out")
    err_path = out_path[:-4] + ".err"
    with open(out_path, "w") as out, open(err_path, "w") as err:
        rc = subprocess.run(shim_cmd() + args, env=full_env, stdin=subprocess.DEVNULL,
                            stdout=out, stderr=err, timeout=timeout).returncode
    with open(out_path) as out, open(err_path) as err:
        return rc, out.read(), err.read()


def applied_policy(runtime_dir: str | os.PathLike[str], container_id: str) -> str:
    """`NAME@HASH16` of the policy the shim merged into a container, from its
    registry record: the shim's one record of what it applied (config.json
    carries none; its annotations stay the caller's)."""
    with open(os.path.join(runtime_dir, "workloads", f"{container_id}.json")) as f:
        record = json.load(f)
    return f"{record['policy']}@{record['policy_hash'][:16]}"


def expected_probe_table(policy: str) -> dict[str, str]:
    """The `enforcer run` issue's committed table (tests/probes/expected.md), one column."""
    from tests.run_helpers import read_probe_table

    return {probe: row[policy] for probe, row in read_probe_table().items()}
