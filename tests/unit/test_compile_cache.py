"""The Plan cache: content addressing, staleness, corrupt entries, and the
import-free fast path."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from enforcer import planstore
from enforcer.compile import cache, compile_policy
from enforcer.errors import PlanError, PolicyErrors
from enforcer.plan import PLAN_FORMAT, Plan

from tests.compile_helpers import rule, syscall_policy


def _sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


@pytest.fixture
def plan() -> Plan:
    return compile_policy(syscall_policy(rule("read"), rule("write"), name="cached"))


@pytest.fixture
def chain(tmp_path: Path) -> tuple[Path, Path]:
    parent = tmp_path / "base.yaml"
    child = tmp_path / "app.yaml"
    parent.write_text("name: base\nsyscalls: {default: errno EPERM, allow: [read]}\n")
    child.write_text("name: app\nextends: base.yaml\n")
    return parent, child


def _store(child: Path, sources: list[Path], plan: Plan, cache_dir: Path,
           mode: str | None = None) -> str:
    key = planstore.cache_key(str(child), child.read_bytes(), mode)
    entry = str(cache_dir / f"{key}.plan")
    planstore.write_entry(entry, [(str(s), _sha(s)) for s in sources], plan)
    return entry


def test_hit_returns_the_same_plan(chain: tuple[Path, Path], plan: Plan, tmp_path: Path) -> None:
    parent, child = chain
    _store(child, [parent, child], plan, tmp_path / "c")
    found, got = planstore.lookup(str(child), cache_dir=str(tmp_path / "c"))
    assert found.hit and got == plan


def test_any_parent_byte_change_is_a_miss(chain: tuple[Path, Path], plan: Plan,
                                          tmp_path: Path) -> None:
    parent, child = chain
    _store(child, [parent, child], plan, tmp_path / "c")
    parent.write_bytes(parent.read_bytes().replace(b"read", b"reae"))
    found, got = planstore.lookup(str(child), cache_dir=str(tmp_path / "c"))
    assert got is None and found.reason == f"stale: {parent} changed"


def test_missing_parent_is_a_miss(chain: tuple[Path, Path], plan: Plan, tmp_path: Path) -> None:
    parent, child = chain
    _store(child, [parent, child], plan, tmp_path / "c")
    parent.unlink()
    assert planstore.lookup(str(child), cache_dir=str(tmp_path / "c"))[1] is None


def test_top_file_change_changes_the_key(chain: tuple[Path, Path], plan: Plan,
                                         tmp_path: Path) -> None:
    parent, child = chain
    _store(child, [parent, child], plan, tmp_path / "c")
    child.write_text(child.read_text() + "# comment\n")
    found, got = planstore.lookup(str(child), cache_dir=str(tmp_path / "c"))
    assert got is None and found.reason == "miss"


def test_key_inputs() -> None:
    base = planstore.cache_key("/p.yaml", b"x", None)
    assert planstore.cache_key("/p.yaml", b"x", "audit") != base
    assert planstore.cache_key("/q.yaml", b"x", None) != base  # relative extends differ by dir
    assert planstore.cache_key("/p.yaml", b"y", None) != base
    assert planstore.cache_key("/p.yaml", b"x", None) == base


def test_key_covers_versions_and_arch(monkeypatch: pytest.MonkeyPatch) -> None:
    base = planstore.cache_key("/p.yaml", b"x", None)
    monkeypatch.setattr(planstore, "libseccomp_identity", lambda: "libseccomp.so.2.9.9:1:1")
    assert planstore.cache_key("/p.yaml", b"x", None) != base
    monkeypatch.undo()
    monkeypatch.setattr(planstore, "__version__", "99.0")
    assert planstore.cache_key("/p.yaml", b"x", None) != base


def test_mode_is_part_of_the_key(chain: tuple[Path, Path], plan: Plan, tmp_path: Path) -> None:
    parent, child = chain
    _store(child, [parent, child], plan, tmp_path / "c")
    assert planstore.lookup(str(child), mode="audit", cache_dir=str(tmp_path / "c"))[1] is None


@pytest.mark.parametrize("damage", [
    lambda b: b[: len(b) // 2],                          # truncated
    lambda b: b.replace(b'"policy_name":"cached"', b'"policy_name":"evil!!"'),  # edited
    lambda b: b"garbage\n" + b,                          # bad header
    lambda b: b"",                                       # empty
])
def test_corrupt_entry_is_a_clear_error(chain: tuple[Path, Path], plan: Plan, tmp_path: Path,
                                        damage: object) -> None:
    parent, child = chain
    entry = _store(child, [parent, child], plan, tmp_path / "c")
    data = Path(entry).read_bytes()
    Path(entry).write_bytes(damage(data))  # type: ignore[operator]
    with pytest.raises(PlanError) as e:
        planstore.lookup(str(child), cache_dir=str(tmp_path / "c"))
    assert entry in str(e.value) and "rm " in str(e.value)


def test_unknown_plan_format_is_refused(chain: tuple[Path, Path], plan: Plan,
                                        tmp_path: Path) -> None:
    parent, child = chain
    entry = _store(child, [parent, child], plan, tmp_path / "c")
    header, body = Path(entry).read_text().split("\n", 1)
    outer = json.loads(body)
    newer = PLAN_FORMAT + 1
    outer["plan"]["format"] = newer
    canon = json.dumps(outer["plan"], sort_keys=True, separators=(",", ":"))
    outer["sha256"] = hashlib.sha256(canon.encode()).hexdigest()  # a well-formed newer Plan
    Path(entry).write_text(header + "\n" + json.dumps(outer))
    with pytest.raises(PlanError, match=f"format {newer} is not the one this enforcer applies"):
        planstore.lookup(str(child), cache_dir=str(tmp_path / "c"))


def test_unknown_cache_format_is_refused(chain: tuple[Path, Path], plan: Plan,
                                         tmp_path: Path) -> None:
    parent, child = chain
    entry = _store(child, [parent, child], plan, tmp_path / "c")
    header, body = Path(entry).read_text().split("\n", 1)
    h = json.loads(header)
    h["cache_format"] = 99
    Path(entry).write_text(json.dumps(h) + "\n" + body)
    with pytest.raises(PlanError, match="unknown cache format"):
        planstore.lookup(str(child), cache_dir=str(tmp_path / "c"))


def test_untrusted_cache_dir_is_refused(chain: tuple[Path, Path], plan: Plan,
                                        tmp_path: Path) -> None:
    parent, child = chain
    _store(child, [parent, child], plan, tmp_path / "c")
    os.chmod(tmp_path / "c", 0o777)
    with pytest.raises(PlanError, match="writable by others"):
        planstore.lookup(str(child), cache_dir=str(tmp_path / "c"))


def test_write_is_atomic_and_private(chain: tuple[Path, Path], plan: Plan, tmp_path: Path) -> None:
    parent, child = chain
    entry = _store(child, [parent, child], plan, tmp_path / "c")
    assert os.listdir(tmp_path / "c") == [os.path.basename(entry)]  # no temp files left
    assert os.stat(entry).st_mode & 0o077 == 0
    assert os.stat(tmp_path / "c").st_mode & 0o077 == 0


def test_default_cache_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("ENFORCER_CACHE_DIR", str(tmp_path / "x"))
    assert planstore.default_cache_dir() == str(tmp_path / "x")
    monkeypatch.delenv("ENFORCER_CACHE_DIR")
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    assert planstore.default_cache_dir() == "/var/cache/enforcer"
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert planstore.default_cache_dir() == str(tmp_path / "xdg" / "enforcer")


def test_resolve_spec(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "p.yaml").write_text("name: p\n")
    assert planstore.resolve_spec("p.yaml") == str(tmp_path / "p.yaml")
    assert planstore.resolve_spec("./p.yaml") == str(tmp_path / "p.yaml")
    assert planstore.resolve_spec("no-such-shipped-policy") == "no-such-shipped-policy"


def test_libseccomp_identity_is_the_loaded_library() -> None:
    """The file the key names is the one the dynamic loader gives libseccomp
    users (pyseccomp) in this process."""
    from enforcer.compile.seccomp import _ps

    _ps()  # loads libseccomp through pyseccomp
    with open("/proc/self/maps") as f:
        mapped = {line.split()[-1] for line in f if "libseccomp" in line}
    ident = planstore.libseccomp_identity()
    assert ident.split(":")[0] in {os.path.basename(p) for p in mapped}, (ident, mapped)
    assert ident.split(":")[0].startswith("libseccomp.so.2")


FAST_PATH = textwrap.dedent("""
    import sys, time
    t = time.perf_counter()
    from enforcer.planstore import lookup
    found, plan = lookup(sys.argv[1], cache_dir=sys.argv[2])
    assert found.hit, found
    heavy = sorted(m for m in ("yaml", "pyseccomp", "psutil", "prometheus_client", "ctypes")
                   if m in sys.modules)
    print(",".join(heavy) or "none")
