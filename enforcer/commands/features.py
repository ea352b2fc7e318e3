"""enforcer features: what this host supports."""

from __future__ import annotations

import argparse

HELP = "what this host supports (seccomp, cgroups, Landlock, libseccomp)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="machine-readable output")


def main(args: argparse.Namespace) -> int:
    import json

    from enforcer import exitcodes
    from enforcer.policy.features import detect

    f = detect()
    if args.json:
        print(json.dumps(f.as_dict(), indent=2))
        return exitcodes.OK
    rows = [
        ("kernel", f"{f.kernel} ({f.arch})"),
        ("seccomp actions", " ".join(f.seccomp_actions) or "none"),
        ("cgroups", f.cgroup_mode + (f" (v2 at {f.cgroup_v2_path})" if f.cgroup_v2_path else "")),
        ("cgroup v1 controllers", " ".join(f.cgroup_v1_controllers) or "-"),
        ("cgroup v2 controllers", " ".join(f.cgroup_v2_controllers) or "-"),
        ("landlock", f"ABI {f.landlock_abi}" if f.landlock_abi else f"no ({f.landlock_detail})"),
        ("libseccomp", f"{f.libseccomp_version} (API level {f.libseccomp_api})" if f.libseccomp_version else "missing"),
    ]
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"{k:<{width}}  {v}")
    for note in f.notes:
        print(f"note: {note}")
    return exitcodes.OK
