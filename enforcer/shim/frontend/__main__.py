import sys

from enforcer.shim.frontend import main

sys.exit(main())
