"""The OCI runtime-tools validation suite: build it, run it against a runtime,
read its TAP output and compare two runtimes.

    build_suite()                  the suite's programs, built once per tarball
                                   and Go version (cached, see suite_cache_dir)
    prepare_workdir(suite, dir)    the directory the programs run in: the
                                   `runtimetest` binary and a rootfs tarball
                                   built here from busybox-static
    private_mount_namespace()      where the programs and the runtimes run
    run_program(...)               one program -> ProgramResult
    compare(runc, shim)            what passed under runc and not under the shim

The suite (opencontainers/runtime-tools, the commit Debian packages) lives in
shared/third_party with its Go dependencies vendored, so it builds offline.
Each program creates bundles in $TMPDIR, drives the runtime named by
$RUNTIME through create/start/state/kill/delete, and prints TAP.

Two things about the programs a caller must contain:

* Some leave container mounts behind (linux_rootfs_propagation with
  `shared`: runc's mounts under the bundle propagate back to the caller),
  and each program deletes its bundles with Go's os.RemoveAll, which
  crosses mounts. So the programs run in a private mount namespace of
  their own (held by a `sleep` process): nothing they mount reaches the
  host's namespace, and it all goes when the namespace does. The scratch
  tree is then removed with session.remove_tree (unmount first, one file
  system).
* They use fixed cgroup paths (/cgrouptest, and testdir/... relative to
  the caller's own cgroup): the caller holds session.host_lock and runs
  them inside a session cgroup (session.make_cgroup), removed afterwards.
"""

from __future__ import annotations

import collections
import contextlib
import fcntl
import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

from tests import session
from tests.e2e.rootfs import build_busybox_rootfs
from tests.paths import RUNTIME_TOOLS_TARBALL

GO = shutil.which("go")
MAKE = shutil.which("make")
# A program drives a few containers with waits of up to 10 s each (kill,
# delete, pidfile); none needs minutes unless the runtime hangs.
PROGRAM_TIMEOUT = 300


# -- building -------------------------------------------------------------------


@dataclass(frozen=True)
class Suite:
    directory: Path  # runtimetest and one <program>.t per validation
    programs: tuple[str, ...]
    goarch: str

    def program(self, name: str) -> Path:
        return self.directory / f"{name}.t"


def suite_cache_dir() -> Path:
    """Where built suites are kept between test sessions ($XDG_CACHE_HOME)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "enforcer-tests"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _go_env(*names: str) -> list[str]:
    assert GO is not None
    out = subprocess.run([GO, "env", *names], capture_output=True, text=True, check=True,
                         timeout=60).stdout
    return out.splitlines()


def build_suite(tarball: Path = RUNTIME_TOOLS_TARBALL, cache: Path | None = None) -> Suite:
    """The built suite for `tarball`, from the cache or built now (~1 min).

    Keyed by the tarball's hash and the Go version, so a new suite or
    toolchain builds afresh. Built offline from the vendored dependencies
    (GOFLAGS=-mod=vendor GOPROXY=off), with Go's build cache in the scratch
    tree (removed afterwards). A lock keeps two sessions from building it
    at once."""
    goversion, goarch = _go_env("GOVERSION", "GOARCH")
    cache = cache or suite_cache_dir()
    key = f"runtime-tools-{_sha256(tarball)[:16]}-{goversion}-{goarch}"
    target = cache / key
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / f"{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (target / "programs.json").exists():
            _build_into(tarball, target)
    programs = tuple(json.loads((target / "programs.json").read_text()))
    return Suite(directory=target, programs=programs, goarch=goarch)


def _build_into(tarball: Path, target: Path) -> None:
    assert MAKE is not None
    scratch = session.mkdtemp("enf-rt-build-")
    try:
        subprocess.run(["tar", "-xzf", str(tarball), "-C", scratch], check=True, timeout=300)
        (source,) = [p for p in Path(scratch).iterdir() if (p / "Makefile").exists()]
        env = {**os.environ, "GOFLAGS": "-mod=vendor", "GOPROXY": "off",
               "GOCACHE": os.path.join(scratch, "gocache"),
               "GOPATH": os.path.join(scratch, "gopath"), "GO111MODULE": "on"}
        build = subprocess.run([MAKE, "runtimetest", "validation-executables"], cwd=source,
                               env=env, capture_output=True, text=True, timeout=1800)
        if build.returncode != 0:
            raise RuntimeError("building runtime-tools failed:\n" + build.stdout[-3000:]
                               + build.stderr[-3000:])
        staging = Path(f"{target}.tmp-{os.getpid()}")
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir()
        shutil.copy2(source / "runtimetest", staging / "runtimetest")
        programs = sorted(p.stem for p in source.glob("validation/*/*.t"))
        for name in programs:
            shutil.copy2(source / "validation" / name / f"{name}.t", staging / f"{name}.t")
        (staging / "programs.json").write_text(json.dumps(programs))
        os.rename(staging, target)
    finally:
        session.remove_tree(scratch)


# -- where the programs run --------------------------------------------------------


def prepare_workdir(suite: Suite, directory: Path) -> Path:
    """The programs' working directory: `runtimetest` (copied into each
    bundle) and rootfs-<goarch>.tar.gz (unpacked as each bundle), the latter
    a busybox-static root built here rather than the suite's prebuilt one."""
    directory.mkdir(parents=True, exist_ok=True)
    shutil.copy2(suite.directory / "runtimetest", directory / "runtimetest")
    rootfs = build_busybox_rootfs(str(directory / "rootfs-src"))
    subprocess.run(["tar", "-C", rootfs, "-czf", str(directory / f"rootfs-{suite.goarch}.tar.gz"),
                    "."], check=True, timeout=120)
    shutil.rmtree(rootfs)
    return directory


