"""Kernel concepts, one module each, shared by every layer.

Each module here is the one table (or the one conversion) for a concept
the kernel defines: the policy loader validates against it, the compiler
builds Plans with it, the apply step, the shim, the exporters and the
monitor read it. Standard library only (these are on the start path).
"""
