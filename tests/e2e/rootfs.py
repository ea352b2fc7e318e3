"""Build a minimal busybox root filesystem for runc and Docker tests.

    build_busybox_rootfs(path) -> path      static busybox + applet symlinks
    runc_spec_bundle(bundle, rootfs_src)    `runc spec` in a bundle dir
    docker_import(docker, rootfs, name)     `tar -C rootfs -c . | docker import - NAME`

    oci_archive(rootfs, path, name, ...)     an OCI image layout tarball, for
                                            `ctr images import`

Shared by the emit tests (tests/e2e/test_emit_*.py) and anyone else who
needs a container image without a registry.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile
from typing import Any, Callable

BUSYBOX = shutil.which("busybox") or "/usr/bin/busybox"
RUNC = shutil.which("runc") or "/usr/sbin/runc"


def busybox_is_static() -> bool:
    try:
        out = subprocess.run(["file", "-L", BUSYBOX], capture_output=True, text=True).stdout
    except OSError:
        # No file(1): a static binary has no PT_INTERP; check the ELF header crudely.
        with open(BUSYBOX, "rb") as f:
            return b"ld-linux" not in f.read(1 << 16)
    return "statically linked" in out or "static-pie" in out


def build_busybox_rootfs(rootfs: str, extra_files: dict[str, str] | None = None) -> str:
    """Static busybox, one symlink per applet, /etc/passwd and /etc/group."""
    for d in ("bin", "proc", "sys", "dev", "tmp", "etc", "root", "var/lib/app"):
        os.makedirs(os.path.join(rootfs, d), exist_ok=True)
    os.chmod(os.path.join(rootfs, "tmp"), 0o1777)
    shutil.copy2(BUSYBOX, os.path.join(rootfs, "bin", "busybox"))
    applets = subprocess.run([BUSYBOX, "--list"], capture_output=True, text=True,
                             check=True).stdout.split()
    for applet in applets:
        link = os.path.join(rootfs, "bin", applet)
        if not os.path.lexists(link):
            os.symlink("busybox", link)
    with open(os.path.join(rootfs, "etc", "passwd"), "w") as f:
        f.write("root:x:0:0:root:/root:/bin/sh\n"
                "app:x:1000:1000:app:/tmp:/bin/sh\n"
                "nobody:x:65534:65534:nobody:/:/bin/false\n")
    with open(os.path.join(rootfs, "etc", "group"), "w") as f:
        f.write("root:x:0:\napp:x:1000:\nnogroup:x:65534:\n")
    for rel, text in (extra_files or {}).items():
        path = os.path.join(rootfs, rel.lstrip("/"))
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write(text)
    return rootfs


def runc_spec_bundle(bundle: str, rootfs_src: str, args: list[str],
                     patch: Callable[[dict[str, Any]], dict[str, Any]] | None = None) -> str:
    """A bundle whose rootfs is a copy of `rootfs_src`, config from `runc spec`.

    A copy, not a symlink: a read-only root or tmpfs mounts must not touch
    the shared source tree.
    """
    os.makedirs(bundle, exist_ok=True)
    shutil.copytree(rootfs_src, os.path.join(bundle, "rootfs"), symlinks=True)
    subprocess.run([RUNC, "spec"], cwd=bundle, check=True)
    path = os.path.join(bundle, "config.json")
    with open(path) as f:
        config = json.load(f)
    config["process"]["terminal"] = False
    config["process"]["args"] = args
    config["root"]["path"] = "rootfs"
    if patch is not None:
        config = patch(config)
    with open(path, "w") as f:
        json.dump(config, f, indent=2)
    return bundle


def docker_import(docker: Callable[..., subprocess.CompletedProcess[str]], rootfs: str,
                  name: str) -> str:
    """Make an image from a directory: `tar -C rootfs -c . | docker import - NAME`."""
    tar = subprocess.Popen(["tar", "-C", rootfs, "-c", "."], stdout=subprocess.PIPE)
    try:
        result = docker("import", "-", name, stdin=tar.stdout)
    finally:
        assert tar.stdout is not None
        tar.stdout.close()
        tar.wait()
    if result.returncode != 0:
        raise RuntimeError(f"docker import failed: {result.stderr.strip()}")
    return name


def _blob(layout: tarfile.TarFile, data: bytes, media_type: str) -> dict[str, Any]:
    """Add a content-addressed blob to an OCI layout; return its descriptor."""
    digest = hashlib.sha256(data).hexdigest()
    info = tarfile.TarInfo(f"blobs/sha256/{digest}")
    info.size, info.mode = len(data), 0o644
    layout.addfile(info, io.BytesIO(data))
    return {"mediaType": media_type, "digest": f"sha256:{digest}", "size": len(data)}


def oci_archive(rootfs: str, path: str, name: str, entrypoint: list[str] | None = None,
                cmd: list[str] | None = None, architecture: str = "amd64") -> str:
    """An OCI image layout, as a tar file, holding one image: `rootfs` as its
    only (uncompressed) layer, named `name` the way `ctr images import`
    reads it (the io.containerd.image.name annotation)."""
    layer_buffer = io.BytesIO()
    with tarfile.open(fileobj=layer_buffer, mode="w") as layer:
        layer.add(rootfs, arcname=".")
    layer_bytes = layer_buffer.getvalue()
    config = {"architecture": architecture, "os": "linux",
              "config": {"Entrypoint": entrypoint, "Cmd": cmd,
                         "Env": ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"]},
              "rootfs": {"type": "layers",
                         "diff_ids": [f"sha256:{hashlib.sha256(layer_bytes).hexdigest()}"]}}
    with tarfile.open(path, "w") as layout:
        manifest = {
            "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": _blob(layout, json.dumps(config).encode(),
                            "application/vnd.oci.image.config.v1+json"),
            "layers": [_blob(layout, layer_bytes, "application/vnd.oci.image.layer.v1.tar")],
        }
        entry = _blob(layout, json.dumps(manifest).encode(), manifest["mediaType"])
        entry["annotations"] = {"io.containerd.image.name": name,
                                "org.opencontainers.image.ref.name": name.rsplit(":", 1)[-1]}
        for member, data in (("oci-layout", {"imageLayoutVersion": "1.0.0"}),
                             ("index.json", {"schemaVersion": 2, "manifests": [entry]})):
            raw = json.dumps(data).encode()
            info = tarfile.TarInfo(member)
            info.size, info.mode = len(raw), 0o644
            layout.addfile(info, io.BytesIO(raw))
    return path
