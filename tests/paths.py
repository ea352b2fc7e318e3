"""Where the tests find the project's shared inputs.

`shared/` sits beside the checkout (in CI: a copy beside the fresh clone),
so it is found relative to this file, never by a machine-specific path.
"""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SHARED_FIXTURES = REPO.parent / "shared" / "fixtures"
DOCKER_DEFAULT_SECCOMP = SHARED_FIXTURES / "docker-default-seccomp.json"
DOCKER_OCI_CONFIG = SHARED_FIXTURES / "docker-20.10-oci-config.json"
