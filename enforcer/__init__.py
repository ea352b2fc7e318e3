"""enforcer: runtime security policy enforcer for Linux containers and processes."""

__version__ = "0.1.0"
