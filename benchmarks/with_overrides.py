"""Run a module with some module-level constants changed: A/B runs of tuning constants
without adding an environment variable for each.

    python benchmarks/with_overrides.py titaninfer.kernels.triton_common.PDL_MODE=2 \\
        -- titaninfer.bench latency --model dummy:tinyllama-1.1b

Each override is MODULE.ATTR=VALUE (VALUE a Python literal); the module is imported and
its attribute set before the target module runs (as `python -m`). The attribute must
already exist, so a typo fails instead of silently measuring the default.
"""

from __future__ import annotations

import ast
import importlib
import runpy
import sys


def apply(override: str) -> None:
    target, _, value = override.partition("=")
    module_name, _, attr = target.rpartition(".")
    if not module_name or not value:
        raise SystemExit(f"with_overrides: {override!r} is not MODULE.ATTR=VALUE")
    module = importlib.import_module(module_name)
    if not hasattr(module, attr):
        raise SystemExit(f"with_overrides: {module_name} has no attribute {attr!r}")
    setattr(module, attr, ast.literal_eval(value))
    print(f"with_overrides: {module_name}.{attr} = {getattr(module, attr)!r}", file=sys.stderr)


def main(argv: list[str]) -> None:
    if "--" not in argv:
        raise SystemExit(__doc__)
    split = argv.index("--")
    for override in argv[:split]:
        apply(override)
    module, *args = argv[split + 1:]
    sys.argv = [module, *args]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main(sys.argv[1:])
