"""What the attacks on the shim share.

    ShimNode     a node of the test's own: precompiled Plans, a shim config,
                 a registry, a Plan cache, a runc root, the compiled front
                 end and a real enforcer-shimd configured like that node
    CAPLESS      the prefix that runs a command as root with no capability
                 at all (what a root workload under a policy that drops every
                 capability is)
    HostState    what an attack must not change: the watched files, the
                 containers and mounts of this test, the node's registry

Every attack runs against the real thing: runc, the server, the front end.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

from tests import session
from tests.e2e.rootfs import build_busybox_rootfs, runc_spec_bundle
from tests.shim_fixtures import ShimServer, start_server, stop_server
from tests.shim_helpers import RUNC, make_plan, write_plan

# Root, with empty bounding, inheritable and ambient sets and no_new_privs:
# nothing it executes can gain a capability.
CAPLESS = ["setpriv", "--bounding-set=-all", "--inh-caps=-all", "--ambient-caps=-all",
           "--no-new-privs"]


class ShimNode:
    """A node's enforcer setup in one scratch directory (removed by close())."""

    def __init__(self, *, config: dict[str, Any] | None = None, runc: str = RUNC,
                 server: bool = True) -> None:
        self.root = Path(session.mkdtemp("enf-adv-shim-", dir="/tmp"))
        self.plans = self.root / "plans"
        self.plans.mkdir()
        # Two installed policies: "strict" (mkdir fails) and "lenient".
        write_plan(str(self.plans / "strict.json"), make_plan(policy_name="strict"))
        write_plan(str(self.plans / "lenient.json"), make_plan(policy_name="lenient"))
        self.runc_root = self.root / "runc-root"
        self.config_path = self.root / "shim.json"
        self.write_config({"plans_dir": str(self.plans), "runc": runc, **(config or {})})
        self.server: ShimServer | None = None
        if server:
            srv_dir = self.root / "srv"
            srv_dir.mkdir()
            self.server = start_server(str(srv_dir), "--workers", "2", env=self.env())

    def write_config(self, config: dict[str, Any]) -> None:
        self.config_path.write_text(json.dumps(config))

    def env(self, **extra: str) -> dict[str, str]:
        """The environment of both the server and the front end."""
        env = {"ENFORCER_SHIM_CONFIG": str(self.config_path),
               "ENFORCER_RUNTIME_DIR": str(self.root / "run"),
               "ENFORCER_CACHE_DIR": str(self.root / "cache"), **extra}
        if self.server is not None:
            env["ENFORCER_SHIM_SOCKET"] = self.server.socket
        return env

    @property
    def front_end(self) -> str:
        assert self.server is not None
        return self.server.binary

    def bundle(self, name: str, args: list[str], rootfs_src: str,
               extra_files: dict[str, str] | None = None,
               annotations: dict[str, str] | None = None) -> Path:
        """A runc bundle (busybox) whose config carries `annotations`."""
        bundle = self.root / name

        def patch(config: dict[str, Any]) -> dict[str, Any]:
            if annotations:
                config["annotations"] = annotations
            return config

        runc_spec_bundle(str(bundle), rootfs_src, args, patch)
        for rel, text in (extra_files or {}).items():
            path = bundle / "rootfs" / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        return bundle

    def shim(self, args: list[str], *, prefix: list[str] | None = None,
             env: dict[str, str] | None = None, front_end: str | None = None,
             cwd: str | Path | None = None, timeout: float = 120
             ) -> subprocess.CompletedProcess[str]:
        """Run the front end; stdio goes to files, not pipes: a container that
        an attack did create keeps them open (waiting for EOF would hang)."""
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("ENFORCER_SHIM")}
        full_env.update(env if env is not None else self.env())
        out, err = self.root / "shim.out", self.root / "shim.err"
        with open(out, "w") as out_f, open(err, "w") as err_f:
            code = subprocess.run([*(prefix or []), front_end or self.front_end, *args],
                                  env=full_env, stdout=out_f, stderr=err_f, timeout=timeout,
                                  stdin=subprocess.DEVNULL, cwd=cwd).returncode
        return subprocess.CompletedProcess(args, code, out.read_text(), err.read_text())

    def containers(self) -> list[str]:
        if not self.runc_root.exists():
            return []
        r = subprocess.run([RUNC, "--root", str(self.runc_root), "list", "-q"],
                           capture_output=True, text=True, timeout=30)
        return sorted(r.stdout.split())

    def records(self) -> list[str]:
        workloads = self.root / "run" / "workloads"
        return sorted(os.listdir(workloads)) if workloads.exists() else []

    def close(self) -> None:
        for cid in self.containers():
            subprocess.run([RUNC, "--root", str(self.runc_root), "delete", "--force", cid],
                           capture_output=True, timeout=30)
        try:
            if self.server is not None:
                stop_server(self.server)
        finally:
            session.remove_tree(str(self.root))


def busybox_rootfs(directory: Path) -> str:
    return build_busybox_rootfs(str(directory / "rootfs-src"))


def _file_state(path: str) -> tuple[str, int, int, int] | None:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    digest = ""
    if os.path.isfile(path) and not os.path.islink(path):
        with open(path, "rb") as f:
            digest = hashlib.sha256(f.read()).hexdigest()
    return digest, st.st_mode, st.st_uid, st.st_size


class HostState:
    """A snapshot of what an attack on a node must leave alone."""

    def __init__(self, node: ShimNode, watched: list[str | Path]) -> None:
        self.node, self.watched = node, [str(p) for p in watched]
        self.before = self.take()

    def take(self) -> dict[str, Any]:
        with open("/proc/self/mountinfo") as f:
            mounts = sorted(line.split()[4] for line in f
                            if session.TAG in line.split()[4])
        return {"files": {p: _file_state(p) for p in self.watched},
                "containers": self.node.containers(),
                "mounts": mounts}

    def assert_unchanged(self) -> None:
        after = self.take()
        assert after == self.before, f"the host changed:\nbefore {self.before}\nafter  {after}"


def recording_runc(path: Path, log: Path, *, real: str | None = RUNC) -> str:
    """A runc that appends "PPID CAPEFF ARGS" per call to `log`, then runs the
    real runc with the same arguments (or exits 0 when `real` is None)."""
    tail = f'exec {real} "$@"\n' if real else "exit 0\n"
    path.write_text("#!/bin/sh\n"
                    "caps=$(sed -n 's/^CapEff:[[:space:]]*//p' /proc/self/status)\n"
                    f"printf '%s %s %s\\n' \"$PPID\" \"$caps\" \"$*\" >> {log}\n" + tail)
    path.chmod(0o755)
    return str(path)


def runc_calls(log: Path) -> list[tuple[int, int, str]]:
    """(parent pid, effective capabilities, arguments) per recorded runc call."""
    if not log.exists():
        return []
    calls = []
    for line in log.read_text().splitlines():
        ppid, caps, args = (line.split(" ", 2) + ["", ""])[:3]
        calls.append((int(ppid), int(caps, 16), args))
    return calls


def which(tool: str) -> str:
    found = shutil.which(tool)
    assert found, f"{tool} is not installed (scripts/setup.sh installs it)"
    return found
