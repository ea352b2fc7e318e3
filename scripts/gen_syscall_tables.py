#!/usr/bin/env python3
"""Generate enforcer's syscall tables from a Linux source tree, offline.

    python3 scripts/gen_syscall_tables.py SOURCE [--out DIR] [--check]

SOURCE is an unpacked kernel tree or its tarball (Debian's linux-source-X.Y
package installs /usr/src/linux-source-X.Y.tar.xz); nothing is fetched.
Only the kernel's own syscall tables (the `syscall*.tbl` files, the form the
kernel's build turns into unistd.h) and the top-level Makefile (for the
version) are read.

For every architecture enforcer knows, one file DIR/<arch>.txt is written:
a header naming the kernel version, the table and the ABIs it was read
with, then one `NUMBER NAME` line per syscall, sorted by number. The
numbers are the ones a seccomp filter sees (x32 with its 0x40000000 bit,
MIPS with its 4000/5000/6000 base). Plain sorted text, so `git diff` of a
regenerated table shows exactly which syscalls a kernel release added.

Syscalls added after that kernel go into DIR/addendum.txt by hand
(enforcer/policy/syscall_table.py reads both; a test checks each addendum entry
against the running kernel).

--check compares instead of writing: exit 1 and a diff when DIR differs
from what SOURCE gives (for the entries SOURCE has).

Which table and which ABIs make up each architecture is what the kernel's
own Makefiles say (6.12: arch/x86/entry/syscalls/Makefile,
arch/*/kernel/Makefile.syscalls, scripts/Makefile.asm-headers, ...).
"""

from __future__ import annotations

import argparse
import difflib
import io
import os
import re
import sys
import tarfile
from dataclasses import dataclass

X32_SYSCALL_BIT = 0x40000000


@dataclass(frozen=True)
class TableSpec:
    """Where one architecture's numbers come from."""

    arch: str  # libseccomp's name for the architecture
    paths: tuple[str, ...]  # candidates, relative to the tree; the first present is read
    abis: frozenset[str]  # the ABI column values that belong to this architecture
    offset: int = 0  # added to every number (x32, MIPS)


def _spec(arch: str, paths: str, abis: str, offset: int = 0) -> TableSpec:
    return TableSpec(arch, tuple(paths.split()), frozenset(abis.split(",")), offset)


# Architectures with an identical table are written once; the loader
# maps the others onto it (systable.ALIASES): ppc64 -> ppc64le, mipsel -> mips,
# mipsel64 -> mips64, mipsel64n32 -> mips64n32.
SPECS: tuple[TableSpec, ...] = (
    _spec("x86_64", "arch/x86/entry/syscalls/syscall_64.tbl", "common,64"),
    _spec("x32", "arch/x86/entry/syscalls/syscall_64.tbl", "common,x32", X32_SYSCALL_BIT),
    _spec("x86", "arch/x86/entry/syscalls/syscall_32.tbl", "i386"),
    # arm64: its own copy of the generic table since 6.11 (arch/arm64/kernel/
    # Makefile.syscalls adds the renameat, rlimit and memfd_secret ABIs).
    _spec("aarch64", "arch/arm64/tools/syscall_64.tbl scripts/syscall.tbl",
          "common,64,renameat,rlimit,memfd_secret"),
    _spec("arm", "arch/arm/tools/syscall.tbl", "common,eabi"),
    _spec("riscv64", "scripts/syscall.tbl", "common,64,riscv,rlimit,memfd_secret"),
    _spec("loongarch64", "scripts/syscall.tbl", "common,64"),
    _spec("s390x", "arch/s390/kernel/syscalls/syscall.tbl", "common,64"),
    _spec("s390", "arch/s390/kernel/syscalls/syscall.tbl", "common,32"),
    _spec("ppc64le", "arch/powerpc/kernel/syscalls/syscall.tbl", "common,nospu,64"),
    _spec("ppc", "arch/powerpc/kernel/syscalls/syscall.tbl", "common,nospu,32"),
    _spec("mips", "arch/mips/kernel/syscalls/syscall_o32.tbl", "o32", 4000),
    _spec("mips64", "arch/mips/kernel/syscalls/syscall_n64.tbl", "n64", 5000),
    _spec("mips64n32", "arch/mips/kernel/syscalls/syscall_n32.tbl", "n32", 6000),
    _spec("parisc", "arch/parisc/kernel/syscalls/syscall.tbl", "common,32"),
    _spec("parisc64", "arch/parisc/kernel/syscalls/syscall.tbl", "common,64"),
)


class GenError(Exception):
    pass


class Tree:
    """Read files of a kernel tree: a directory or a (compressed) tarball."""

    def __init__(self, source: str) -> None:
        self.source = source
        self._files: dict[str, bytes] | None = None
        if not os.path.isdir(source):
            self._files = self._read_tar(source)

    @staticmethod
    def _wanted(rel: str) -> bool:
        return rel == "Makefile" or rel.endswith(".tbl")

    def _read_tar(self, path: str) -> dict[str, bytes]:
        files: dict[str, bytes] = {}
        try:
            with tarfile.open(path) as tar:
                for member in tar:
                    if not member.isfile():
                        continue
                    # Strip the top directory (linux-source-6.12/...).
                    rel = member.name.split("/", 1)[1] if "/" in member.name else member.name
                    if self._wanted(rel):
                        f = tar.extractfile(member)
                        if f is not None:
                            files[rel] = f.read()
        except (OSError, tarfile.TarError) as e:
            raise GenError(f"{path}: cannot read as a directory or tarball: {e}") from None
        return files

    def read(self, rel: str) -> str | None:
        if self._files is not None:
            data = self._files.get(rel)
            return None if data is None else data.decode("utf-8")
        full = os.path.join(self.source, rel)
        if not os.path.isfile(full):
            return None
        with open(full, encoding="utf-8") as f:
            return f.read()


