"""`enforcer export --format FORMAT FILE|NAME [-o OUT]`

Formats:
  oci         a config.json patch (JSON): linux.seccomp, capabilities, paths,
              mounts, resources, rlimits, no_new_privileges, user
  docker      a seccomp profile (JSON) for `docker run --security-opt
              seccomp=FILE`; the matching `docker run` flags go to stdout
              when -o is given, else to stderr after the profile
  kubernetes  YAML: a Pod (securityContext, resources), a Security Profiles
              Operator SeccompProfile and a ConfigMap with the Localhost
              profile; with -o OUT.yaml the profile JSON is also written
              as OUT.seccomp.json
  systemd     a unit drop-in ([Service] section)
  bpf, pfc    the compiled seccomp filter: raw struct sock_filter[] bytes,
              or libseccomp's readable pseudo code

Whatever a format cannot express is said on stderr, one line each
("export docker: cannot express ...; ..."); nothing is dropped silently.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from enforcer import exitcodes
from enforcer.commands._output import (is_regular_output, to_stdout, write_output,
                                       write_seccomp_export)

HELP = "export a policy as OCI, Docker, Kubernetes, systemd, bpf or pfc"
FORMATS = ("oci", "docker", "kubernetes", "systemd", "bpf", "pfc")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("policy", metavar="FILE|NAME", help="a policy file or a shipped policy's name")
    p.add_argument("--format", "-f", choices=FORMATS, required=True, help="what to write")
    p.add_argument("-o", "--output", metavar="OUT", help="write to OUT instead of stdout")
    p.add_argument("--mode", choices=("enforce", "audit"),
                   help="export in this mode instead of the policy's own")
    p.add_argument("--seccomp-only", action="store_true",
                   help="oci: write only the linux.seccomp object")
    p.add_argument("--seccomp-flags", action="store_true",
                   help="oci/docker/kubernetes: write SECCOMP_FILTER_FLAG_LOG when the policy "
                        "logs denials (needs runc >= 1.2; older runc refuses any flags)")
    p.add_argument("--image", default=None, help="kubernetes: the container image of the Pod")
    p.add_argument("--namespace", default=None, help="kubernetes: metadata.namespace")


def _json(obj: object) -> bytes:
    return (json.dumps(obj, indent=2) + "\n").encode()


def _report(lines: list[str]) -> None:
    for line in lines:
        print(line, file=sys.stderr)


def main(args: argparse.Namespace) -> int:
    from enforcer.planstore import resolve_spec
    from enforcer.policy.loader import load_policy

    policy = load_policy(resolve_spec(args.policy), mode=args.mode)
    if not to_stdout(args.output) and os.path.isdir(args.output):
        print(f"enforcer export: -o {args.output} is a directory; give a file name",
              file=sys.stderr)
        return exitcodes.USAGE

    if args.format in ("bpf", "pfc"):
        return write_seccomp_export("export", policy, args.format, args.mode, args.output)

    # The Plan resolves user names and the capability sets the exports print.
    from enforcer.compile import compile_policy

    plan = compile_policy(policy)
    if args.format == "oci":
        from enforcer.emit.oci import oci_patch, oci_seccomp_checked

        if args.seccomp_only:
            out, lines = oci_seccomp_checked(policy, with_flags=args.seccomp_flags)
        else:
            out, lines = oci_patch(policy, plan, with_flags=args.seccomp_flags)
        _report(lines)
        write_output(_json(out), args.output)
    elif args.format == "docker":
        from enforcer.emit.docker import docker_export

        docker, lines = docker_export(policy, plan, with_flags=args.seccomp_flags)
        _report(lines)
        write_output(_json(docker.seccomp), args.output)
        if not to_stdout(args.output):
            print(docker.command_line(os.path.abspath(args.output)))
        else:
            print("docker run flags: " + docker.command_line("PROFILE.json"), file=sys.stderr)
    elif args.format == "kubernetes":
        from enforcer.emit.kubernetes import PLACEHOLDER_IMAGE, kubernetes_export

        kube, lines = kubernetes_export(policy, plan, image=args.image or PLACEHOLDER_IMAGE,
                                        namespace=args.namespace,
                                        with_flags=args.seccomp_flags)
        _report(lines)
        write_output(kube.to_yaml().encode(), args.output)
        if not to_stdout(args.output) and not is_regular_output(args.output):
            # A device or FIFO: there is no "beside it" to put the profile.
            print(f"enforcer export: -o {args.output} is not a regular file: the seccomp "
                  "profile for Localhost is not written (give -o FILE to get it)", file=sys.stderr)
        elif not to_stdout(args.output):
            # OUT's name with .seccomp.json: never a file the user did not name.
            stem = os.path.splitext(os.path.abspath(args.output))[0]
            profile = f"{stem}.seccomp.json"
            write_output(_json(kube.profile_json), profile)
            print(f"enforcer export: seccomp profile for Localhost written to {profile}; "
                  f"install it on each node as <kubelet root>/seccomp/profiles/"
                  f"{kube.profile_filename}", file=sys.stderr)
    else:
        from enforcer.emit.systemd import systemd_export

        text, lines = systemd_export(policy, plan)
        _report(lines)
        write_output(text.encode(), args.output)
    return exitcodes.OK