@contextlib.contextmanager
def private_mount_namespace() -> Iterator[Callable[[str], list[str]]]:
    """A mount namespace with private propagation, held by a `sleep`.

    Yields `enter(cwd)`: the command prefix that runs a program in it with
    that working directory (nsenter). Mounts made in it never reach the
    host's namespace and vanish with it, when the holder is killed."""
    holder = subprocess.Popen(["unshare", "--mount", "--propagation", "private",
                               "sleep", "infinity"], stdin=subprocess.DEVNULL)
    try:
        ours = os.readlink("/proc/self/ns/mnt")
        deadline = time.monotonic() + 10
        # unshare execs sleep once the namespace is set up
        while not (os.readlink(f"/proc/{holder.pid}/ns/mnt") != ours
                   and open(f"/proc/{holder.pid}/comm").read().strip() == "sleep"):
            assert holder.poll() is None, "unshare --mount failed"
            assert time.monotonic() < deadline, "unshare --mount did not start"
            time.sleep(0.02)

        def enter(cwd: str) -> list[str]:
            return ["nsenter", f"--mount=/proc/{holder.pid}/ns/mnt", f"--wd={cwd}", "--"]

        yield enter
    finally:
        holder.kill()
        holder.wait()


def runtime_wrapper(path: Path, command: list[str], env: dict[str, str] | None = None) -> str:
    """An executable that runs `command` with the caller's arguments: what
    $RUNTIME names (the programs look it up on PATH, so no arguments)."""
    lines = ["#!/bin/sh"]
    lines += [f"export {k}={shlex.quote(v)}" for k, v in (env or {}).items()]
    lines.append("exec " + " ".join(shlex.quote(c) for c in command) + ' "$@"')
    path.write_text("\n".join(lines) + "\n")
    path.chmod(0o755)
    return str(path)


# -- running and reading TAP -----------------------------------------------------------

TEST_LINE = re.compile(r"^(not ok|ok)\b(?:\s+\d+)?(?:\s+-)?\s*(.*?)\s*$")
PLAN_LINE = re.compile(r"^1\.\.(\d+)")
DIRECTIVE = re.compile(r"\s*#\s*(skip|todo)\b.*$", re.IGNORECASE)


