"""Compile the skinny GEMV kernel for sm_90 without a GPU (Triton's bundled ptxas) and count,
per variant of its constexprs, the ttgir's layout conversions and the SASS's registers,
shared-memory instructions, barriers, FFMAs and shuffles; the ttgir and SASS go to --dump.

    PYTHONPATH=. python benchmarks/skinny_ir.py "BM=1" "BM=2" "BM=2,ACC3=True" "BM=2,nw=8"

Each argument overrides DEFAULTS (nw: warps). The local Triton may differ from the
device's: compare variants with each other, not with the device's counts.
"""

from __future__ import annotations

import argparse
import ast
import os
import re
import subprocess
import tempfile
from pathlib import Path

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from titaninfer.kernels import skinny_gemm as sg

DEFAULTS = dict(BM=1, BLOCK_N=4, BLOCK_K=1024, PROLOGUE=0, HAS_RES=False, HAS_BIAS=False, USE_DOT=False,
                EMULATE_RNE=False, PDL=2, PRELOAD=2, ROPE=False, HEAD_DIM=128, SILU_MUL=False,
                ADD_RESIDUAL=False, SLOTS=8, SLOT_STRIDE=8, LOOP_TILES=1, TRACE=False, ACC3=False)
_POINTER_TYPES = {"sq_in_ptr": "*fp64", "sq_out_ptr": "*fp64", "pos_ptr": "*i64", "slot_ptr": "*i64",
                  "cs_ptr": "*fp32", "trace_ptr": "*i64"}
# Arguments the launcher's specialisation sees as multiples of 16 on the engine's shapes.
_DIVISIBLE = {"N", "K", "x_stride", "cs_s0", "kc_s0", "kc_s1", "kc_s2", "vc_s0", "vc_s1", "vc_s2", "kv_block",
              "q_size", "kv_size", "gate_size"}


def parse_spec(spec: str) -> dict[str, object]:
    """"BM=2,ACC3=True" -> {"BM": 2, "ACC3": True}."""
    out: dict[str, object] = {}
    for part in filter(None, spec.split(",")):
        key, _, value = part.partition("=")
        out[key.strip()] = ast.literal_eval(value.strip())
    return out


def compile_variant(constexprs: dict[str, object], num_warps: int):  # -> triton CompiledKernel
    fn = sg._skinny_gemm_kernel
    names = fn.arg_names
    sig = {}
    for i, n in enumerate(names):
        if fn.params[i].is_constexpr:
            sig[n] = "constexpr"
        elif n.endswith("_ptr"):
            sig[n] = _POINTER_TYPES.get(n, "*bf16")
        else:
            sig[n] = "fp32" if n == "eps" else "i32"
    attrs = {(names.index(n),): [["tt.divisibility", 16]] for n in names if n.endswith("_ptr") or n in _DIVISIBLE}
    src = ASTSource(fn, sig, constexprs={(names.index(k),): v for k, v in constexprs.items()}, attrs=attrs)
    return triton.compile(src, target=GPUTarget("cuda", 90, 32), options={"num_warps": num_warps, "num_stages": 1})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("variants", nargs="+")
    ap.add_argument("--dump", default="/tmp", help="folder for each variant's ttgir and SASS")
    args = ap.parse_args()
    cuobjdump = os.path.join(os.path.dirname(triton.__file__), "backends/nvidia/bin/cuobjdump")
    for spec in args.variants:
        over = parse_spec(spec)
        num_warps = int(over.pop("nw", 4))  # type: ignore[call-overload]
        kernel = compile_variant({**DEFAULTS, **over}, num_warps)
        ttgir = kernel.asm["ttgir"]
        cubin = Path(tempfile.mkdtemp()) / "k.cubin"
        cubin.write_bytes(kernel.asm["cubin"])
        usage = subprocess.run([cuobjdump, "--dump-resource-usage", str(cubin)], capture_output=True, text=True).stdout
        sass = subprocess.run([cuobjdump, "-sass", str(cubin)], capture_output=True, text=True).stdout
        tag = re.sub(r"\W", "", spec) or "base"
        Path(args.dump, f"skinny_{tag}.ttgir").write_text(ttgir)
        Path(args.dump, f"skinny_{tag}.sass").write_text(sass)
        ins = [m.group(1).strip() for line in sass.splitlines()
               if (m := re.search(r"/\*[0-9a-f]{4,5}\*/\s+(.*?);", line))]
        regs = re.search(r"REG:(\d+)", usage)
        print(f"{spec:45s} regs {regs.group(1) if regs else '?':>3} sass {len(ins):5d} "
              f"convert_layout {ttgir.count('convert_layout'):2d} "
              f"LDS/STS {sum(bool(re.match(r'(LDS|STS)', t)) for t in ins):3d} "
              f"BAR {sum('BAR.SYNC' in t for t in ins):3d} FFMA {sum(t.startswith('FFMA') for t in ins):4d} "
              f"SHFL {sum('SHFL' in t for t in ins):3d}")


if __name__ == "__main__":
    main()
