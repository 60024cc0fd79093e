"""``python -m bnn_mcmc.cli``."""

import sys

from . import main

sys.exit(main())
