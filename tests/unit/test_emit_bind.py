"""`filesystem.bind` in every export and in explain, through the real CLI."""

from __future__ import annotations

import json
from pathlib import Path

from tests.policy_helpers import run_cli, write_policy

POLICY = ("version: 1\nname: binds\nextends: restricted\nfilesystem:\n"
          "  tmpfs_remove: [/dev/shm]\n"
          "  bind:\n"
          "    - {source: /srv/conf, target: /tmp/app/conf, read_only: true}\n"
          "    - {source: /srv/data, target: /data}\n")


def test_bind_in_exports_and_explain(tmp_path: Path) -> None:
    path = str(write_policy(tmp_path, "b.yaml", POLICY))
    oci = run_cli("export", "-f", "oci", path)
    assert oci.returncode == 0, oci.stderr
    mounts = json.loads(oci.stdout)["mounts"]
    # Shallow first: the bind inside /tmp comes after the tmpfs on /tmp.
    assert [(m["destination"], m["type"]) for m in mounts] == [
        ("/tmp", "tmpfs"), ("/data", "bind"), ("/tmp/app/conf", "bind")]
    assert mounts[2]["source"] == "/srv/conf" and mounts[2]["options"] == ["rbind", "ro"]
    assert mounts[1]["options"] == ["rbind", "rw"]
    docker = run_cli("export", "-f", "docker", path)
    assert ("--mount type=bind,source=/srv/conf,target=/tmp/app/conf,readonly --mount "
            "type=bind,source=/srv/data,target=/data") in docker.stdout + docker.stderr
    systemd = run_cli("export", "-f", "systemd", path)
    assert "BindPaths=/srv/data:/data:rbind\n" in systemd.stdout
    assert "BindReadOnlyPaths=/srv/conf:/tmp/app/conf:rbind\n" in systemd.stdout
    k8s = run_cli("export", "-f", "kubernetes", path)
    assert ("export kubernetes: cannot express bind /srv/data -> /data; a host path in a pod is "
            "a hostPath volume") in k8s.stderr
    explain = run_cli("explain", path)
    rows = [" ".join(line.split()[:3]) for line in explain.stdout.splitlines()]
    assert "filesystem.bind[/tmp/app/conf] /srv/conf (read-only)" in rows
    assert "filesystem.tmpfs_remove[/dev/shm] inherited tmpfs" in rows
