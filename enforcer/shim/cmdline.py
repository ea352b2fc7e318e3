"""Split runc's command line without changing it.

The shim must pass every runc argument through byte for byte, so this is
not an option parser: it only finds what the shim needs (the command, the
bundle, the container id, the pid file, runc's --root) and removes the
shim's own flags, which may appear only before the command (that is where
Docker's `runtimeArgs` and Podman's `--runtime-flag` put them).

runc uses urfave/cli: flags are `-name`, `--name`, `-name=value` or
`--name value`; command flags may also follow the container id.
"""

from __future__ import annotations

from enforcer.shim.errors import ShimError

# What the shim does with each runc command (runc 1.1's `runc --help`; the
# table in docs/shim.md, "Which runc commands", says why for each):
#   merge   the policy is merged into what the command starts (a container,
#           or a process in one)
#   check   checked against the policy, then passed to runc unchanged
#   pass    passed through: the command starts nothing
#   refuse  refused: it would start something the policy cannot be merged into
# A command not in this table is refused: a runc that grew a new way of
# starting a container must not get past the shim unnoticed.
COMMANDS = {
    "create": "merge", "run": "merge", "exec": "merge",
    "update": "check",
    "checkpoint": "pass", "delete": "pass", "events": "pass", "features": "pass",
    "kill": "pass", "list": "pass", "pause": "pass", "ps": "pass", "resume": "pass",
    "spec": "pass", "start": "pass", "state": "pass", "help": "pass", "h": "pass",
    "restore": "refuse",
}

# runc's global flags that take a value (runc 1.1: main.go).
GLOBAL_VALUE_FLAGS = frozenset({"root", "log", "log-format", "criu", "rootless"})
# Command flags that take a value, for the commands the shim looks into.
COMMAND_VALUE_FLAGS = frozenset({"bundle", "b", "console-socket", "pid-file", "preserve-fds"})
EXEC_VALUE_FLAGS = frozenset({"process", "p", "console-socket", "cwd", "env", "e", "user", "u",
                              "additional-gids", "g", "process-label", "apparmor", "cap", "c",
                              "preserve-fds", "pid-file", "cgroup"})
UPDATE_VALUE_FLAGS = frozenset({"resources", "r", "blkio-weight", "cpu-period", "cpu-quota",
                                "cpu-share", "cpu-rt-period", "cpu-rt-runtime", "cpuset-cpus",
                                "cpuset-mems", "kernel-memory", "kernel-memory-tcp", "memory",
                                "memory-reservation", "memory-swap", "pids-limit",
                                "l3-cache-schema", "mem-bw-schema"})
# Short flag -> the long name the shim looks up.
_LONG = {"b": "bundle", "p": "process", "u": "user", "c": "cap", "e": "env",
         "g": "additional-gids", "r": "resources"}
# The shim's own flags (always take a value).
SHIM_FLAGS = frozenset({"policy", "runc", "config"})


def _flag_name(arg: str) -> tuple[str, str | None] | None:
    """("name", value-or-None) for a flag argument, None for a positional."""
    if len(arg) < 2 or not arg.startswith("-") or arg == "--":
        return None
    name = arg.lstrip("-")
    if "=" in name:
        name, value = name.split("=", 1)
        return name, value
    return name, None


class RuncCommandLine:
    """runc's arguments, split into the parts the shim cares about."""

    __slots__ = ("runc_args", "command", "command_index", "shim", "global_flags")

    def __init__(self) -> None:
        self.runc_args: list[str] = []  # what runc gets: everything but the shim's flags
        self.command: str | None = None
        self.command_index = -1  # index of the command in runc_args
        self.shim: dict[str, str] = {}  # the shim's own flags
        self.global_flags: dict[str, str] = {}  # runc globals with values (--root ...)

    @property
    def global_args(self) -> list[str]:
        """runc's global arguments as given, for running `runc state` etc."""
        end = self.command_index if self.command_index >= 0 else len(self.runc_args)
        return self.runc_args[:end]

    def command_flags_and_positionals(self) -> tuple[dict[str, str], list[str]]:
        """The command's value flags ({"bundle": ...}) and its positional args.

        A flag given more than once (exec's --cap, --env) keeps its last value
        here; `repeated` lists all of them.
        """
        flags, positionals, _ = self._scan()
        return flags, positionals

    def repeated(self, name: str) -> list[str]:
        return self._scan()[2].get(name, [])

    def _scan(self) -> tuple[dict[str, str], list[str], dict[str, list[str]]]:
        value_flags = {"exec": EXEC_VALUE_FLAGS, "update": UPDATE_VALUE_FLAGS}.get(
            self.command or "", COMMAND_VALUE_FLAGS)
        every: dict[str, list[str]] = {}
        flags: dict[str, str] = {}
        positionals: list[str] = []
        if self.command_index < 0:
            return flags, positionals, every
        args = self.runc_args[self.command_index + 1:]
        i = 0
        while i < len(args):
            arg = args[i]
            if arg == "--" or (positionals and self.command == "exec"):
                # exec: after the container id comes the process's own argv
                positionals.extend(args[i + 1:] if arg == "--" else args[i:])
                break
            parsed = _flag_name(arg)
            if parsed is None:
                positionals.append(arg)
            else:
                name, value = parsed
                if name in value_flags and value is None:
                    i += 1
                    value = args[i] if i < len(args) else ""
                if value is not None:
                    long_name = _LONG.get(name, name)
                    flags[long_name] = value
                    every.setdefault(long_name, []).append(value)
            i += 1
        return flags, positionals, every

    @property
    def container_id(self) -> str | None:
        _, positionals = self.command_flags_and_positionals()
        return positionals[0] if positionals else None


def parse(argv: list[str]) -> RuncCommandLine:
    line = RuncCommandLine()
    i = 0
    while i < len(argv):
        arg = argv[i]
        parsed = _flag_name(arg)
        if parsed is None:
            # The first positional is runc's command; the rest is its business.
            line.command = arg
            line.command_index = len(line.runc_args)
            line.runc_args.extend(argv[i:])
            break
        name, value = parsed
        if name in SHIM_FLAGS:
            if value is None:
                i += 1
                if i >= len(argv):
                    raise ShimError(f"--{name} needs a value")
                value = argv[i]
            if not value:
                raise ShimError(f"--{name} needs a non-empty value")
            line.shim[name] = value
            i += 1
            continue
        line.runc_args.append(arg)
        if name in GLOBAL_VALUE_FLAGS:
            if value is None and i + 1 < len(argv):
                i += 1
                value = argv[i]
                line.runc_args.append(value)
            line.global_flags[name] = value or ""
        i += 1
    return line
