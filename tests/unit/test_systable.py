"""enforcer's syscall table (enforcer/policy/systable) and its generator.

The generator runs here on an excerpt of Linux 6.12's tables committed
under tests/fixtures (so no kernel source is needed): the committed tables
must hold exactly what it produces for those entries, and a changed
fixture line must be reported. The tables must agree with libseccomp
wherever both know a name.
"""

from __future__ import annotations

import functools
import importlib.util
import shutil
import sys
from pathlib import Path
from types import ModuleType

import pytest

from enforcer.compile import seccomp as S
from enforcer.policy import groups, syscalls
from enforcer.policy import syscall_table

from tests.compile_helpers import AUDIT_ARCH_X86_64, RET_ALLOW, rule, run_bpf, syscall_policy
from tests.paths import REPO

FIXTURE_TREE = REPO / "tests" / "fixtures" / "linux-6.12-syscall-tables"
TABLE_DIR = REPO / "enforcer" / "policy" / "systable"


@functools.lru_cache(maxsize=1)
def _generator() -> ModuleType:
    """scripts/gen_syscall_tables.py as a module (it is a script, not a package)."""
    spec = importlib.util.spec_from_file_location(
        "gen_syscall_tables", REPO / "scripts" / "gen_syscall_tables.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_generator_output_for_the_fixture_equals_the_committed_tables() -> None:
    gen = _generator()
    generated = gen.generate(gen.Tree(str(FIXTURE_TREE)))
    assert set(generated) == set(syscall_table.TABLES)
    assert gen.check(generated, str(TABLE_DIR)) == []
    x86_64 = generated["x86_64"]
    assert x86_64.startswith("# x86_64 syscall numbers, Linux 6.12.118\n")
    assert "\n462 mseal\n" in x86_64 and "\n335 uretprobe\n" in x86_64
    assert "rt_sigaction" in x86_64 and "\n512 " not in x86_64  # 64 ABI in, x32 ABI out
    x32 = generated["x32"]
    assert f"\n{0x40000000 + 512} rt_sigaction\n" in x32 and f"\n{0x40000000 + 13} " not in x32
    assert f"\n{5000 + 462} mseal\n" in generated["mips64"]  # the n64 base


def test_generator_reports_a_changed_number(tmp_path: Path) -> None:
    gen = _generator()
    tree = tmp_path / "tree"
    shutil.copytree(FIXTURE_TREE, tree)
    tbl = tree / "arch/x86/entry/syscalls/syscall_64.tbl"
    tbl.write_text(tbl.read_text().replace("462 \tcommon  mseal", "463\tcommon\tmseal"))
    problems = gen.check(gen.generate(gen.Tree(str(tree))), str(TABLE_DIR))
    assert any(p.startswith("x86_64: the source has 463 mseal") for p in problems), problems
    assert any(p.startswith("x32: the source has") for p in problems)


def test_generator_writes_sorted_diffable_text(tmp_path: Path) -> None:
    gen = _generator()
    assert gen.main([str(FIXTURE_TREE), "--out", str(tmp_path)]) == 0
    lines = (tmp_path / "x86_64.txt").read_text().splitlines()
    body = [line for line in lines if not line.startswith("#")]
    numbers = [int(line.split()[0]) for line in body]
    assert numbers == sorted(numbers) and len(set(numbers)) == len(numbers)
    assert all(len(line.split()) == 2 for line in body)


def test_generator_refuses_what_is_not_a_kernel_tree(tmp_path: Path) -> None:
    gen = _generator()
    with pytest.raises(gen.GenError, match="no top-level Makefile"):
        gen.generate(gen.Tree(str(tmp_path)))


def test_table_digest_matches_the_data_files() -> None:
    """TABLE_DIGEST keys the Plan cache: update it with the tables."""
    assert syscall_table.TABLE_DIGEST == syscall_table.digest(), (
        "enforcer/policy/systable changed: set TABLE_DIGEST in its __init__.py to " + syscall_table.digest())


@pytest.mark.parametrize("arch", syscall_table.ARCHES)
def test_every_table_loads_without_clashes(arch: str) -> None:
    table = syscall_table.table(arch)
    assert table is not None and len(table.by_name) > 300
    assert len(table.by_number) == len(table.by_name)
    assert table.kernel == "6.12.118"


@pytest.mark.parametrize("arch", [a for a in syscall_table.ARCHES if a in syscalls.ARCHITECTURES])
def test_table_agrees_with_libseccomp_wherever_both_know_a_name(arch: str) -> None:
    table = syscall_table.table(arch)
    assert table is not None
    disagree = []
    both = 0
    for name, entry in table.by_name.items():
        nr = syscalls.syscall_number(name, arch)
        if nr >= 0:
            both += 1
            if nr != entry.number:
                disagree.append(f"{name}: table {entry.number}, libseccomp {nr}")
    assert both > 300
    assert disagree == []


def test_addendum_numbers_follow_each_architectures_numbering() -> None:
    assert syscall_table.number("setxattrat", "x86_64") == 463
    assert syscall_table.number("setxattrat", "aarch64") == 463
    assert syscall_table.number("setxattrat", "x32") == 0x40000000 + 463
    assert syscall_table.number("setxattrat", "mips") == 4000 + 463
    assert syscall_table.number("file_setattr", "ppc64") == 469  # an alias of ppc64le
    assert syscall_table.number("uprobe", "x86_64") == 336
    assert syscall_table.number("uprobe", "x86") is None and syscall_table.number("uprobe", "aarch64") is None
    assert syscall_table.entry("open_tree_attr", "riscv64") == syscall_table.Entry("open_tree_attr", 467, "6.15")
    assert syscall_table.kernel_version() == "6.17"


def test_names_only_the_table_knows_are_syscalls_compiled_by_number() -> None:
    assert not syscalls.libseccomp_knows_on("mseal", "x86_64")
    assert syscalls.exists_on("mseal", "x86_64") and syscalls.known("mseal")
    assert syscalls.by_number("mseal", "x86_64") == 462
    assert syscalls.by_number("read", "x86_64") is None  # libseccomp compiles it by name
    assert syscalls.exists_on("socket", "x86")  # multiplexed: libseccomp only
    assert "x86_64" in syscalls.arches_with("listmount")
    assert syscalls.newer_note("listmount", "x86_64") == (
        "unknown to libseccomp 2.5.4; compiled by number from enforcer's table (kernel 6.12)")
    assert syscalls.newer_note("read", "x86_64") is None
    assert syscalls.newer_note("riscv_hwprobe", "x86_64") is None  # no syscall there at all
    assert {"mseal", "setxattrat", "uprobe"} <= set(syscalls.newer_than_libseccomp("x86_64"))
    assert "mseal" in syscalls.all_names()


# Newer syscalls placed in groups (issue 17): each resolves on x86_64 and a
# policy allowing the group allows its number.
NEWER_IN_GROUPS = [
    ("memory", "mseal", 462), ("memory", "map_shadow_stack", 453),
    ("mount", "statmount", 457), ("mount", "listmount", 458), ("mount", "open_tree_attr", 467),
    ("xattr", "setxattrat", 463), ("xattr", "getxattrat", 464), ("xattr", "listxattrat", 465),
    ("xattr", "removexattrat", 466), ("file-system", "file_getattr", 468),
    ("file-system", "file_setattr", 469), ("file-system", "fchmodat2", 452),
    ("file-system", "cachestat", 451), ("ipc", "futex_wake", 454), ("ipc", "futex_wait", 455),
    ("ipc", "futex_requeue", 456), ("process", "uretprobe", 335), ("process", "uprobe", 336),
    ("memory-policy", "set_mempolicy_home_node", 450), ("system-admin", "quotactl_fd", 443),
    ("lsm", "lsm_get_self_attr", 459), ("lsm", "lsm_set_self_attr", 460),
    ("lsm", "lsm_list_modules", 461),
]


@pytest.mark.parametrize("group, name, nr", NEWER_IN_GROUPS)
def test_newer_group_member_resolves_and_compiles(group: str, name: str, nr: int) -> None:
    assert name in groups.GROUPS[group].members
    assert syscall_table.number(name, "x86_64") == nr
    bpf = S.export_bpf(syscall_policy(rule(name, via=f"@{group}")))  # type: ignore[arg-type]
    assert run_bpf(bpf, nr, AUDIT_ARCH_X86_64) == RET_ALLOW
    assert run_bpf(bpf, nr + 1000, AUDIT_ARCH_X86_64) != RET_ALLOW
