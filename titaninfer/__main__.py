"""`python -m titaninfer ...` is the `titaninfer` command (for machines where the script
is not installed, e.g. a source checkout on PYTHONPATH)."""

import sys

from titaninfer.cli import main

sys.exit(main())
