"""deploy/systemd/enforcer-shimd.{socket,service}: systemd-analyze verifies
both, the settings the server depends on are there (and the ones that would
break it are not), and install-node.sh installs the units and the commands
they and the front end name. The server itself is started through socket
activation in tests/integration/test_deploy_shimd.py."""

from __future__ import annotations

import os
import re
import shlex
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from deploy_helpers import (DEPLOY, REPO, SYSTEM_UNITS, SYSTEMD, need, run,  # noqa: E402
                            systemd_root, temp_dir, unit_settings)

from enforcer.shim import server  # noqa: E402

SOCKET_UNIT = SYSTEMD / "enforcer-shimd.socket"
SERVICE_UNIT = SYSTEMD / "enforcer-shimd.service"
FRONT_END_SOURCE = REPO / "enforcer" / "shim" / "frontend" / "enforcer-runc.c"
BIN = "/usr/local/bin"


def make_root(root: Path, socket_text: str | None = None, service_text: str | None = None) -> None:
    """Both units, installed under `root` (systemd_root)."""
    (exec_start,) = unit_settings(SERVICE_UNIT)["ExecStart"]
    systemd_root(root, {SOCKET_UNIT.name: socket_text if socket_text is not None
                        else SOCKET_UNIT.read_text(),
                        SERVICE_UNIT.name: service_text if service_text is not None
                        else SERVICE_UNIT.read_text()}, exec_start)


def analyze(unit: str, *args: str, socket_text: str | None = None,
            service_text: str | None = None) -> tuple[int, str]:
    tool = need("systemd-analyze")
    if not SYSTEM_UNITS.is_dir():
        pytest.skip("no systemd unit directory to borrow targets from")
    with temp_dir("deploy-shimd-units-") as root:
        make_root(root, socket_text, service_text)
        r = run([tool, *args, f"--root={root}", unit])
    return r.returncode, r.stdout + r.stderr


@pytest.mark.parametrize("unit", [SOCKET_UNIT.name, SERVICE_UNIT.name])
def test_systemd_analyze_verify_accepts_the_unit(unit: str) -> None:
    code, out = analyze(unit, "verify")
    assert code == 0 and out.strip() == "", out


def test_verify_would_catch_a_mistake() -> None:
    _, out = analyze(SOCKET_UNIT.name, "verify",
                     socket_text=SOCKET_UNIT.read_text().replace("SocketMode=", "SocketMod="))
    assert "Unknown key" in out, out
    _, out = analyze(SERVICE_UNIT.name, "verify",
                     service_text=SERVICE_UNIT.read_text().replace("KillMode=process",
                                                                   "KillMode=proces"))
    assert "Failed to parse kill mode" in out, out


def test_the_socket_is_where_the_front_end_and_the_server_look() -> None:
    unit = unit_settings(SOCKET_UNIT)
    assert unit["ListenSequentialPacket"] == [server.DEFAULT_SOCKET]
    c_default = re.search(r'#define DEFAULT_SOCKET "([^"]+)"', FRONT_END_SOURCE.read_text())
    assert c_default and c_default.group(1) == server.DEFAULT_SOCKET
    # Only root may connect; the server serves its own uid only.
    assert unit["SocketMode"] == ["0600"]
    assert unit["SocketUser"] == ["root"] and unit["SocketGroup"] == ["root"]
    # A directory of its own, root's only: not the registry root /run/enforcer,
    # which the monitor's DaemonSet mounts into its pod.
    assert unit["DirectoryMode"] == ["0700"]
    assert not server.DEFAULT_SOCKET.startswith("/run/enforcer/")
    assert unit["WantedBy"] == ["sockets.target"]


def test_the_service_keeps_its_workers_and_watches_alive_on_stop() -> None:
    unit = unit_settings(SERVICE_UNIT)
    assert unit["KillMode"] == ["process"]
    assert unit["Restart"] == ["always"]
    assert unit["Requires"] == [SOCKET_UNIT.name] and unit["After"] == [SOCKET_UNIT.name]
    assert [shlex.split(v)[0] for v in unit["ExecStart"]] == [f"{BIN}/enforcer-shimd"]
    assert "User" not in unit and "DynamicUser" not in unit
    text = SERVICE_UNIT.read_text()
    assert "KillMode=process is REQUIRED" in text and "PR_SET_PDEATHSIG" in text


