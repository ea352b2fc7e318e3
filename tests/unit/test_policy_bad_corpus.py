"""Every bad policy gives the expected exit code and a file:line message,
through the real CLI, and never a traceback."""

from __future__ import annotations

import random
import re
import tracemalloc
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from enforcer.errors import PolicyErrors
from enforcer.policy.loader import load_policy
from tests.policy_helpers import BAD_POLICIES, run_cli

ERROR_LINE = re.compile(r"^(?P<file>[^:]+):(?P<line>\d+):(?P<col>\d+): error: .+$")


def _corpus() -> list[tuple[str, int, str, str]]:
    rows = []
    for line in (BAD_POLICIES / "expected.txt").read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        name, code, where, text = (part.strip() for part in line.split("|", 3))
        rows.append((name, int(code), where, text))
    return rows


CORPUS = _corpus()


def test_corpus_is_complete() -> None:
    listed = {name for name, *_ in CORPUS}
    on_disk = {p.name for p in BAD_POLICIES.glob("*.yaml")}
    assert listed == on_disk, "every bad policy file needs a line in expected.txt and vice versa"
    assert len(CORPUS) >= 40


@pytest.fixture(scope="module")
def corpus_results() -> dict[str, tuple[int, str, str]]:
    def run(name: str) -> tuple[str, tuple[int, str, str]]:
        proc = run_cli("check", name, cwd=BAD_POLICIES)
        return name, (proc.returncode, proc.stdout, proc.stderr)

    with ThreadPoolExecutor(max_workers=4) as pool:
        return dict(pool.map(run, [name for name, *_ in CORPUS]))


@pytest.mark.parametrize("name,code,where,text", CORPUS, ids=[c[0] for c in CORPUS])
def test_bad_policy(corpus_results: dict[str, tuple[int, str, str]],
                    name: str, code: int, where: str, text: str) -> None:
    rc, out, err = corpus_results[name]
    assert "Traceback" not in out + err
    assert rc == code, err
    lines = err.strip().splitlines()
    assert lines, "an invalid policy must say why"
    for line in lines:
        assert ERROR_LINE.match(line), f"not a file:line:col error line: {line!r}"
    matching = [ln for ln in lines if ln.startswith(where + ":") and text in ln]
    assert matching, f"expected {where}: ...{text}... in:\n{err}"


def _check_generated(tmp_path: Path, name: str, data: bytes) -> tuple[int, str]:
    (tmp_path / name).write_bytes(data)
    proc = run_cli("check", name, cwd=tmp_path)
    assert "Traceback" not in proc.stdout + proc.stderr
    return proc.returncode, proc.stderr


def test_ten_megabyte_file_is_refused(tmp_path: Path) -> None:
    data = b"name: big\ndescription: " + b"x" * (10 * 1024 * 1024) + b"\n"
    rc, err = _check_generated(tmp_path, "big.yaml", data)
    assert rc == 1
    assert err.startswith(f"big.yaml:1:1: error: file is {len(data)} bytes; a policy may be at most")


def test_random_bytes(tmp_path: Path) -> None:
    rng = random.Random(1234)
    for i in range(5):
        data = bytes(rng.randrange(256) for _ in range(2000))
        rc, err = _check_generated(tmp_path, f"random{i}.yaml", data)
        assert rc == 1 and ERROR_LINE.match(err.splitlines()[0]), err


def test_deep_nesting_is_refused(tmp_path: Path) -> None:
    rc, err = _check_generated(tmp_path, "deep.yaml", b"name: deep\ndescription: " + b"[" * 100_000)
    assert rc == 1
    # libyaml stops at 1000 levels itself; either way one located line.
    assert "deep.yaml:2:" in err and ("nested more than 64 levels" in err or "nesting depth" in err)


def test_block_nesting_is_refused(tmp_path: Path) -> None:
    rc, err = _check_generated(tmp_path, "deep2.yaml", b"name: deep\ndescription:\n" + b"- " * 50_000 + b"x\n")
    assert rc == 1 and "nested more than 64 levels" in err


def test_missing_file_is_one_clear_line(tmp_path: Path) -> None:
    proc = run_cli("check", "no-such-file.yaml", cwd=tmp_path)
    assert proc.returncode == 1
    assert proc.stderr.strip() == "no-such-file.yaml: error: policy file no-such-file.yaml does not exist"


def test_usage_error_exits_2(tmp_path: Path) -> None:
    proc = run_cli("check", cwd=tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr


def test_several_files_report_each(tmp_path: Path) -> None:
    proc = run_cli("check", str(BAD_POLICIES / "tabs.yaml"), "default", str(BAD_POLICIES / "empty.yaml"))
    assert proc.returncode == 1
    assert "default: ok" in proc.stdout
    assert "tabs.yaml:3:1" in proc.stderr and "empty.yaml:1:1" in proc.stderr


@pytest.mark.parametrize("fanout,depth", [(10, 9), (1000, 2), (2, 40)])
def test_alias_bomb_is_cheap(tmp_path: Path, fanout: int, depth: int) -> None:
    """Refused without building the expansion: the memory it takes stays
    small. (No wall-clock bound: the suite must pass on a busy machine.)"""
    lines = ["name: bomb", "l0: &l0 [" + ", ".join(['"lol"'] * fanout) + "]"]
    for level in range(1, depth):
        lines.append(f"l{level}: &l{level} [" + ", ".join([f"*l{level - 1}"] * fanout) + "]")
    path = tmp_path / "bomb.yaml"
    path.write_text("\n".join(lines) + "\n")
    tracemalloc.start()
    with pytest.raises(PolicyErrors) as info:
        load_policy(str(path))
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert "alias bomb" in str(info.value)
    assert peak < 50 * 1024 * 1024, f"peak {peak / 1e6:.1f} MB"


def test_alias_bomb_through_cli_rss(tmp_path: Path) -> None:
    """Whole process, measured by the kernel: peak RSS of the child.

    The peak comes from VmHWM of the child's own address space: getrusage's
    ru_maxrss survives execve and would report the (large) pytest parent.
    """
    import subprocess
    import sys

    code = ("import sys\n"
            "from enforcer.cli import main\n"
            f"rc = main(['check', {str(BAD_POLICIES / 'alias-bomb.yaml')!r}])\n"
            "hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM:')][0]\n"
            "print(rc, int(hwm.split()[1]))\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    rc, maxrss_kb = (int(x) for x in proc.stdout.split())
    assert rc == 1 and "alias bomb" in proc.stderr
    assert maxrss_kb < 150 * 1024, f"max RSS {maxrss_kb} KiB"
