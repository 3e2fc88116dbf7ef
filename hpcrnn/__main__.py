"""`python -m hpcrnn` runs the command line."""
import sys

from hpcrnn.cli import main

sys.exit(main())
