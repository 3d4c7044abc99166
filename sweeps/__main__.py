"""``python -m sweeps``: the same command as ``python sweeps/run.py``."""

import sys

from sweeps.run import main

if __name__ == "__main__":
    sys.exit(main())
