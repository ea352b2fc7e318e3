"""Every YAML example in the policy docs is a valid policy (or fragment)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from enforcer.policy.loader import load_policy
from tests.policy_helpers import REPO

DOCS = [REPO / "docs" / "policy-format.md", REPO / "docs" / "policy-reference.md"]
EXAMPLES = [
    (doc.name, i, block)
    for doc in DOCS
    for i, block in enumerate(re.findall(r"```yaml\n(.*?)```", doc.read_text(), re.S))
]


def test_reference_has_examples() -> None:
    assert sum(1 for name, *_ in EXAMPLES if name == "policy-reference.md") >= 20


@pytest.mark.parametrize("doc,index,block", EXAMPLES, ids=[f"{d}#{i}" for d, i, _ in EXAMPLES])
def test_doc_example_loads(tmp_path: Path, doc: str, index: int, block: str) -> None:
    if not re.search(r"^name:", block, re.M):
        block = "name: example\n" + block  # fragments show one field
    (tmp_path / "common").mkdir()
    (tmp_path / "common" / "logging.yaml").write_text("name: logging\n")  # named by an example
    path = tmp_path / "example.yaml"
    path.write_text(block)
    load_policy(str(path))


def test_reference_documents_every_group() -> None:
    from enforcer.policy.groups import GROUPS

    text = (REPO / "docs" / "policy-reference.md").read_text()
    documented = set(re.findall(r"^\| `@([a-z-]+)` \|", text, re.M))
    assert documented == set(GROUPS)


def test_reference_documents_every_constant() -> None:
    from enforcer.policy.constants import CONSTANTS

    text = (REPO / "docs" / "policy-reference.md").read_text()
    missing = [name for name in CONSTANTS if not re.search(rf"\b{name}\b", text)]
    assert not missing, missing
