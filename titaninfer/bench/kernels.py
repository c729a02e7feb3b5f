"""Kernel micro-benchmarks against the device's measured ceilings (the roofline).

    python -m titaninfer.bench.kernels [--only decode,prefill,...] [--out DIR] [--sweep]

Order: the two ceilings first (a >= 1 GiB device-to-device copy counting bytes read +
written; an 8192^3 bf16 matmul), then each kernel family over representative shapes:
check against its reference in `titaninfer.kernels.reference`, then time it with
`triton.testing.do_bench` (median, warmed up, L2 flushed between runs) and report GB/s
(or TFLOP/s for prefill) and the ratio to the measured ceiling. Decode attention is also
compared with torch SDPA on gathered KV, compiled FlexAttention and FlashInfer (when
installed). `--sweep` times the decode and prefill tile configurations (tuning).
Writes kernels.json and kernels.md into --out (default runs/<timestamp>-kernels/) and
prints a compact table last. Needs a CUDA GPU.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch

FAMILIES = ("rmsnorm", "silu", "rope", "decode", "prefill", "sampling")


@dataclass
class Row:
    family: str
    case: str
    time_us: float  # GPU time: CUDA-graph replay, L2 flushed (eager do_bench if not capturable)
    achieved: float  # GB/s or TFLOP/s, from time_us
    unit: str
    pct_ceiling: float  # achieved / measured ceiling, in %
    check: str  # "ok", "FAIL ...", or "-" when not checked
    note: str = ""
    eager_us: float = float("nan")  # do_bench of eager launches: adds Python launch cost


@dataclass
class Ceilings:
    copy_gbps: float  # bytes read + written per second / 1e9
    matmul_tflops: float  # bf16


def _eager_ms(fn: Callable[[], object]) -> float:
    import triton.testing

    return triton.testing.do_bench(fn, warmup=25, rep=100, return_mode="median")


def _graph_ms(fn: Callable[[], object], reps: int = 40) -> float:
    """Median GPU time of one CUDA-graph replay of fn, L2 flushed before each replay.

    Eager timing of a short kernel measures Python launch cost (Triton's launcher, the
    wrapper's checks) whenever the GPU finishes first; decode runs under CUDA graphs, so
    graph replay is the time that matters and the one the roofline ratio uses."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        fn()  # compile / autotune / allocate outside the capture
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    flush = torch.empty(256 << 20, dtype=torch.int8, device="cuda")
    events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
              for _ in range(reps + 3)]
    for start, end in events:
        flush.zero_()  # also hides the replay's CPU launch behind GPU work
        start.record()
        graph.replay()
        end.record()
    torch.cuda.synchronize()
    times = sorted(s.elapsed_time(e) for s, e in events[3:])
    return times[len(times) // 2]


def _time(fn: Callable[[], object]) -> tuple[float, float, str]:
    """(gpu_ms, eager_ms, note): graph replay when capturable, else eager do_bench."""
    eager = _eager_ms(fn)
    try:
        return _graph_ms(fn), eager, ""
    except Exception as e:  # noqa: BLE001 - some baselines cannot be captured
        torch.cuda.synchronize()
        return eager, eager, f"eager timing (graph capture failed: {type(e).__name__})"


def measure_ceilings() -> Ceilings:
    n_bytes = 1 << 31  # 2 GiB: far past L2, well over the 1 GiB minimum
    src = torch.empty(n_bytes // 2, dtype=torch.bfloat16, device="cuda").normal_()
    copy_ms = _eager_ms(functools.partial(torch.empty_like(src).copy_, src))
    del src
    n = 8192
    a = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    mm_ms = _eager_ms(lambda: torch.mm(a, b))
    return Ceilings(copy_gbps=2 * n_bytes / copy_ms / 1e6, matmul_tflops=2 * n**3 / mm_ms / 1e9)


class Bench:
    """Collects rows; `mem` / `flop` time a callable and convert to a roofline ratio."""

    def __init__(self, ceil: Ceilings) -> None:
        self.ceil = ceil
        self.rows: list[Row] = []

    def mem(self, family: str, case: str, fn: Callable[[], object], n_bytes: float,
            check: str = "-", note: str = "") -> float:
        ms, eager, how = _time(fn)
        gbps = n_bytes / ms / 1e6
        self.rows.append(Row(family, case, ms * 1e3, gbps, "GB/s",
                             100 * gbps / self.ceil.copy_gbps, check,
                             "; ".join(x for x in (note, how) if x), eager * 1e3))
        return ms

    def flop(self, family: str, case: str, fn: Callable[[], object], flops: float,
             check: str = "-", note: str = "") -> float:
        ms, eager, how = _time(fn)
        tflops = flops / ms / 1e9
        self.rows.append(Row(family, case, ms * 1e3, tflops, "TFLOP/s",
                             100 * tflops / self.ceil.matmul_tflops, check,
                             "; ".join(x for x in (note, how) if x), eager * 1e3))
        return ms

    def info(self, family: str, case: str, ms: float, note: str) -> None:
        self.rows.append(Row(family, case, ms * 1e3, float("nan"), "-", float("nan"), "-", note))


def _check(out: torch.Tensor, ref: torch.Tensor, tol: float) -> str:
    """'ok' or 'FAIL <why>' by relative error ||out - ref|| / ||ref|| (NaN never passes)."""
    if not torch.isfinite(out).all():
        return "FAIL non-finite"
    err = ((out.float() - ref.float()).norm() / ref.float().norm().clamp_min(1e-30)).item()
    return "ok" if err < tol else f"FAIL rel_err={err:.2e}"


# ----------------------------------------------------------------------------- elementwise
def bench_rmsnorm(b: Bench) -> None:
    from titaninfer.kernels.reference import rms_norm_ref
    from titaninfer.kernels.rmsnorm import rms_norm

    for t, h in ((16384, 4096), (64, 4096), (16384, 8192)):
        x = torch.randn(t, h, device="cuda", dtype=torch.bfloat16)
        r = torch.randn_like(x)
        w = torch.randn(h, device="cuda", dtype=torch.bfloat16)
        ok = _check(rms_norm(x, w, 1e-5, r)[0], rms_norm_ref(x, w, 1e-5, r)[0], 1e-2)
        b.mem("rmsnorm", f"T={t} H={h} +residual bf16", functools.partial(rms_norm, x, w, 1e-5, r),
              4 * x.numel() * 2, ok)
    qkv = torch.randn(16384, 48 * 128, device="cuda", dtype=torch.bfloat16)
    q = qkv[:, : 32 * 128].view(16384, 32, 128)
    w = torch.randn(128, device="cuda", dtype=torch.bfloat16)
    ok = _check(rms_norm(q, w, 1e-6)[0], rms_norm_ref(q, w, 1e-6)[0], 1e-2)
    b.mem("rmsnorm", "per-head q [16384,32,128] strided", lambda: rms_norm(q, w, 1e-6),
          2 * q.numel() * 2, ok)


def bench_silu(b: Bench) -> None:
    from titaninfer.kernels.activation import silu_and_mul
    from titaninfer.kernels.reference import silu_and_mul_ref

    for t, i in ((16384, 14336), (64, 14336)):
        x = torch.randn(t, 2 * i, device="cuda", dtype=torch.bfloat16)
        ok = _check(silu_and_mul(x), silu_and_mul_ref(x), 1e-2)
        b.mem("silu", f"T={t} I={i} bf16", functools.partial(silu_and_mul, x), 3 * t * i * 2, ok)


def bench_rope(b: Bench) -> None:
    from titaninfer.kernels.reference import rotary_ref, write_kv_ref
    from titaninfer.kernels.rotary import rope_and_write_kv

    hq, hk, d, bs = 32, 8, 128, 16
    for t in (16384, 64):
        qkv = torch.randn(t, (hq + 2 * hk) * d, device="cuda", dtype=torch.bfloat16)
        q, k, v = (x.view(t, -1, d) for x in qkv.split([hq * d, hk * d, hk * d], -1))
        nblk = (t + bs - 1) // bs + 1
        kc = torch.zeros(nblk, bs, hk, d, device="cuda", dtype=torch.bfloat16)
        vc = torch.zeros_like(kc)
        kc_ref, vc_ref = kc.clone(), vc.clone()
        pos = torch.randint(0, 8192, (t,), device="cuda")
        inv = 1.0 / (500000.0 ** (torch.arange(0, d, 2, device="cuda").double() / d))
        f = torch.outer(torch.arange(8192, device="cuda").double(), inv)
        cs = torch.cat((f.cos(), f.sin()), -1).float()
        slots = torch.randperm(nblk * bs, device="cuda")[:t]
        q_ref, k_rot = rotary_ref(pos, q, k, cs)
        write_kv_ref(k_rot, v, kc_ref, vc_ref, slots)
        q_copy = q.clone()
        out = rope_and_write_kv(pos, q_copy, k, v, cs, kc, vc, slots)
        ok = _check(torch.cat([out.flatten(), kc.flatten()]),
                    torch.cat([q_ref.flatten(), kc_ref.flatten()]), 1e-2)
        n_bytes = (2 * hq + 4 * hk) * t * d * 2 + t * (d * 4 + 16)
        # Rotating in place repeatedly is fine for timing (the values just keep turning).
        b.mem("rope", f"T={t} Hq={hq} Hk={hk} D={d} +kv store",
              functools.partial(rope_and_write_kv, pos, q_copy, k, v, cs, kc, vc, slots), n_bytes,
              ok)


# ----------------------------------------------------------------------------- attention
def _paged(batch: int, ctx: int, hk: int, d: int, bs: int, dtype=torch.bfloat16):
    nblk = (ctx + bs - 1) // bs
    k_cache = torch.randn(batch * nblk + 1, bs, hk, d, device="cuda", dtype=dtype)
    v_cache = torch.randn_like(k_cache)
    tables = torch.randperm(batch * nblk + 1, device="cuda")[: batch * nblk]
    return k_cache, v_cache, tables.view(batch, nblk).int()


def _decode_case(b: Bench, batch: int, ctx: int, hq: int = 32, hk: int = 8, d: int = 128,
                 bs: int = 16, compare: bool = False, config=None, splits=None,
                 tag: str = "") -> None:
    from titaninfer.kernels.decode_attention import paged_decode_attention
    from titaninfer.kernels.reference import paged_decode_attention_ref

    k_cache, v_cache, tables = _paged(batch, ctx, hk, d, bs)
    q = torch.randn(batch, hq, d, device="cuda", dtype=torch.bfloat16)
    lens = torch.full((batch,), ctx, dtype=torch.int32, device="cuda")
    scale = d**-0.5
    out = torch.empty_like(q)

    def run() -> torch.Tensor:
        return paged_decode_attention(q, k_cache, v_cache, lens, tables, scale, out=out,
                                      num_splits=splits, config=config)

    ref = paged_decode_attention_ref(q[:8], k_cache, v_cache, lens[:8], tables[:8], scale)
    ok = _check(run()[:8], ref, 2e-2)
    kv_bytes = 2 * batch * ctx * hk * d * 2
    name = f"B={batch} ctx={ctx} {hq}/{hk}x{d} bs={bs}{tag}"
    b.mem("decode", name, run, kv_bytes, ok)
    if compare:
        _decode_baselines(b, name, q, k_cache, v_cache, tables, lens, scale, kv_bytes, run())


def _decode_baselines(b: Bench, name, q, k_cache, v_cache, tables, lens, scale, kv_bytes,
                      ours: torch.Tensor) -> None:
    import torch.nn.functional as F

    batch, hq, d = q.shape
    _, bs, hk, _ = k_cache.shape
    idx = tables.long()

    def gather() -> tuple[torch.Tensor, torch.Tensor]:
        k = k_cache[idx].view(batch, -1, hk, d).transpose(1, 2)  # [B, Hk, L, D]
        v = v_cache[idx].view(batch, -1, hk, d).transpose(1, 2)
        return k, v

    k, v = gather()
    q4 = q.unsqueeze(2)  # [B, Hq, 1, D]

    def sdpa() -> torch.Tensor:
        return F.scaled_dot_product_attention(q4, k, v, scale=scale, enable_gqa=True)

    try:
        ok = _check(sdpa().squeeze(2), ours, 2e-2)
        b.mem("decode", f"{name} | gather only", gather, 2 * kv_bytes, "-",
              "bytes = read + write of K/V")
        b.mem("decode", f"{name} | torch SDPA (pre-gathered)", sdpa, kv_bytes, ok)
        b.mem("decode", f"{name} | gather + torch SDPA",
              lambda: F.scaled_dot_product_attention(q4, *gather(), scale=scale, enable_gqa=True),
              kv_bytes, ok)
    except Exception as e:  # noqa: BLE001 - a baseline failing must not stop the bench
        b.info("decode", f"{name} | torch SDPA", float("nan"), f"failed: {e!r}"[:120])
    try:
        from torch.nn.attention.flex_attention import flex_attention

        flex = torch.compile(flex_attention, dynamic=False)
        kc, vc = k.contiguous(), v.contiguous()
        run_flex = lambda: flex(q4, kc, vc, scale=scale, enable_gqa=True)  # noqa: E731
        ok = _check(run_flex().squeeze(2), ours, 2e-2)
        b.mem("decode", f"{name} | FlexAttention compiled (pre-gathered)", run_flex, kv_bytes, ok)
    except Exception as e:  # noqa: BLE001
        b.info("decode", f"{name} | FlexAttention", float("nan"), f"failed: {e!r}"[:120])
    try:
        import flashinfer  # type: ignore[import-not-found]
    except Exception:  # noqa: BLE001
        b.info("decode", f"{name} | FlashInfer", float("nan"), "not available (import failed)")
        return
    ws = torch.empty(128 << 20, dtype=torch.uint8, device="cuda")
    nblk = tables.shape[1]
    indptr = torch.arange(0, (batch + 1) * nblk, nblk, dtype=torch.int32, device="cuda")
    last = ((lens - 1) % bs + 1).int()
    # Both of FlashInfer's decode paths: CUDA-core decode kernels (its default) and, with
    # use_tensor_cores, its prefill kernels (the faster one for GQA groups of 4 and more).
    for tensor_cores in (False, True):
        label = f"{name} | FlashInfer paged decode" + (" (tensor cores)" if tensor_cores else "")
        try:
            wrapper = flashinfer.BatchDecodeWithPagedKVCacheWrapper(ws, "NHD", use_tensor_cores=tensor_cores)
            wrapper.plan(indptr, tables.flatten(), last, hq, hk, d, bs, data_type=q.dtype,
                         q_data_type=q.dtype, sm_scale=scale)
            run_fi = lambda w=wrapper: w.run(q, (k_cache, v_cache))  # noqa: E731
            ok = _check(run_fi(), ours, 2e-2)
            b.mem("decode", label, run_fi, kv_bytes, ok)
        except Exception as e:  # noqa: BLE001
            b.info("decode", label, float("nan"), f"failed: {e!r}"[:120])


def bench_decode(b: Bench, sweep: bool) -> None:
    _decode_case(b, 64, 4096, compare=True)  # Llama-3-8B heads, the headline number
    _decode_case(b, 1, 32768)  # split-K: 8 (b, h) pairs must still fill 132 SMs
    _decode_case(b, 8, 8192)
    _decode_case(b, 256, 1024)
    _decode_case(b, 64, 4096, bs=32)
    _decode_case(b, 32, 4096, hq=32, hk=32, d=128)  # MHA (group 1)
    _decode_case(b, 64, 2048, hq=16, hk=2, d=64)
    if sweep:
        cases = ((64, 4096, 32, 8, 128), (1, 32768, 32, 8, 128), (8, 8192, 32, 8, 128),
                 (64, 2048, 16, 2, 64))
        for cfg in ((32, 4, 2), (32, 4, 3), (64, 4, 2), (64, 4, 3), (64, 2, 2), (128, 4, 2),
                    (128, 8, 2)):
            for batch, ctx, hq, hk, d in cases:
                _decode_case(b, batch, ctx, hq=hq, hk=hk, d=d, config=cfg, tag=f" cfg={cfg}")
        for splits in (8, 16, 24, 32, 48, 64, 96, 128):
            _decode_case(b, 1, 32768, splits=splits, tag=f" splits={splits}")
        for splits in (1, 2, 4, 8):
            _decode_case(b, 64, 2048, hq=16, hk=2, d=64, splits=splits, tag=f" splits={splits}")


def _prefill_case(b: Bench, q_lens: list[int], seq_lens: list[int], hq: int = 32, hk: int = 8,
                  d: int = 128, bs: int = 16, config=None, tag: str = "",
                  compare: bool = False) -> None:
    from titaninfer.kernels.prefill_attention import paged_prefill_attention
    from titaninfer.kernels.reference import paged_attention_ref

    batch = len(seq_lens)
    ctx = max(seq_lens)
    k_cache, v_cache, tables = _paged(batch, ctx, hk, d, bs)
    starts = [0]
    for n in q_lens:
        starts.append(starts[-1] + n)
    q = torch.randn(starts[-1], hq, d, device="cuda", dtype=torch.bfloat16)
    qsl = torch.tensor(starts, dtype=torch.int32, device="cuda")
    lens = torch.tensor(seq_lens, dtype=torch.int32, device="cuda")
    scale = d**-0.5

    def run() -> torch.Tensor:
        return paged_prefill_attention(q, k_cache, v_cache, qsl, lens, tables, max(q_lens),
                                       scale, config=config)

    n_check = starts[1]  # the first sequence is enough for a check and keeps the ref cheap
    ref = paged_attention_ref(q[:n_check], k_cache, v_cache, starts[:2], seq_lens[:1],
                              tables[:1], scale)
    ok = _check(run()[:n_check], ref, 2e-2)
    # Causal: query at position p sees p + 1 keys; QK^T and PV are 2 * D FLOPs per pair each.
    pairs = sum(ql * (sl - ql) + ql * (ql + 1) // 2 for ql, sl in zip(q_lens, seq_lens, strict=True))
    flops = 4 * d * hq * pairs
    name = f"q={q_lens[0]}x{batch} ctx={ctx} {hq}/{hk}x{d}{tag}"
    b.flop("prefill", name, run, flops, ok)
    if compare and batch == 1 and q_lens[0] == seq_lens[0]:
        import torch.nn.functional as F

        k = k_cache[tables[0].long()].view(1, -1, hk, d)[:, :ctx].transpose(1, 2).contiguous()
        v = v_cache[tables[0].long()].view(1, -1, hk, d)[:, :ctx].transpose(1, 2).contiguous()
        q4 = q.view(1, ctx, hq, d).transpose(1, 2)
        fn = lambda: F.scaled_dot_product_attention(q4, k, v, is_causal=True, scale=scale,  # noqa: E731
                                                    enable_gqa=True)
        b.flop("prefill", f"{name} | torch SDPA causal (contiguous)", fn, flops)


def bench_prefill(b: Bench, sweep: bool) -> None:
    _prefill_case(b, [8192], [8192], compare=True)
    _prefill_case(b, [2048] * 4, [2048] * 4)
    _prefill_case(b, [2048], [8192])  # chunked prefill over a 6K cached prefix
    _prefill_case(b, [512] * 16, [1024] * 16)
    _prefill_case(b, [4096], [4096], hq=16, hk=4, d=64)
    _prefill_case(b, [2048], [2048], hq=16, hk=4, d=256)
    if sweep:
        for cfg in ((128, 128, 8, 3), (128, 64, 8, 3), (128, 128, 8, 2), (128, 128, 4, 3),
                    (64, 64, 4, 3), (128, 32, 4, 3), (64, 128, 4, 2)):
            _prefill_case(b, [8192], [8192], config=cfg, tag=f" cfg={cfg}")
            _prefill_case(b, [2048], [8192], config=cfg, tag=f" cfg={cfg}")
            _prefill_case(b, [512] * 16, [1024] * 16, config=cfg, tag=f" cfg={cfg}")
        for cfg in ((128, 128, 8, 3), (128, 64, 4, 3), (128, 128, 4, 3), (64, 64, 4, 3),
                    (128, 64, 8, 3)):
            _prefill_case(b, [4096], [4096], hq=16, hk=4, d=64, config=cfg, tag=f" cfg={cfg}")
        for cfg in ((64, 64, 4, 2), (64, 32, 8, 2), (128, 32, 8, 2), (64, 64, 8, 2),
                    (128, 64, 8, 2)):
            _prefill_case(b, [2048], [2048], hq=16, hk=4, d=256, config=cfg, tag=f" cfg={cfg}")


# ----------------------------------------------------------------------------- sampling
def bench_sampling(b: Bench) -> None:
    from titaninfer.kernels.sampling import sample_tokens

    v = 128256
    for batch, temp, min_p in ((256, 0.8, 0.05), (256, 0.8, 0.0), (256, 0.0, 0.0),
                               (1, 0.8, 0.05)):
        logits = torch.randn(batch, v, device="cuda") * 4
        t = torch.full((batch,), temp, device="cuda")
        mp = torch.full((batch,), min_p, device="cuda")
        seeds = torch.arange(batch, device="cuda", dtype=torch.int64)
        offs = torch.zeros(batch, device="cuda", dtype=torch.int64)
        tok = sample_tokens(logits, t, mp, seeds, offs)
        if temp == 0:
            ok = "ok" if torch.equal(tok, logits.argmax(-1)) else "FAIL greedy"
        else:
            p = torch.softmax(logits / temp, -1)
            chosen = p.gather(1, tok[:, None]).squeeze(1)
            ok = "ok" if bool((chosen >= min_p * p.max(-1).values * (1 - 1e-5)).all()) \
                else "FAIL min_p"
        b.mem("sampling", f"B={batch} V={v} T={temp} min_p={min_p}",
              functools.partial(sample_tokens, logits, t, mp, seeds, offs), batch * v * 4, ok,
              "bytes = logits read once (twice when min_p > 0)")


# ----------------------------------------------------------------------------- report
def _table(rows: list[Row], ceil: Ceilings) -> str:
    lines = [f"ceilings: copy {ceil.copy_gbps:.0f} GB/s (read+write), "
             f"bf16 matmul {ceil.matmul_tflops:.0f} TFLOP/s",
             "| family | case | GPU us | eager us | achieved | % ceiling | check | note |",
             "| --- | --- | ---: | ---: | ---: | ---: | --- | --- |"]
    for r in rows:
        ach = "-" if r.unit == "-" else f"{r.achieved:.1f} {r.unit}"
        pct = "-" if r.unit == "-" else f"{r.pct_ceiling:.1f}%"
        t = "-" if r.time_us != r.time_us else f"{r.time_us:.1f}"
        te = "-" if r.eager_us != r.eager_us else f"{r.eager_us:.1f}"
        lines.append(f"| {r.family} | {r.case} | {t} | {te} | {ach} | {pct} | {r.check} "
                     f"| {r.note} |")
    return "\n".join(lines)


def _environment() -> dict:
    import triton

    p = torch.cuda.get_device_properties(0)
    return {"gpu": p.name, "sms": p.multi_processor_count, "torch": torch.__version__,
            "triton": triton.__version__, "cuda": torch.version.cuda,
            "python": platform.python_version(), "host": platform.node(),
            "time": time.strftime("%Y-%m-%dT%H:%M:%S")}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", default=",".join(FAMILIES),
                    help=f"comma-separated subset of {','.join(FAMILIES)}")
    ap.add_argument("--out", default=None, help="output directory (default runs/<ts>-kernels)")
    ap.add_argument("--sweep", action="store_true", help="also time decode/prefill configs")
    args = ap.parse_args(argv)
    if not torch.cuda.is_available():
        print("titaninfer.bench.kernels needs a CUDA GPU")
        return 2
    only = [f.strip() for f in args.only.split(",") if f.strip()]
    unknown = set(only) - set(FAMILIES)
    if unknown:
        ap.error(f"unknown families: {sorted(unknown)}")
    out_dir = args.out or os.path.join("runs", time.strftime("%Y%m%d-%H%M%S") + "-kernels")
    os.makedirs(out_dir, exist_ok=True)

    torch.manual_seed(0)
    ceil = measure_ceilings()
    print(f"ceilings: copy {ceil.copy_gbps:.0f} GB/s, bf16 matmul {ceil.matmul_tflops:.0f} TFLOP/s",
          flush=True)
    b = Bench(ceil)
    runners: dict[str, Callable[[], None]] = {
        "rmsnorm": lambda: bench_rmsnorm(b), "silu": lambda: bench_silu(b),
        "rope": lambda: bench_rope(b), "decode": lambda: bench_decode(b, args.sweep),
        "prefill": lambda: bench_prefill(b, args.sweep), "sampling": lambda: bench_sampling(b),
    }
    for fam in only:
        start = len(b.rows)
        try:
            runners[fam]()
        except Exception as e:  # noqa: BLE001 - report and go on with the other families
            b.info(fam, "(family aborted)", float("nan"), f"error: {e!r}"[:200])
        for r in b.rows[start:]:
            print(f"  {r.family:9s} {r.case:58s} {r.time_us:8.1f} us (eager {r.eager_us:8.1f}) "
                  f"{r.achieved:8.1f} {r.unit:7s} {r.pct_ceiling:5.1f}%  {r.check} {r.note}",
                  flush=True)
        torch.cuda.empty_cache()

    table = _table(b.rows, ceil)
    with open(os.path.join(out_dir, "kernels.json"), "w") as f:
        json.dump({"environment": _environment(), "ceilings": asdict(ceil),
                   "rows": [asdict(r) for r in b.rows]}, f, indent=2)
    with open(os.path.join(out_dir, "kernels.md"), "w") as f:
        cmd = " ".join(["python -m titaninfer.bench.kernels", *(sys.argv[1:] if argv is None else argv)])
        f.write(f"# Kernel benchmarks\n\n`{cmd}`\n\n{json.dumps(_environment())}\n\n{table}\n")
    print("\n" + table)
    print(f"\nwritten: {out_dir}/kernels.json, {out_dir}/kernels.md")
    return 1 if any(r.check.startswith("FAIL") for r in b.rows) else 0


if __name__ == "__main__":
    raise SystemExit(main())
