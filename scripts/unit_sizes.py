"""The largest functions and classes of the enforcer package, by source lines.

    python scripts/unit_sizes.py [--top N] [PACKAGE_DIR]
"""

from __future__ import annotations

import argparse
import ast
import pathlib


def units(root: pathlib.Path) -> list[tuple[int, str, str]]:
    out: list[tuple[int, str, str]] = []
    for path in sorted(root.rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                kind = "class" if isinstance(node, ast.ClassDef) else "def"
                size = (node.end_lineno or node.lineno) - node.lineno + 1
                out.append((size, kind, f"{path.relative_to(root.parent)}:{node.name}"))
    return sorted(out, reverse=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    ap.add_argument("--top", type=int, default=15)
    ap.add_argument("package", nargs="?", default="enforcer")
    args = ap.parse_args()
    rows = units(pathlib.Path(args.package))
    files = sorted(((len(p.read_text().splitlines()), str(p))
                    for p in pathlib.Path(args.package).rglob("*.py")), reverse=True)
    print("| lines | kind | unit |\n| ---: | --- | --- |")
    for size, kind, name in [r for r in rows if r[1] == "class"][:args.top]:
        print(f"| {size} | {kind} | {name} |")
    for size, kind, name in [r for r in rows if r[1] == "def"][:args.top]:
        print(f"| {size} | {kind} | {name} |")
    for size, name in files[:args.top]:
        print(f"| {size} | file | {name} |")


if __name__ == "__main__":
    main()
