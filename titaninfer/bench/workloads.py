"""The standard workloads of BENCHMARKS.md and how a spec becomes concrete requests.

A `WorkloadSpec` is pure description (lengths, counts, arrival rate, seed). `materialize`
turns it into `BenchRequest`s: random prompt token ids drawn from a seeded generator, so the
same spec and seed give byte-identical prompts on every machine and for every engine.

Invariants:
- `materialize(spec, vocab)` is a pure function of (spec, vocab_size, max_model_len).
- every prompt has >= 1 token and prompt_len + output_len <= max_model_len (lengths that do
  not fit are clipped for range-drawn workloads, and dropped with a note for explicit lists,
  i.e. long-context on a short-context model).
- arrival offsets are non-decreasing; all 0.0 when `request_rate` is infinite.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

import numpy as np

# Token ids below this are avoided: low ids are special tokens (BOS/EOS/pad, chat markers)
# in every tokenizer we ship, and an accidental EOS-like prompt is not the workload we mean.
_MIN_TOKEN_ID = 100


@dataclass(frozen=True)
class WorkloadSpec:
    name: str
    num_requests: int
    input_len: tuple[int, int]  # inclusive range; lo == hi for a fixed length
    output_len: tuple[int, int]
    request_rate: float = math.inf  # requests/s, Poisson arrivals; inf: all at t=0
    seed: int = 0
    ignore_eos: bool = True
    distribution: str = "uniform"  # uniform | sharegpt (lognormal fit, clipped to the ranges)
    input_lens: tuple[int, ...] = ()  # explicit prompt lengths (overrides input_len)
    shared_prefix_len: int = 0  # shared-prefix: tokens every request of a group shares
    num_groups: int = 1
    max_concurrency: int | None = None
    description: str = ""

    def __post_init__(self) -> None:
        if self.num_requests < 1:
            raise ValueError(f"--num-requests must be >= 1, got {self.num_requests}")
        for what, (lo, hi) in (("input", self.input_len), ("output", self.output_len)):
            if lo < 1 or hi < lo:
                raise ValueError(f"bad {what} length range {lo}:{hi} (need 1 <= lo <= hi)")
        if not (self.request_rate > 0):
            raise ValueError(f"--request-rate must be > 0 (or inf), got {self.request_rate}")
        if self.max_concurrency is not None and self.max_concurrency < 1:
            raise ValueError(f"--max-concurrency must be >= 1, got {self.max_concurrency}")
        if self.distribution not in ("uniform", "sharegpt"):
            raise ValueError(f"unknown length distribution {self.distribution!r}")
        if self.num_groups < 1 or self.shared_prefix_len < 0:
            raise ValueError("shared-prefix needs num_groups >= 1 and prefix length >= 0")

    def replace(self, **changes: object) -> WorkloadSpec:
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["request_rate"] = None if math.isinf(self.request_rate) else self.request_rate
        return d


STANDARD_WORKLOADS: dict[str, WorkloadSpec] = {
    "decode-latency": WorkloadSpec(
        "decode-latency", 1, (128, 128), (256, 256),
        description="one request, 128 prompt tokens, 256 output tokens, ignore EOS"),
    "offline-random": WorkloadSpec(
        "offline-random", 256, (100, 1024), (100, 1024),
        description="256 requests, prompt/output lengths uniform in [100, 1024], random ids, all at once"),
    "serving-sharegpt-like": WorkloadSpec(
        "serving-sharegpt-like", 200, (4, 2048), (4, 1024), request_rate=4.0, distribution="sharegpt",
        description="ShareGPT-like lognormal lengths (median 200 in / 150 out), Poisson arrivals, streaming"),
    "shared-prefix": WorkloadSpec(
        "shared-prefix", 64, (32, 128), (64, 64), shared_prefix_len=1024, num_groups=4,
        description="4 groups sharing a 1024-token system prompt, 32-128 unique tokens each, 64 out"),
    "long-context": WorkloadSpec(
        "long-context", 3, (32768, 32768), (128, 128), input_lens=(32768, 65536, 131072),
        description="single requests with 32K, 64K and 128K-token prompts, 128 out"),
}


def get_workload(name: str) -> WorkloadSpec:
    try:
        return STANDARD_WORKLOADS[name]
    except KeyError:
        raise ValueError(f"unknown workload {name!r}; known: {', '.join(STANDARD_WORKLOADS)}") from None


def parse_range(text: str) -> tuple[int, int]:
    """'100:1024' -> (100, 1024); '128' -> (128, 128). Raises ValueError."""
    parts = text.split(":")
    try:
        if len(parts) == 1:
            v = int(parts[0])
            return v, v
        if len(parts) == 2:
            return int(parts[0]), int(parts[1])
    except ValueError:
        pass
    raise ValueError(f"bad length range {text!r}; use N or LO:HI")


def apply_overrides(spec: WorkloadSpec, *, num_requests: int | None = None, input_len: int | None = None,
                    input_len_range: str | None = None, output_len: int | None = None,
                    output_len_range: str | None = None, request_rate: float | None = None,
                    seed: int | None = None, max_concurrency: int | None = None,
                    prefix_len: int | None = None, num_groups: int | None = None) -> WorkloadSpec:
    """The spec with command-line overrides applied (None: keep the standard value)."""
    ch: dict[str, object] = {}
    if num_requests is not None:
        ch["num_requests"] = num_requests
    if input_len is not None:
        ch["input_len"] = (input_len, input_len)
    if input_len_range is not None:
        ch["input_len"] = parse_range(input_len_range)
    if "input_len" in ch:
        ch["input_lens"] = ()  # an explicit length replaces long-context's list
        ch["distribution"] = "uniform"
    if output_len is not None:
        ch["output_len"] = (output_len, output_len)
    if output_len_range is not None:
        ch["output_len"] = parse_range(output_len_range)
    if request_rate is not None:
        ch["request_rate"] = request_rate
    if seed is not None:
        ch["seed"] = seed
    if max_concurrency is not None:
        ch["max_concurrency"] = max_concurrency
    if prefix_len is not None:
        ch["shared_prefix_len"] = prefix_len
    if num_groups is not None:
        ch["num_groups"] = num_groups
    return spec.replace(**ch) if ch else spec


@dataclass
class BenchRequest:
    index: int
    prompt_ids: list[int]
    output_len: int
    arrival_offset_s: float = 0.0
    group: int = 0

    @property
    def prompt_len(self) -> int:
        return len(self.prompt_ids)


@dataclass
class Workload:
    spec: WorkloadSpec
    requests: list[BenchRequest]
    notes: list[str] = field(default_factory=list)

    @property
    def total_prompt_tokens(self) -> int:
        return sum(r.prompt_len for r in self.requests)

    @property
    def total_output_tokens(self) -> int:
        return sum(r.output_len for r in self.requests)


def _lengths(rng: np.random.Generator, lo: int, hi: int, n: int, dist: str, median: float, sigma: float) -> list[int]:
    if dist == "sharegpt":
        # Lognormal is the usual fit of ShareGPT conversation lengths (long right tail).
        x = rng.lognormal(math.log(median), sigma, n)
        return [int(v) for v in np.clip(np.round(x), lo, hi)]
    return [int(v) for v in rng.integers(lo, hi + 1, n)]


def materialize(spec: WorkloadSpec, vocab_size: int, max_model_len: int) -> Workload:
    """Concrete requests for `spec` (see the module docstring for the invariants)."""
    rng = np.random.default_rng(spec.seed)
    lo_id = _MIN_TOKEN_ID if vocab_size > 2 * _MIN_TOKEN_ID else 0
    notes: list[str] = []
    n = spec.num_requests
    if spec.input_lens:
        # Explicit lengths (long-context): cycle through them, drop what the model cannot hold.
        fits = [L for L in spec.input_lens if L + spec.output_len[0] <= max_model_len]
        for L in spec.input_lens:
            if L not in fits:
                notes.append(f"skipped {L}-token prompt: the model's context is {max_model_len} tokens")
        if not fits:
            raise ValueError(f"workload {spec.name}: no prompt length fits the model's context "
                             f"({max_model_len} tokens); pass --input-len")
        in_lens = [fits[i % len(fits)] for i in range(n if n != len(spec.input_lens) else len(fits))]
    else:
        in_lens = _lengths(rng, *spec.input_len, n, spec.distribution, 200.0, 1.0)
    out_lens = _lengths(rng, *spec.output_len, len(in_lens), spec.distribution, 150.0, 0.9)

    prefixes = [rng.integers(lo_id, vocab_size, spec.shared_prefix_len).tolist() for _ in range(spec.num_groups)]
    if spec.request_rate == math.inf:
        arrivals = [0.0] * len(in_lens)
    else:
        arrivals = np.cumsum(rng.exponential(1.0 / spec.request_rate, len(in_lens))).tolist()
        arrivals = [a - arrivals[0] for a in arrivals]  # the first request arrives at t=0

    reqs: list[BenchRequest] = []
    clipped = 0
    for i, (li, lo) in enumerate(zip(in_lens, out_lens, strict=True)):
        group = i % spec.num_groups
        prefix = prefixes[group] if spec.shared_prefix_len else []
        total_in = len(prefix) + li
        if total_in + lo > max_model_len:
            clipped += 1
            lo = max(1, min(lo, max_model_len - total_in))
            total_in = min(total_in, max_model_len - lo)
            li = max(1, total_in - len(prefix))
        ids = prefix + rng.integers(lo_id, vocab_size, li).tolist()
        reqs.append(BenchRequest(i, [int(t) for t in ids[: max_model_len - lo]], int(lo), float(arrivals[i]), group))
    if clipped:
        notes.append(f"{clipped} request(s) clipped to the model's context of {max_model_len} tokens")
    return Workload(spec, reqs, notes)
