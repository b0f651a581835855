"""``python -m pipeline.main_job``: the same as ``ccdflow-demo``."""

import sys

from .cli import main

sys.exit(main())