# Every setting that makes systemd give a service a mount namespace of its
# own (systemd's exec_needs_mount_namespace()); the server refuses clients
# in another mount namespace, so each would send every container to the
# Python shim. Plus settings that break the job in other ways (see the unit).
NEVER = ("ProtectSystem", "ProtectHome", "PrivateTmp", "PrivateDevices", "PrivateNetwork",
         "NetworkNamespacePath", "PrivateIPC", "IPCNamespacePath", "PrivateMounts",
         "MountFlags", "ProtectKernelTunables", "ProtectKernelModules", "ProtectKernelLogs",
         "ProtectControlGroups", "ProtectProc", "ProcSubset", "ReadOnlyPaths",
         "ReadWritePaths", "InaccessiblePaths", "ExecPaths", "NoExecPaths",
         "TemporaryFileSystem", "BindPaths", "BindReadOnlyPaths", "RootDirectory",
         "RootImage", "MountImages", "ExtensionImages", "ExtensionDirectories",
         "LogNamespace", "MountAPIVFS", "User", "DynamicUser", "PrivateUsers",
         "SystemCallFilter", "UMask")


def test_no_setting_that_would_break_the_server() -> None:
    present = sorted(set(NEVER) & set(unit_settings(SERVICE_UNIT)))
    assert not present, f"enforcer-shimd.service must not set {present} (see the unit's comments)"


def test_the_hardening_that_fits_is_there() -> None:
    unit = unit_settings(SERVICE_UNIT)
    caps = set(unit["CapabilityBoundingSet"][0].split())
    # no CAP_SYS_PTRACE: the front end sends its view as descriptors
    assert caps == {"CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER"}
    for key, value in (("NoNewPrivileges", "yes"), ("RestrictAddressFamilies", "AF_UNIX"),
                       ("RestrictNamespaces", "yes"), ("MemoryDenyWriteExecute", "yes"),
                       ("SystemCallArchitectures", "native"), ("LockPersonality", "yes"),
                       ("RestrictRealtime", "yes"), ("RestrictSUIDSGID", "yes"),
                       ("DevicePolicy", "closed")):
        assert unit[key] == [value], key


def test_security_rating() -> None:
    code, out = analyze(SERVICE_UNIT.name, "security", "--offline=true")
    m = re.search(r"Overall exposure level for enforcer-shimd.service: ([0-9.]+)", out)
    assert code == 0 and m, out
    # A root service that must rewrite files anywhere and share its clients'
    # namespaces cannot get far down: 5.1 (MEDIUM) with the settings above,
    # 9.6 (UNSAFE) without them. The bound keeps it from sliding back.
    assert float(m.group(1)) < 6.0, out


# -- install-node.sh ---------------------------------------------------------------


def install(root: Path, *extra: str) -> tuple[int, str]:
    r = run(["sh", str(DEPLOY / "containerd" / "install-node.sh"), "--root", str(root),
             "--python", sys.executable, "--no-plans", "--config-version", "2", *extra],
            timeout=300)
    return r.returncode, r.stderr


def test_install_node_installs_the_units_enabled_and_the_commands() -> None:
    with temp_dir("deploy-node-shimd-") as root:
        (root / "etc" / "containerd").mkdir(parents=True)
        for attempt in (1, 2):  # safe to run again
            code, err = install(root)
            assert code == 0, err
            units = root / "etc" / "systemd" / "system"
            for unit in (SOCKET_UNIT, SERVICE_UNIT):
                installed = units / unit.name
                assert installed.read_text() == unit.read_text()
                assert installed.stat().st_mode & 0o777 == 0o644
            # Enabled the way `systemctl enable` does it, as a file.
            wants = units / "sockets.target.wants" / SOCKET_UNIT.name
            assert os.readlink(wants) == f"/etc/systemd/system/{SOCKET_UNIT.name}"
            bin_dir = root / BIN.lstrip("/")
            # The front end the wrappers and daemon.json name, compiled...
            assert (bin_dir / "enforcer-runc").read_bytes()[:4] == b"\x7fELF"
            # ...the Python shim it looks for next to itself, and the server
            # the unit starts.
            for name in ("enforcer", "enforcer-runc-py", "enforcer-shimd"):
                assert os.access(bin_dir / name, os.X_OK), name
            r = run([str(bin_dir / "enforcer-shimd"), "--help"])
            assert r.returncode == 0 and "--workers" in r.stdout, r.stderr
            wrapper = (bin_dir / "enforcer-runc-default").read_text()
            assert f"exec {BIN}/enforcer-runc --policy default" in wrapper


def test_install_node_needs_an_interpreter_with_enforcer() -> None:
    with temp_dir("deploy-node-shimd-") as root:
        (root / "etc" / "containerd").mkdir(parents=True)
        r = run(["sh", str(DEPLOY / "containerd" / "install-node.sh"), "--root", str(root),
                 "--python", str(root / "no-python"), "--no-plans", "--config-version", "2"])
        assert r.returncode == 1, r.stderr
        assert r.stderr.strip().splitlines() == [
            (f"install-node.sh: {root}/no-python cannot import enforcer: install the package "
             "first, or pass --python")]
        assert not (root / "usr").exists()
