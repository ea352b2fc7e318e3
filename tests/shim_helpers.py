"""Helpers for the shim tests: hand-built Plans, busybox bundles, a fake runc.

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

from enforcer.plan import (
    PLAN_FORMAT,
    CapabilityPlan,
    CgroupPlan,
    MountOp,
    Plan,
    RlimitPlan,
    SeccompFilter,
    SeccompPlan,
    UserPlan,
)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURE_CONFIG = "/work/shared/fixtures/docker-20.10-oci-config.json"
if not os.path.exists(FIXTURE_CONFIG):  # the repo may sit elsewhere in CI
    FIXTURE_CONFIG = os.path.join(os.path.dirname(REPO), "shared", "fixtures",
                                  "docker-20.10-oci-config.json")
BUSYBOX = shutil.which("busybox") or "/usr/bin/busybox"
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


# -- bundles -------------------------------------------------------------------------


def busybox_rootfs(rootfs: str, extra_files: dict[str, str] | None = None) -> str:
    """A minimal rootfs: static busybox and its applet links."""
    for d in ("bin", "proc", "sys", "dev", "tmp", "etc", "root", "www"):
        os.makedirs(os.path.join(rootfs, d), exist_ok=True)
    # runc gives a tmpfs the mode of the directory it is mounted on, as images do
    os.chmod(os.path.join(rootfs, "tmp"), 0o1777)
    shutil.copy2(BUSYBOX, os.path.join(rootfs, "bin", "busybox"))
    applets = subprocess.run([BUSYBOX, "--list"], capture_output=True, text=True,
                             check=True).stdout.split()
    for applet in applets:
        link = os.path.join(rootfs, "bin", applet)
        if not os.path.lexists(link):
            os.symlink("busybox", link)
    with open(os.path.join(rootfs, "etc", "passwd"), "w") as f:
        f.write("root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n")
    with open(os.path.join(rootfs, "etc", "group"), "w") as f:
        f.write("root:x:0:\nnogroup:x:65534:\n")
    for rel, text in (extra_files or {}).items():
        path = os.path.join(rootfs, rel.lstrip("/"))
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write(text)
    return rootfs


def runc_bundle(bundle: str, args: list[str], rootfs_src: str | None = None,
                **process: Any) -> str:
    """`runc spec` in `bundle`, no terminal, `args` as the process."""
    os.makedirs(bundle, exist_ok=True)
    rootfs = os.path.join(bundle, "rootfs")
    if rootfs_src:
        if not os.path.exists(rootfs):
            os.symlink(rootfs_src, rootfs)
    else:
        busybox_rootfs(rootfs)
    config_path = os.path.join(bundle, "config.json")
    if os.path.exists(config_path):
        os.unlink(config_path)
    subprocess.run([RUNC, "spec"], cwd=bundle, check=True)
    with open(config_path) as f:
        config = json.load(f)
    config["process"]["terminal"] = False
    config["process"]["args"] = args
    config["process"].update(process)
    config["root"]["path"] = "rootfs"
    with open(config_path, "w") as f:
        json.dump(config, f, indent=2)
    return bundle


def fake_runc(path: str, marker: str) -> str:
    """An executable that records its arguments in `marker` and exits 0."""
    with open(path, "w") as f:
        f.write(f"#!/bin/sh\nprintf '%s\\n' \"$@\" > {marker}\nexit 0\n")
    os.chmod(path, 0o755)
    return path


def shim_cmd() -> list[str]:
    """The shim as a command line, started the way a runtime would start it."""
    return [PYTHON, "-IS", "-c",
            f"import sys; sys.path.insert(0, {REPO!r}); sys.argv[0] = 'enforcer-runc'; "
            "from enforcer.shim.main import main; sys.exit(main())"]


def run_shim(args: list[str], env: dict[str, str] | None = None, **kw: Any
             ) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if k != "ENFORCER_SHIM_ACTIVE"}
    full_env.update(env or {})
    return subprocess.run(shim_cmd() + args, env=full_env, capture_output=True, text=True,
                          timeout=kw.pop("timeout", 60), **kw)


def force_delete(container_id: str, root: str | None = None) -> None:
    cmd = [RUNC] + (["--root", root] if root else []) + ["delete", "--force", container_id]
    subprocess.run(cmd, capture_output=True, timeout=30)


def run_shim_files(args: list[str], env: dict[str, str], workdir: str,
                   timeout: float = 60) -> tuple[int, str, str]:
    """Like run_shim, with stdio in files: a detached container keeps the
    stdio runc gave it, so waiting for EOF on a pipe would wait for it."""
    full_env = {k: v for k, v in os.environ.items() if k != "ENFORCER_SHIM_ACTIVE"}
    full_env.update(env)
    out_path = os.path.join(workdir, f"shim-{os.getpid()}-{len(args)}.out")
    err_path = out_path[:-4] + ".err"
    with open(out_path, "w") as out, open(err_path, "w") as err:
        rc = subprocess.run(shim_cmd() + args, env=full_env, stdin=subprocess.DEVNULL,
                            stdout=out, stderr=err, timeout=timeout).returncode
    with open(out_path) as out, open(err_path) as err:
        return rc, out.read(), err.read()
