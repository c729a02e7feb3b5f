"""Speed of light: the physical floor of a run from the model's shapes, the steps that ran
and the device's measured ceilings (see docs/bench.md for the formula written out).

For every engine step with chunks (q_i new tokens appended after c_i tokens already in the
KV cache; s_i = 1 if the chunk samples a token):

    T     = sum q_i                      tokens through the decoder
    S     = sum s_i                      rows through the LM head
    bytes = W_layers + [S > 0] * W_head  weights, read once per step
          + kv_tok * sum (c_i + q_i)     KV cache: c_i read, q_i written
    FLOPs = 2 * P_layers * T + 2 * P_head * S
          + 4 * L * Hq * D * sum (q_i * c_i + q_i * (q_i + 1) / 2)   causal attention
    floor = max(bytes / bandwidth, FLOPs / compute)

P_layers are the parameters of the decoder's linear layers (qkv, o, gate, up, down),
P_head = V * H, kv_tok = 2 * L * Hk * D * dtype_bytes. Norms, embeddings gathers, rotary
and activations are left out: they are small, and the floor must not overestimate.
`speed_of_light_s` is the sum of the per-step floors; `sol_ratio = speed_of_light_s / measured_s`.

Steps are either recorded from the engine (what actually ran) or reconstructed by
`simulate_schedule`, a model of continuous batching with chunked prefill.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from titaninfer.config import ModelConfig


@dataclass(frozen=True)
class Chunk:
    num_tokens: int  # q: new tokens computed in this step
    context_len: int  # c: tokens already in the KV cache before this chunk
    sample: bool = True  # the chunk ends at the last known token: a token is sampled


Step = Sequence[Chunk]


@dataclass(frozen=True)
class ModelCost:
    """Per-model constants of the floor (see the module docstring)."""

    layer_linear_params: int  # P_layers
    head_params: int  # P_head = V * H
    kv_bytes_per_token: int  # all layers, K and V
    attn_flops_per_pair: int  # 4 * L * Hq * D: FLOPs per (query, key) pair, all layers
    dtype_bytes: int

    @staticmethod
    def from_config(cfg: ModelConfig, dtype_bytes: int) -> ModelCost:
        h, i = cfg.hidden_size, cfg.intermediate_size
        per_layer = h * (cfg.q_size + 2 * cfg.kv_size) + cfg.q_size * h + 3 * h * i
        return ModelCost(
            layer_linear_params=cfg.num_layers * per_layer,
            head_params=cfg.vocab_size * h,
            kv_bytes_per_token=cfg.kv_bytes_per_token(dtype_bytes),
            attn_flops_per_pair=4 * cfg.num_layers * cfg.num_heads * cfg.head_dim,
            dtype_bytes=dtype_bytes,
        )


@dataclass(frozen=True)
class StepCost:
    bytes: float
    flops: float


def step_cost(cost: ModelCost, step: Step) -> StepCost:
    tokens = sum(c.num_tokens for c in step)
    sampled = sum(1 for c in step if c.sample)
    pairs = sum(c.num_tokens * c.context_len + c.num_tokens * (c.num_tokens + 1) // 2 for c in step)
    kv_tokens = sum(c.context_len + c.num_tokens for c in step)
    weights = cost.layer_linear_params + (cost.head_params if sampled else 0)
    nbytes = weights * cost.dtype_bytes + cost.kv_bytes_per_token * kv_tokens
    flops = 2 * cost.layer_linear_params * tokens + 2 * cost.head_params * sampled + cost.attn_flops_per_pair * pairs
    return StepCost(float(nbytes), float(flops))


@dataclass(frozen=True)
class SolResult:
    speed_of_light_s: float
    num_steps: int
    total_bytes: float
    total_flops: float
    num_compute_bound_steps: int  # steps where FLOPs / compute > bytes / bandwidth
    source: str  # "recorded" (engine steps) or "reconstructed" (simulate_schedule)

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def speed_of_light(cost: ModelCost, steps: Sequence[Step], bw_bytes_per_s: float, flops_per_s: float,
                   source: str) -> SolResult:
    total = 0.0
    nbytes = flops = 0.0
    compute_bound = 0
    for step in steps:
        sc = step_cost(cost, step)
        t_bw, t_fl = sc.bytes / bw_bytes_per_s, sc.flops / flops_per_s
        total += max(t_bw, t_fl)
        compute_bound += t_fl > t_bw
        nbytes += sc.bytes
        flops += sc.flops
    return SolResult(total, len(steps), nbytes, flops, compute_bound, source)


def _sequential_steps(prompt_len: int, output_len: int, budget: int) -> list[list[Chunk]]:
    steps: list[list[Chunk]] = []
    done = 0
    while done < prompt_len:
        q = min(budget, prompt_len - done)
        steps.append([Chunk(q, done, done + q == prompt_len)])
        done += q
    # Token k (k >= 2) is produced by a decode step that feeds token k-1 at position P + k - 2.
    steps.extend([Chunk(1, prompt_len + k, True)] for k in range(output_len - 1))
    return steps


def simulate_schedule(prompt_lens: Sequence[int], output_lens: Sequence[int], max_num_batched_tokens: int,
                      max_num_seqs: int, sequential: bool = False) -> list[list[Chunk]]:
    """Steps an engine with continuous batching and chunked prefill would run: each step,
    running decodes first (1 token each), then unfinished prefills, then waiting requests
    admitted in order while the token budget and sequence slots last. The KV pool is assumed
    large enough (no preemption). `sequential`: one request at a time (latency runs)."""
    if sequential:
        return [s for p, o in zip(prompt_lens, output_lens, strict=True) for s in _sequential_steps(p, o, max_num_batched_tokens)]
    waiting = list(range(len(prompt_lens)))
    computed = [0] * len(prompt_lens)
    generated = [0] * len(prompt_lens)
    running: list[int] = []
    steps: list[list[Chunk]] = []
    while waiting or running:
        budget = max_num_batched_tokens
        step: list[tuple[int, Chunk]] = []
        for decode_pass in (True, False):
            for r in running:
                if budget == 0:
                    break
                remaining = prompt_lens[r] + generated[r] - computed[r]
                if (remaining == 1) != decode_pass:
                    continue
                q = min(remaining, budget)
                step.append((r, Chunk(q, computed[r], q == remaining)))
                budget -= q
        while waiting and budget > 0 and len(running) < max_num_seqs:
            r = waiting.pop(0)
            q = min(prompt_lens[r], budget)
            running.append(r)
            step.append((r, Chunk(q, 0, q == prompt_lens[r])))
            budget -= q
        for r, c in step:
            computed[r] += c.num_tokens
            if c.sample:
                generated[r] += 1
        running = [r for r in running if generated[r] < output_lens[r]]
        steps.append([c for _, c in step])
    return steps
