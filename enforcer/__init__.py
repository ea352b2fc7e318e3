"""enforcer: runtime security policy enforcer for Linux containers and processes."""

__version__ = "0.1.0"

# Set by a fast launcher (enforcer/launcher.py), which starts Python without
# `site`: the interpreter whose site-packages hold the compiler's PyYAML and
# libseccomp bindings, for a confined compile (enforcer/confined_compile.py).
SITE_PYTHON: str | None = None