def kernel_version(tree: Tree) -> str:
    """VERSION.PATCHLEVEL.SUBLEVEL from the top-level Makefile."""
    text = tree.read("Makefile")
    if text is None:
        raise GenError(f"{tree.source}: no top-level Makefile (is this a kernel tree?)")
    fields = {}
    for key in ("VERSION", "PATCHLEVEL", "SUBLEVEL"):
        m = re.search(rf"^{key}\s*=\s*(\d+)\s*$", text, re.M)
        if not m:
            raise GenError(f"{tree.source}/Makefile: no {key} line")
        fields[key] = m.group(1)
    return f"{fields['VERSION']}.{fields['PATCHLEVEL']}.{fields['SUBLEVEL']}"


# MIPS keeps holes in its tables as named placeholders (unused18,
# reserved221): numbers, but no syscall a policy could name.
_PLACEHOLDER = re.compile(r"(reserved|unused)\d+")


def parse_tbl(text: str, abis: frozenset[str], offset: int, where: str) -> dict[int, str]:
    """NUMBER ABI NAME [ENTRY...] lines -> {number + offset: name} for the ABIs."""
    out: dict[int, str] = {}
    for lineno, line in enumerate(text.splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.split()
        if len(parts) < 3 or not parts[0].isdigit():
            raise GenError(f"{where}:{lineno}: not `NUMBER ABI NAME ...`: {line!r}")
        if parts[1] not in abis or _PLACEHOLDER.fullmatch(parts[2]):
            continue
        nr, name = int(parts[0]) + offset, parts[2]
        if not re.fullmatch(r"[a-z_][a-z0-9_]*", name):
            raise GenError(f"{where}:{lineno}: unexpected syscall name {name!r}")
        if nr in out and out[nr] != name:
            raise GenError(f"{where}:{lineno}: {nr} is both {out[nr]} and {name}")
        out[nr] = name
    if not out:
        raise GenError(f"{where}: no syscall for ABIs {','.join(sorted(abis))}")
    return out


def generate(tree: Tree) -> dict[str, str]:
    """arch -> the text of its table file."""
    version = kernel_version(tree)
    out: dict[str, str] = {}
    for spec in SPECS:
        for rel in spec.paths:
            text = tree.read(rel)
            if text is not None:
                break
        else:
            raise GenError(f"{tree.source}: none of {', '.join(spec.paths)} (for {spec.arch})")
        table = parse_tbl(text, spec.abis, spec.offset, rel)
        lines = [
            f"# {spec.arch} syscall numbers, Linux {version}",
            f"# from {rel}, ABIs {','.join(sorted(spec.abis))}"
            + (f", numbers + {spec.offset:#x}" if spec.offset else ""),
            "# generated by scripts/gen_syscall_tables.py: do not edit (later syscalls: addendum.txt)",
        ]
        lines += [f"{nr} {name}" for nr, name in sorted(table.items())]
        out[spec.arch] = "\n".join(lines) + "\n"
    return out


def _entries(text: str) -> dict[int, str]:
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            nr, name = line.split()
            out[int(nr)] = name
    return out


def check(generated: dict[str, str], directory: str) -> list[str]:
    """Differences between the generated entries and the committed tables."""
    problems: list[str] = []
    for arch, text in generated.items():
        path = os.path.join(directory, f"{arch}.txt")
        try:
            with open(path, encoding="utf-8") as f:
                committed = _entries(f.read())
        except OSError as e:
            problems.append(f"{path}: {e.strerror}")
            continue
        for nr, name in sorted(_entries(text).items()):
            if committed.get(nr) != name:
                problems.append(f"{arch}: the source has {nr} {name}, the table "
                                f"{committed.get(nr, 'nothing')}")
    return problems


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("source", help="kernel source directory or tarball")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                  "..", "enforcer", "policy", "systable"),
                    help="table directory (default: enforcer/policy/systable)")
    ap.add_argument("--check", action="store_true",
                    help="compare with the tables in --out instead of writing")
    args = ap.parse_args(argv)
    try:
        generated = generate(Tree(args.source))
    except GenError as e:
        print(f"gen_syscall_tables: {e}", file=sys.stderr)
        return 2
    if args.check:
        problems = check(generated, args.out)
        for p in problems:
            print(p)
        print(f"{len(problems)} differences in {len(generated)} tables")
        return 1 if problems else 0
    os.makedirs(args.out, exist_ok=True)
    for arch, text in generated.items():
        path = os.path.join(args.out, f"{arch}.txt")
        old = ""
        if os.path.exists(path):
            with open(path, encoding="utf-8") as f:
                old = f.read()
        if old != text:
            diff = difflib.unified_diff(old.splitlines(), text.splitlines(), lineterm="", n=0)
            changed = sum(1 for d in diff if d[:1] in "+-" and d[:3] not in ("+++", "---"))
            print(f"{arch}: {changed} lines changed")
        with io.open(path, "w", encoding="utf-8") as f:
            f.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
