"""`python -m titaninfer.bench latency ...` == `titaninfer bench latency ...`, for machines
where the package is on PYTHONPATH but not installed (no `titaninfer` script).
`python -m titaninfer.bench profile|roofline ...` runs those top-level commands."""

from __future__ import annotations

import sys

from titaninfer.cli import main

if __name__ == "__main__":
    argv = sys.argv[1:]
    sys.exit(main(argv if argv[:1] in (["profile"], ["roofline"]) else ["bench", *argv]))
