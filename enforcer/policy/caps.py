"""Moved to enforcer/kernel/capabilities.py (one module per kernel concept).

This name stays for code written against it; new code imports
enforcer.kernel.capabilities.
"""

from enforcer.kernel.capabilities import (ALL_CAPS, CAP_LAST_CAP, CAPABILITIES, Sets,
                                          absolute_sets, from_name, name_of, names, normalise)

__all__ = ["ALL_CAPS", "CAP_LAST_CAP", "CAPABILITIES", "Sets", "absolute_sets", "from_name",
           "name_of", "names", "normalise"]
