"""`enforcer record`: learn a policy from what a workload does.

    enforcer record [--base POLICY] [--name NAME] [--default-action ACTION]
                    -o OUT.yaml -- CMD [ARGS...]
    enforcer record --merge A.yaml B.yaml [...] -o OUT.yaml

The first form runs CMD under the base policy's non-syscall rules with a
filter that logs every syscall and blocks none, and writes a policy that
extends the base and allows what CMD was seen to call (docs/record.md).
The second adds recordings up. Needs root (the kernel audit stream).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile

HELP = "learn a policy from what a workload does"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("-o", "--output", required=True, metavar="OUT.yaml",
                   help="where to write the learned policy")
    p.add_argument("--base", default="default",
                   help="policy whose capabilities, mounts, limits, user and namespaces the "
                        "workload runs under, and which the result extends (default: default)")
    p.add_argument("--name", help="name of the learned policy (default: from OUT's file name)")
    p.add_argument("--default-action", default=None, metavar="ACTION",
                   help="what the learned policy does with any other syscall "
                        "(default: errno EPERM, logged)")
    p.add_argument("--merge", nargs="+", metavar="REC.yaml",
                   help="merge these recordings (the union of what they allow) instead of "
                        "recording")
    p.add_argument("--rcvbuf", type=int, default=None, metavar="BYTES",
                   help="the audit socket's receive buffer (default 256 MiB): records that do "
                        "not fit while the reader is busy are lost, and then nothing is written")
    p.add_argument("--syscalls-only", action="store_true",
                   help="learn only the syscall list, as before (no audit rules: while a full "
                        "recording runs, every syscall on the host takes the kernel's slower "
                        "audit path); the rest is inherited from the base")
    p.add_argument("--timeout", type=float, default=None, metavar="SECONDS",
                   help="stop the workload with SIGTERM after this long")
    p.add_argument("argv", nargs="*", metavar="-- CMD [ARGS]", help="the workload to record")


def _check_action(text: str) -> str:
    """Validate an action the way a policy file would, before running anything."""
    from enforcer.errors import PolicyErrors
    from enforcer.policy.loader import load_policy
    from enforcer.record.recorder import RecordError

    with tempfile.TemporaryDirectory(prefix="enforcer-record-") as d:
        path = os.path.join(d, "action.yaml")
        with open(path, "w") as f:
            f.write(f"name: action-check\nsyscalls:\n  default: {text}\n")
        try:
            load_policy(path)
        except PolicyErrors as e:
            raise RecordError(f"--default-action {text!r}: {e.errors[0].message}") from None
    return text


def _write_checked(text: str, out: str) -> int:
    """Write `text` to `out` only if it loads and compiles; returns the
    number of syscalls the written policy allows. It is checked in a
    private directory (its `extends` is a name or an absolute path, so it
    loads from anywhere) and then written like any command's result: a
    regular file atomically, a device or FIFO in place, `-` to stdout."""
    from enforcer.commands._output import write_output
    from enforcer.compile import compile_policy
    from enforcer.errors import EnforcerError, PolicyErrors
    from enforcer.policy.loader import load_policy
    from enforcer.record.recorder import RecordError

    with tempfile.TemporaryDirectory(prefix="enforcer-record-") as d:
        path = os.path.join(d, "learned.yaml")
        with open(path, "w") as f:
            f.write(text)
        try:
            policy = load_policy(path)
            compile_policy(policy)
        except PolicyErrors as e:
            raise RecordError("the learned policy does not load (a bug in enforcer record): "
                              + "; ".join(str(x) for x in e.errors[:3])) from None
        except EnforcerError as e:
            raise RecordError(f"the learned policy does not compile: {e}") from None
    write_output(text.encode(), out)
    return len({r.syscall for r in policy.syscalls.rules if not r.action.blocks})


def main(args: argparse.Namespace) -> int:
    from enforcer import exitcodes
    from enforcer.record.recorder import RecordError

    default_action = _check_action(args.default_action) if args.default_action else None
    if args.name is not None:
        from enforcer.policy.names import NAME_RULE, is_policy_name

        if not is_policy_name(args.name):
            raise RecordError(f"--name {args.name!r}: use {NAME_RULE}")
    if args.merge:
        if args.argv:
            raise RecordError("--merge takes recordings, not a command")
        return _merge(args, default_action)
    if not args.argv:
        print("enforcer record: no command given (put it after --)", file=sys.stderr)
        return exitcodes.USAGE
    return _record(args, default_action or "errno EPERM")


def _record(args: argparse.Namespace, default_action: str) -> int:
    from enforcer import exitcodes
    from enforcer.policy.loader import (_looks_like_path, extends_spec_for, load_policy,
                                        resolve_policy_source)
    from enforcer.record.learn import learn, target_arches
    from enforcer.record.recorder import APPLY_EXIT_CODES, RecordError, command_text, record_run
    from enforcer.record.render import Provenance, policy_name_for, render

    base = load_policy(args.base)
    base_spec = args.base
    if _looks_like_path(base_spec):
        # A name or an absolute path: the learned policy loads wherever it is copied.
        base_spec = extends_spec_for(resolve_policy_source(args.base))
    if args.rcvbuf is not None and args.rcvbuf <= 0:
        raise RecordError(f"--rcvbuf {args.rcvbuf}: must be a positive number of bytes")
    result = record_run(base, list(args.argv), timeout=args.timeout, rcvbuf=args.rcvbuf,
                        learn_files=not args.syscalls_only)
    counts, arches, unnamed = result.by_name()
    if result.exit_code in APPLY_EXIT_CODES and not counts:
        raise RecordError(f"the workload did not run (`enforcer run` exit status "
                          f"{result.exit_code}); nothing was recorded")
    if not counts:
        raise RecordError(f"no audit records of the workload arrived (`enforcer run` exit status "
                          f"{result.exit_code}); nothing to learn from")
    learned = learn(counts, base)
    for number, seen in sorted(unnamed.items()):
        # Newer than libseccomp: no name to allow it by. Under the learned
        # policy it gets the base's `unknown` action (ENOSYS by default), to
        # which programs react by falling back to an older call.
        learned.left_out[number] = (seen, "libseccomp has no name for it; it gets the base's "
                                       f"`unknown` action ({base.syscalls.unknown_action})")
    from enforcer.record.learn_access import learn_rest, narrow_syscalls, rest_facts

    rest = None
    if not args.syscalls_only:
        notes = narrow_syscalls(learned, result.access, load_policy("restricted"))
        rest = learn_rest(result.access, counts, result.peaks, base, result.pids)
        rest.notes[:0] = notes
    run_info = {"when": result.when, "host_arch": result.host_arch,
                "command": command_text(result.command), "records": result.records,
                "processes": result.processes, "exit_status": result.exit_code}
    prov = Provenance(base=base_spec, host_arch=result.host_arch,
                      arches_seen=tuple(sorted(arches)), default_action=default_action,
                      records=result.records, runs=[run_info],
                      rest=rest_facts(rest) if rest is not None else None)
    name = args.name or policy_name_for(args.output)
    text = render(learned, prov, name=name, arches=target_arches(base), when=result.when,
                  rest=rest, base=base)
    allowed = _write_checked(text, args.output)
    err = sys.stderr
    print(f"enforcer record: {result.records} audit records from {result.processes} process(es), "
          f"{len(counts)} distinct syscalls; workload exit status {result.exit_code}", file=err)
    for line in result.notes:
        print(f"enforcer record: note: {line}", file=err)
    for line in result.describe_other_actions():
        print(f"enforcer record: note: {line}", file=err)
    for n, (seen, why) in sorted(learned.left_out.items()):
        print(f"enforcer record: left out {n} (seen {seen}): {why}", file=err)
    if rest is not None:
        for line in rest.notes:
            print(f"enforcer record: note: {line}", file=err)
        g = rest.grants
        print(f"enforcer record: learned {len(g.read)} read, {len(g.write)} write and "
              f"{len(g.execute)} execute grant(s), ports bind {g.bind or 'none'} connect "
              f"{g.connect or 'none'}; "
              + ("a dynamic user" if rest.dynamic_user else
                 f"root with {rest.capabilities}" if rest.capabilities is not None else
                 "the base's user"), file=err)
    print(f"enforcer record: wrote {args.output} (policy {name!r}, allows {allowed} syscalls, "
          f"extends {base_spec})", file=err)
    return exitcodes.OK


def _merge(args: argparse.Namespace, default_action: str | None) -> int:
    import time

    from enforcer import exitcodes
    from enforcer.policy.loader import load_policy, resolve_extends
    from enforcer.record.learn import target_arches
    from enforcer.record.merge import merge
    from enforcer.record.render import policy_name_for, render

    learned, prov = merge(list(args.merge), default_action)
    base = load_policy(resolve_extends(prov.base, os.path.abspath(args.output)))
    name = args.name or policy_name_for(args.output)
    when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    rest = None
    if prov.merged_rests:
        from enforcer.record.learn_access import merge_rest, rest_facts

        rest = merge_rest(prov.merged_rests, base)
        prov.rest = rest_facts(rest)
    else:
        print("enforcer record: note: not every recording learned files, ports and limits; "
              "the merged policy has only the syscall list", file=sys.stderr)
    text = render(learned, prov, name=name, arches=target_arches(base), when=when, rest=rest,
                  base=base)
    allowed = _write_checked(text, args.output)
    print(f"enforcer record: merged {len(args.merge)} recordings into {args.output} "
          f"(allows {allowed} syscalls)", file=sys.stderr)
    return exitcodes.OK
