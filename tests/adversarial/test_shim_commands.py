"""Hole 4: every runc command is classified; none starts a container unmerged.

`runc restore` passed through the shim untouched, so a container could be
started from a checkpoint (its config.json and a process image) without its
policy; so could anything the shim did not know. Each runc command is now
merged, checked against the policy, passed through because it starts
nothing, or refused, and a command
the shim does not know is refused. The table in docs/shim.md says which is
which; a test checks that it covers every command of the installed runc and
agrees with the code.

runc here is the real one behind a recording wrapper, so "runc never got
the command" is observed, not assumed.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Iterator

import pytest

from tests import session
from tests.adversarial.shim_attack import HostState, ShimNode, busybox_rootfs, recording_runc, \
    runc_calls
from tests.shim_helpers import REPO, RUNC

pytestmark = [pytest.mark.root, pytest.mark.runc]


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ShimNode]:
    work = tmp_path_factory.mktemp("commands")
    log = work / "runc-calls"
    node = ShimNode(config={"runc": recording_runc(work / "runc", log)})
    node.runc_log = log  # type: ignore[attr-defined]
    try:
        yield node
    finally:
        node.close()


@pytest.fixture(params=["compiled", "python"])
def front_end(request: pytest.FixtureRequest, node: ShimNode) -> str:
    if request.param == "compiled":
        return node.front_end
    return str(Path(node.front_end).with_name("enforcer-runc-py"))


def _calls(node: ShimNode) -> list[str]:
    return [args for _, _, args in runc_calls(node.runc_log)]  # type: ignore[attr-defined]


@pytest.mark.parametrize("command", [
    ["restore", "--image-path", "{work}/checkpoint"],
    ["restore", "--detach", "--image-path", "{work}/checkpoint"],
    ["frobnicate"],            # a command this runc does not have
    ["Run"],                   # not runc's spelling
])
def test_a_command_that_could_start_a_container_unmerged_is_refused(
        node: ShimNode, front_end: str, tmp_path_factory: pytest.TempPathFactory,
        command: list[str]) -> None:
    work = tmp_path_factory.mktemp("restore")
    rootfs = busybox_rootfs(work)
    cid = session.unique("enf-adv-cmd-")
    bundle = node.bundle(cid, ["/bin/true"], rootfs)
    (work / "checkpoint").mkdir()
    before = (bundle / "config.json").read_bytes()
    host = HostState(node, [bundle / "config.json"])
    calls_before = _calls(node)
    args = [a.format(work=work) for a in command]
    r = node.shim(["--policy", "strict", "--root", str(node.runc_root), args[0], "--bundle",
                   str(bundle), *args[1:], cid], front_end=front_end)
    assert r.returncode == 125, (r.returncode, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("enforcer-runc: "), r.stderr
    assert f"'{args[0]}'" in lines[0], lines[0]
    assert _calls(node) == calls_before, "runc was started"
    assert (bundle / "config.json").read_bytes() == before
    assert cid not in node.containers()
    host.assert_unchanged()


@pytest.mark.parametrize("args", [["--version"], ["-v"], ["--help"], ["help"], ["h"],
                                  ["features"], ["list"], ["state", "nosuch"], []])
def test_commands_that_start_nothing_pass_through(node: ShimNode, front_end: str,
                                                  args: list[str]) -> None:
    plain = subprocess.run([RUNC, "--root", str(node.runc_root), *args], capture_output=True,
                           text=True, timeout=60)
    r = node.shim(["--root", str(node.runc_root), *args], front_end=front_end)
    assert (r.returncode, r.stdout) == (plain.returncode, plain.stdout), r.stderr
    assert _calls(node)[-1] == " ".join(["--root", str(node.runc_root), *args])


def _documented() -> dict[str, str]:
    """command -> class, from the table in docs/shim.md ("Which runc commands")."""
    text = (Path(REPO) / "docs" / "shim.md").read_text()
    section = text.split("## Which runc commands", 1)[1].split("\n## ", 1)[0]
    table = {}
    for row in re.findall(r"^\| (.+?) \| (merged|checked|passed through|refused) \|", section, re.M):
        for name in re.findall(r"`([a-z]+)`", row[0]):
            table[name] = row[1]
    return table


def test_every_runc_command_is_classified_in_the_docs_and_the_code() -> None:
    out = subprocess.run([RUNC, "--help"], capture_output=True, text=True, timeout=30).stdout
    commands = out.split("COMMANDS:", 1)[1].split("GLOBAL OPTIONS:", 1)[0]
    installed = set()
    for line in commands.splitlines():
        names = line.strip().split("  ", 1)[0]
        installed.update(n.strip() for n in names.split(",") if n.strip())
    assert installed >= {"create", "run", "restore", "exec", "update", "checkpoint"}
    from enforcer.shim.cmdline import COMMANDS

    documented = _documented()
    assert set(documented) == installed, (sorted(installed - set(documented)),
                                          sorted(set(documented) - installed))
    names = {"merged": "merge", "checked": "check", "passed through": "pass",
             "refused": "refuse"}
    assert {c: names[k] for c, k in documented.items()} == \
        {c: COMMANDS[c] for c in documented}
    assert set(COMMANDS) == installed, "the code knows a command runc does not have"