@dataclass
class ProgramResult:
    program: str
    returncode: int | None  # None: killed after PROGRAM_TIMEOUT
    tap: str
    stderr: str
    seconds: float
    passed: collections.Counter[str] = field(default_factory=collections.Counter)
    failed: list[str] = field(default_factory=list)
    skipped: int = 0
    planned: int | None = None

    def __post_init__(self) -> None:
        for line in self.tap.splitlines():
            plan = PLAN_LINE.match(line)
            if plan:
                self.planned = int(plan.group(1))
                continue
            test = TEST_LINE.match(line)
            if not test:
                continue
            status, description = test.groups()
            directive = DIRECTIVE.search(description)
            if directive and directive.group(1).lower() == "skip":
                self.skipped += 1
            elif status == "ok":
                self.passed[DIRECTIVE.sub("", description)] += 1
            else:
                self.failed.append(DIRECTIVE.sub("", description))

    @property
    def verdict(self) -> str:
        """pass: exit 0, a plan, every planned assertion reported, none
        failed; skip: nothing but skips; fail: anything else."""
        if self.returncode is None:
            return "timeout"
        counted = sum(self.passed.values()) + len(self.failed) + self.skipped
        if self.returncode != 0 or self.failed or self.planned is None \
                or counted != self.planned or counted == 0:
            return "fail"
        return "pass" if self.passed else "skip"


def run_program(suite: Suite, program: str, runtime: str, workdir: Path, tmpdir: Path,
                logs: Path, enter: Callable[[str], list[str]],
                preexec: Callable[[], None] | None = None) -> ProgramResult:
    """One validation program against `runtime` (an executable path); its
    TAP output and stderr are kept in `logs` (program.tap, program.stderr)."""
    env = {**os.environ, "RUNTIME": runtime, "TMPDIR": str(tmpdir)}
    start = time.monotonic()
    logs.mkdir(parents=True, exist_ok=True)
    out_path, err_path = logs / f"{program}.tap", logs / f"{program}.stderr"
    with open(out_path, "w") as out, open(err_path, "w") as err:
        proc = subprocess.Popen([*enter(str(workdir)), str(suite.program(program))], env=env,
                                stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                preexec_fn=preexec, start_new_session=True)
        try:
            returncode: int | None = proc.wait(timeout=PROGRAM_TIMEOUT)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait()
            returncode = None
    result = ProgramResult(program, returncode, out_path.read_text(errors="replace"),
                           err_path.read_text(errors="replace"), time.monotonic() - start)
    return result


# -- comparing ------------------------------------------------------------------------


@dataclass(frozen=True)
class Difference:
    program: str
    verdicts: tuple[str, str]  # runc's, the shim's
    lost: tuple[str, ...]  # assertions that passed under runc and not under the shim

    def __str__(self) -> str:
        lost = "; ".join(self.lost[:5]) + (f"; ... ({len(self.lost)} in all)"
                                            if len(self.lost) > 5 else "")
        return f"{self.program}: runc {self.verdicts[0]}, shim {self.verdicts[1]}" + \
            (f"; passed under runc only: {lost}" if lost else "")


def compare(runc: ProgramResult, shim: ProgramResult) -> Difference | None:
    """What runc passes and the shim does not: the program's verdict, and
    each assertion (by its description: the numbering shifts when the
    merged config has more to check, e.g. the policy's masked paths)."""
    lost = tuple(sorted((runc.passed - shim.passed).elements()))
    regressed = runc.verdict == "pass" and shim.verdict != "pass"
    if not lost and not regressed:
        return None
    return Difference(runc.program, (runc.verdict, shim.verdict), lost)


def results_table(pairs: list[tuple[ProgramResult, ProgramResult]],
                  notes: dict[str, str]) -> str:
    """A markdown table: program, verdicts, assertions passed, the note."""
    rows = ["| program | runc | shim (`default`) | assertions passed runc / shim | difference |",
            "| --- | --- | --- | --- | --- |"]
    for runc, shim in pairs:
        rows.append(f"| {runc.program} | {runc.verdict} | {shim.verdict} | "
                    f"{sum(runc.passed.values())} / {sum(shim.passed.values())} | "
                    f"{notes.get(runc.program, '')} |")
    return "\n".join(rows)


def leftover_containers(runc: str, root: str) -> list[str]:
    out = subprocess.run([runc, "--root", root, "list", "-q"], capture_output=True, text=True,
                         timeout=30).stdout
    return out.split()
