"""Token sampling for a batch of rows, vectorised in PyTorch (CPU or GPU, no per-row host
round trip: every host list reaches the device in one pinned, asynchronous copy per step).

Order of operations per row (as vLLM and Hugging Face apply them):
  logprobs of the raw logits -> penalties (repetition, presence, frequency) -> greedy argmax,
  or temperature -> top-k -> top-p -> min-p -> draw.
Draws use the exponential race (argmax p_i / E_i with E_i ~ Exp(1)), which samples exactly
from p. A row with a seed draws its E from a generator seeded by (seed, index of the token
being sampled), so its tokens do not depend on batching, chunking or preemption.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import torch

from titaninfer.layers.dispatch import use_triton
from titaninfer.runner.batch import host_to_device
from titaninfer.types import SamplingParams, TokenLogprobs

_MASK64 = (1 << 64) - 1


def mix_seed(seed: int, offset: int) -> int:
    """splitmix64 of (seed, offset) -> a 63-bit seed; nearby inputs give unrelated streams."""
    z = (seed * 0x9E3779B97F4A7C15 + offset + 1) & _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return (z ^ (z >> 31)) & ((1 << 63) - 1)


@dataclass
class SamplingRow:
    """One row to sample: its parameters and what penalties need to see."""

    params: SamplingParams
    prompt_token_ids: list[int]
    output_token_ids: list[int]  # tokens generated so far and known on the host
    index: int | None = None  # index of the token being sampled (default: len(output_token_ids))

    @property
    def token_index(self) -> int:
        return len(self.output_token_ids) if self.index is None else self.index


def _idx(values: list[int], device: torch.device) -> torch.Tensor:
    """int64 tensor on `device` through a pinned, asynchronous copy (torch.tensor(list,
    device=cuda) copies from pageable memory, which waits for all queued GPU work)."""
    return host_to_device(np.asarray(values, dtype=np.int64), device)


def _f32(values: list[float], device: torch.device) -> torch.Tensor:
    return host_to_device(np.asarray(values, dtype=np.float32), device, torch.float32)


def _fast_path_ok(p: SamplingParams) -> bool:
    """Rows the fused device kernel handles: greedy, temperature, min-p, seeds."""
    return (p.top_p == 1.0 and p.top_k in (0, 1) and p.repetition_penalty == 1.0
            and p.presence_penalty == 0.0 and p.frequency_penalty == 0.0)


class Sampler:
    def __init__(self, device: torch.device | str, seed: int = 0) -> None:
        self.device = torch.device(device)
        self.generator = torch.Generator(device=self.device).manual_seed(seed)
        self._host_rng = np.random.default_rng(seed)

    @torch.no_grad()
    def __call__(self, logits: torch.Tensor, rows: list[SamplingRow]
                 ) -> tuple[list[int], list[TokenLogprobs | None]]:
        """logits: [N, V] float32 -> (token id per row, logprobs per row or None)."""
        tokens, logprobs = self.sample(logits, rows)
        return tokens.tolist(), logprobs

    @torch.no_grad()
    def sample(self, logits: torch.Tensor, rows: list[SamplingRow]
               ) -> tuple[torch.Tensor, list[TokenLogprobs | None]]:
        """Like __call__ but leaves the tokens on the device (no synchronisation unless a
        row asked for logprobs)."""
        # Each row takes one path whatever else is in the batch, so a seeded row's tokens
        # never depend on its neighbours.
        fused = [i for i, r in enumerate(rows) if _fast_path_ok(r.params)] if use_triton(logits) else []
        if all(r.params.greedy for r in rows):
            # All greedy: the torch path is (penalties, then) one argmax, the first index of
            # the max as the fused kernel's greedy rows, with no parameter copies and no
            # fused-kernel launches (at batch 1 those were ~3% of a ~1 ms decode step).
            tokens = self._sample_torch(logits, rows)
        elif len(fused) == len(rows):
            tokens = self._sample_fused(logits, rows)
        elif not fused:
            tokens = self._sample_torch(logits, rows)
        else:
            fused_set = set(fused)
            rest = [i for i in range(len(rows)) if i not in fused_set]
            tokens = torch.empty(len(rows), dtype=torch.long, device=logits.device)
            fi, ri = _idx(fused, logits.device), _idx(rest, logits.device)
            tokens[fi] = self._sample_fused(logits[fi], [rows[i] for i in fused])
            tokens[ri] = self._sample_torch(logits[ri], [rows[i] for i in rest])
        out_lp: list[TokenLogprobs | None] = [None] * len(rows)
        lp_rows = [i for i, r in enumerate(rows) if r.params.logprobs is not None]
        if lp_rows:
            raw = torch.log_softmax(logits[_idx(lp_rows, logits.device)], dim=-1)
            toks = tokens[_idx(lp_rows, logits.device)].tolist()
            for j, i in enumerate(lp_rows):
                out_lp[i] = _token_logprobs(raw[j], toks[j], rows[i].params.logprobs or 0)
        return tokens, out_lp

    def _sample_fused(self, logits: torch.Tensor, rows: list[SamplingRow]) -> torch.Tensor:
        from titaninfer.kernels.sampling import sample_tokens

        n = len(rows)
        temp = np.empty(n, dtype=np.float32)
        min_p = np.empty(n, dtype=np.float32)
        seeds = self._host_rng.integers(0, 1 << 62, size=n, dtype=np.int64)
        offsets = np.empty(n, dtype=np.int64)
        for i, r in enumerate(rows):
            p = r.params
            temp[i] = 0.0 if p.greedy else p.temperature
            min_p[i] = p.min_p
            offsets[i] = r.token_index
            if p.seed is not None:
                seeds[i] = p.seed & ((1 << 63) - 1)
        floats = host_to_device(np.stack([temp, min_p]), self.device)
        ints = host_to_device(np.stack([seeds, offsets]), self.device)
        return sample_tokens(logits.float(), floats[0], floats[1], ints[0], ints[1])

    def _sample_torch(self, logits: torch.Tensor, rows: list[SamplingRow]) -> torch.Tensor:
        n, vocab = logits.shape
        logits = self._apply_penalties(logits, rows)
        greedy = [r.params.greedy for r in rows]
        tokens = torch.empty(n, dtype=torch.long, device=logits.device)
        greedy_idx = [i for i, g in enumerate(greedy) if g]
        sample_idx = [i for i, g in enumerate(greedy) if not g]
        if len(greedy_idx) == n:
            if use_triton(logits):  # one kernel over all of each row (torch's reduce: one block per row)
                from titaninfer.kernels.argmax import greedy_argmax

                return greedy_argmax(logits)
            return logits.argmax(dim=-1)
        if greedy_idx:
            gi = _idx(greedy_idx, logits.device)
            tokens[gi] = logits[gi].argmax(dim=-1)
        if sample_idx:
            si = _idx(sample_idx, logits.device)
            probs = self._filtered_probs(logits[si], [rows[i].params for i in sample_idx])
            expo = self._exponentials([rows[i] for i in sample_idx], vocab)
            tokens[si] = (probs / expo).argmax(dim=-1)
        return tokens

    # ------------------------------------------------------------------ steps
    def _apply_penalties(self, logits: torch.Tensor, rows: list[SamplingRow]) -> torch.Tensor:
        """All penalised rows at once: their token ids go to the device in one flat copy
        (pinned, asynchronous), counts come from one scatter-add; no per-row transfer."""
        idx = [i for i, r in enumerate(rows) if r.params.repetition_penalty != 1.0
               or r.params.presence_penalty != 0.0 or r.params.frequency_penalty != 0.0]
        if not idx:
            return logits
        logits = logits.clone()
        n, vocab, dev = len(idx), logits.shape[1], logits.device

        def scatter_ids(lists: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
            """(row, token id) pairs of every id in `lists`, on the device."""
            lens = np.fromiter((len(t) for t in lists), dtype=np.int64, count=n)
            flat = np.fromiter(itertools.chain.from_iterable(lists), dtype=np.int64, count=int(lens.sum()))
            return (host_to_device(np.repeat(np.arange(n, dtype=np.int64), lens), dev),
                    host_to_device(flat, dev))

        params = [rows[i].params for i in idx]
        out_rows, out_ids = scatter_ids([rows[i].output_token_ids for i in idx])
        counts = torch.zeros(n, vocab, device=dev)
        counts.index_put_((out_rows, out_ids), torch.ones(out_ids.shape[0], device=dev), accumulate=True)
        coef = host_to_device(np.array([[p.repetition_penalty, p.frequency_penalty, p.presence_penalty]
                                        for p in params], dtype=np.float32), dev, torch.float32)
        rep, freq, pres = coef[:, 0:1], coef[:, 1:2], coef[:, 2:3]
        rows_t = _idx(idx, dev)
        sub = logits[rows_t]
        if any(p.repetition_penalty != 1.0 for p in params):
            # Rows with repetition_penalty == 1 are unchanged by this (x / 1, x * 1).
            seen = counts > 0
            p_rows, p_ids = scatter_ids([rows[i].prompt_token_ids for i in idx])
            seen[p_rows, p_ids] = True
            sub = torch.where(seen, torch.where(sub > 0, sub / rep, sub * rep), sub)
        sub = sub - freq * counts - pres * (counts > 0).float()
        logits[rows_t] = sub
        return logits

    @staticmethod
    def _filtered_probs(logits: torch.Tensor, params: list[SamplingParams]) -> torch.Tensor:
        dev = logits.device
        temp = _f32([p.temperature for p in params], dev).unsqueeze(1)
        logits = logits / temp
        top_k = [p.top_k for p in params]
        if any(k > 0 for k in top_k):
            k = _idx([kk if kk > 0 else logits.shape[1] for kk in top_k], dev)
            k = k.clamp(max=logits.shape[1])
            kth = logits.sort(dim=-1, descending=True).values.gather(1, (k - 1).unsqueeze(1))
            logits = logits.masked_fill(logits < kth, float("-inf"))
        top_p = [p.top_p for p in params]
        if any(tp < 1.0 for tp in top_p):
            sorted_logits, order = logits.sort(dim=-1, descending=True)
            sorted_probs = sorted_logits.softmax(-1)
            before = sorted_probs.cumsum(-1) - sorted_probs  # mass strictly before each token
            tp = _f32(top_p, dev).unsqueeze(1)
            drop_sorted = before >= tp  # keeps the smallest prefix whose mass reaches top_p
            drop = torch.zeros_like(drop_sorted).scatter(1, order, drop_sorted)
            logits = logits.masked_fill(drop, float("-inf"))
        probs = logits.softmax(-1)
        min_p = [p.min_p for p in params]
        if any(m > 0 for m in min_p):
            mp = _f32(min_p, dev).unsqueeze(1)
            probs = probs.masked_fill(probs < mp * probs.max(dim=-1, keepdim=True).values, 0.0)
        return probs

    def _exponentials(self, rows: list[SamplingRow], vocab: int) -> torch.Tensor:
        out = torch.empty(len(rows), vocab, device=self.device)
        unseeded = [i for i, r in enumerate(rows) if r.params.seed is None]
        if unseeded:
            block = torch.empty(len(unseeded), vocab, device=self.device).exponential_(generator=self.generator)
            out[_idx(unseeded, self.device)] = block
        for i, r in enumerate(rows):
            if r.params.seed is not None:
                assert isinstance(r.params.seed, int)
                g = torch.Generator(device=self.device).manual_seed(
                    mix_seed(r.params.seed, r.token_index))
                out[i].exponential_(generator=g)
        return out.clamp_(min=1e-10)


def _token_logprobs(logprobs: torch.Tensor, token: int, top_n: int) -> TokenLogprobs:
    lp = float(logprobs[token])
    rank = int((logprobs > lp).sum()) + 1
    top: list[tuple[int, float]] = []
    if top_n > 0:
        vals, ids = logprobs.topk(top_n)
        top = list(zip(ids.tolist(), vals.tolist(), strict=True))
    return TokenLogprobs(token_id=token, logprob=lp, rank=rank, top=top)
