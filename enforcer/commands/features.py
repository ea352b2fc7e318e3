"""enforcer features: what this host supports."""

from __future__ import annotations

import argparse

HELP = "what this host supports (seccomp, cgroups, Landlock, libseccomp, syscall table)"


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
        ("syscall table", f"enforcer's, up to kernel {f.syscall_table_kernel}"),
        (f"newer than libseccomp ({f.arch})",
         " ".join(f"{n}({nr})" for n, nr in f.newer_than_libseccomp.items()) or "none"),
    ]
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"{k:<{width}}  {v}")
    if f.newer_than_libseccomp:
        print(f"note: libseccomp {f.libseccomp_version} does not know the syscalls newer than it; "
              "policies name them all the same: enforcer compiles them by number from its table")
    for note in f.notes:
        print(f"note: {note}")
    return exitcodes.OK