""")


def test_fast_path_imports_nothing_heavy(chain: tuple[Path, Path], plan: Plan,
                                         tmp_path: Path) -> None:
    parent, child = chain
    _store(child, [parent, child], plan, tmp_path / "c")
    script = tmp_path / "fast.py"
    # (That the store never imports PyYAML, pyseccomp, psutil or
    # prometheus_client, nor the compiler, is a lint-imports contract:
    # tests/unit/test_import_layers.py. This checks what a contract cannot,
    # a standard-library module -- ctypes -- at run time.)
    script.write_text(FAST_PATH)
    out = subprocess.run([sys.executable, str(script), str(child), str(tmp_path / "c")],
                         capture_output=True, text=True, check=True,
                         cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))))
    assert out.stdout.split() == ["none"], out.stderr


# -- the whole path, through the real YAML loader -----------------------------------

BASE_YAML = "name: base\nsyscalls:\n  default: errno EPERM\n  allow: [read, write, exit_group]\n"
APP_YAML = "name: app\nextends: base.yaml\nsyscalls:\n  allow: [getpid]\n"


@pytest.fixture
def yaml_chain(tmp_path: Path) -> tuple[Path, Path, Path]:
    pytest.importorskip("enforcer.policy.loader")
    (tmp_path / "base.yaml").write_text(BASE_YAML)
    (tmp_path / "app.yaml").write_text(APP_YAML)
    return tmp_path / "base.yaml", tmp_path / "app.yaml", tmp_path / "cache"


def test_load_or_compile_compiles_then_hits(yaml_chain: tuple[Path, Path, Path]) -> None:
    parent, child, cdir = yaml_chain
    first = cache.load_or_compile(str(child), cache_dir=str(cdir))
    assert first.policy_name == "app"
    found, again = planstore.lookup(str(child), cache_dir=str(cdir))
    assert found.hit and again == first
    # the entry lists the whole extends chain
    sources, _ = planstore.read_entry(found.path)  # type: ignore[misc]
    assert [p for p, _ in sources] == [str(parent), str(child)]


def test_parent_change_recompiles(yaml_chain: tuple[Path, Path, Path]) -> None:
    parent, child, cdir = yaml_chain
    first = cache.load_or_compile(str(child), cache_dir=str(cdir))
    parent.write_text(BASE_YAML.replace("exit_group]", "exit_group, getuid]"))
    found, _ = planstore.lookup(str(child), cache_dir=str(cdir))
    assert not found.hit and found.reason.startswith("stale")
    second = cache.load_or_compile(str(child), cache_dir=str(cdir))
    assert second.policy_hash != first.policy_hash
    assert second.seccomp is not None and first.seccomp is not None
    assert second.seccomp.filter.bpf != first.seccomp.filter.bpf
    assert planstore.lookup(str(child), cache_dir=str(cdir))[0].hit


def test_mode_override(yaml_chain: tuple[Path, Path, Path]) -> None:
    _, child, cdir = yaml_chain
    audit = cache.load_or_compile(str(child), mode="audit", cache_dir=str(cdir))
    enforce = cache.load_or_compile(str(child), cache_dir=str(cdir))
    assert (audit.mode, enforce.mode) == ("audit", "enforce")
    assert cache.load_or_compile(str(child), mode="audit", cache_dir=str(cdir)) == audit
    with pytest.raises(PlanError, match="mode"):
        cache.load_or_compile(str(child), mode="loud", cache_dir=str(cdir))


def test_corrupt_entry_through_load_or_compile(yaml_chain: tuple[Path, Path, Path]) -> None:
    _, child, cdir = yaml_chain
    cache.load_or_compile(str(child), cache_dir=str(cdir))
    entry = planstore.lookup(str(child), cache_dir=str(cdir))[0].path
    Path(entry).write_bytes(Path(entry).read_bytes()[:-10])
    with pytest.raises(PlanError, match="corrupt"):
        cache.load_or_compile(str(child), cache_dir=str(cdir))


def test_resolve_spec_agrees_with_the_loader(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    loader = pytest.importorskip("enforcer.policy.loader")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ENFORCER_POLICY_DIR", str(tmp_path / "admin"))
    (tmp_path / "admin").mkdir()
    (tmp_path / "admin" / "team.yaml").write_text("name: team\n")
    (tmp_path / "local").write_text("name: local\n")
    (tmp_path / "p.yml").write_text("name: p\n")
    specs = ["p.yml", "./p.yml", "./local", "team"] + loader.shipped_names()
    for spec in specs:
        assert planstore.resolve_spec(spec) == loader.resolve_policy_source(spec), spec
    # A bare name is never a file in the working directory, for either of them.
    assert planstore.resolve_spec("local") == "local"
    with pytest.raises(PolicyErrors):
        loader.resolve_policy_source("local")


def test_old_entries_of_an_edited_policy_are_pruned(yaml_chain: tuple[Path, Path, Path]) -> None:
    _, child, cdir = yaml_chain
    cache.load_or_compile(str(child), cache_dir=str(cdir))
    cache.load_or_compile(str(child), mode="audit", cache_dir=str(cdir))
    assert len(os.listdir(cdir)) == 2
    child.write_text(APP_YAML + "# edited\n")
    cache.load_or_compile(str(child), cache_dir=str(cdir))
    # the old enforce-mode entry is gone; the audit one is another mode: kept
    assert len(os.listdir(cdir)) == 2
    assert planstore.lookup(str(child), cache_dir=str(cdir))[0].hit


def test_explicit_plan_file_is_checked_strictly(plan: Plan, tmp_path: Path) -> None:
    """What `enforcer run --plan FILE` relies on: a Plan file the compiler
    wrote loads back equal; a damaged one or one of a newer format is refused."""
    from enforcer.plan import load_plan_file

    f = tmp_path / "p.plan"
    f.write_text(plan.to_json())
    assert load_plan_file(str(f)) == plan
    f.write_text(plan.to_json().replace('"mode":"enforce"', '"mode":"audit"'))
    with pytest.raises(PlanError, match="does not match its sha256"):
        load_plan_file(str(f))
    outer = json.loads(plan.to_json())
    outer["plan"]["format"] = 99
    outer["sha256"] = hashlib.sha256(json.dumps(outer["plan"], sort_keys=True,
                                                separators=(",", ":")).encode()).hexdigest()
    f.write_text(json.dumps(outer))
    with pytest.raises(PlanError, match="format 99"):
        load_plan_file(str(f))
