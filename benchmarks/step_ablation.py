"""Where the captured decode step's time goes: replay it with parts left out or doubled.

Without hardware counters (the device's profiler cannot see inside a graph under PDL),
the way to place time is to time variants that drop one part of the step, or run it
twice, and take differences (the device library's METHOD.md). The tokens are garbage in
every variant but `base`; only the timing means anything.

    python benchmarks/step_ablation.py --drop attn --model dummy:tinyllama-1.1b

Parts (`--drop`, repeatable; `--twice` for the ones marked *; `--stub` for those marked +):
  attn*+    the decode attention kernel (the o projection reads an unwritten buffer); as a
            stub, a one-program kernel that only waits (PDL) and zeroes the output: what
            the kernel boundary alone costs
  norm      every RMSNorm kernel (the projection after it reads the unnormalised stream)
  mlp       the MLP block of every layer (gate_up, down)
  attnblock the attention block of every layer (qkv, rotary/KV store, attention, o)
  lmhead    the LM head and its float32 copy

All other arguments go to `graph_replay_time.py`, which builds the engine after the
patches (so the CUDA graph is captured with them) and prints us per replay.
"""

from __future__ import annotations

import argparse
import sys

import torch
import triton
import triton.language as tl

from titaninfer.kernels.triton_common import await_producer, pdl_launch_kwargs, pdl_mode

PARTS = ("attn", "norm", "mlp", "attnblock", "lmhead")


def _patch_attention(times: int) -> None:
    import titaninfer.kernels.decode_attention as da

    original = da.paged_decode_attention

    def attention(*args, **kwargs):  # noqa: ANN002, ANN003 - same signature as the kernel's
        out = kwargs.get("out")
        for _ in range(times):
            out = original(*args, **kwargs)
        return out

    da.paged_decode_attention = attention


@triton.jit
def _stub_kernel(out_ptr, n, PDL: tl.constexpr, BLOCK: tl.constexpr):
    """Wait for the kernel before (PDL), zero the output: a kernel boundary and nothing else."""
    await_producer(PDL)
    offs = tl.arange(0, BLOCK)
    tl.store(out_ptr + offs, tl.zeros([BLOCK], tl.float32).to(out_ptr.dtype.element_ty), mask=offs < n)


def _patch_attention_stub() -> None:
    import titaninfer.kernels.decode_attention as da

    def attention(q, *args, out=None, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        out = torch.empty_like(q) if out is None else out  # the runner's warm-up passes none
        pdl = pdl_mode(q.device)
        _stub_kernel[(1,)](out, out.numel(), PDL=pdl, BLOCK=triton.next_power_of_2(out.numel()),
                           **pdl_launch_kwargs(pdl))
        return out

    da.paged_decode_attention = attention


def _patch_norm() -> None:
    from titaninfer.layers.norm import RMSNorm

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None):  # noqa: ANN202
        return x, (None if residual is None else x)

    RMSNorm.forward = forward


def _patch_mlp() -> None:
    from titaninfer.models.llama import MLP

    MLP.forward = lambda self, stream, norm, sumsq_out=None: stream


def _patch_attention_block() -> None:
    from titaninfer.models.llama import DecoderLayer

    def forward(self, positions, stream, kv_cache, meta, sumsq_out=None):  # noqa: ANN001, ANN202
        mlp_sumsq = None if sumsq_out is None else sumsq_out[1]
        return self.mlp(stream, self.post_attention_layernorm, mlp_sumsq)

    DecoderLayer.forward = forward


def _patch_lm_head() -> None:
    from titaninfer.models.llama import LlamaForCausalLM

    def compute_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return torch.empty(hidden.shape[0], self.config.vocab_size, device=hidden.device, dtype=torch.float32)

    LlamaForCausalLM.compute_logits = compute_logits


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--drop", action="append", default=[], choices=PARTS)
    ap.add_argument("--twice", action="append", default=[], choices=("attn",))
    ap.add_argument("--stub", action="append", default=[], choices=("attn",))
    args, rest = ap.parse_known_args()
    if "attn" in args.stub:
        _patch_attention_stub()
    elif "attn" in args.drop or "attn" in args.twice:
        _patch_attention(0 if "attn" in args.drop else 2)
    if "norm" in args.drop:
        _patch_norm()
    if "mlp" in args.drop:
        _patch_mlp()
    if "attnblock" in args.drop:
        _patch_attention_block()
    if "lmhead" in args.drop:
        _patch_lm_head()
    label = ",".join([f"-{p}" for p in args.drop] + [f"2x{p}" for p in args.twice]
                     + [f"stub-{p}" for p in args.stub]) or "base"
    print(f"step_ablation: {label}", flush=True)
    from benchmarks import graph_replay_time

    sys.argv = ["graph_replay_time.py", *rest]
    graph_replay_time.main()


if __name__ == "__main__":
    main()
