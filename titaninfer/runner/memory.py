"""How many bytes of GPU memory the KV cache may take.

budget = total * gpu_memory_utilization - memory others hold - our weights
         - the activation peak of the largest step (measured by running it)
         - the sampler's and the CUDA graphs' working memory (estimated from shapes)
"""

from __future__ import annotations

import torch
from torch import nn

from titaninfer.config import ModelConfig
from titaninfer.layers.attention_metadata import AttentionMetadata
from titaninfer.runner.kv_cache import allocate_kv_cache, bytes_per_block

_GRAPH_RESERVE = 256 << 20  # decode-graph activations beyond their logits (measured: tens of MB)


@torch.inference_mode()
def profile_activation_peak(model: nn.Module, cfg: ModelConfig, max_num_batched_tokens: int,
                            max_num_seqs: int, block_size: int, dtype: torch.dtype,
                            device: torch.device) -> int:
    """Run the largest step the scheduler can emit (one prefill of max_num_batched_tokens
    tokens, logits for max_num_seqs rows) on a throwaway cache; return its peak bytes beyond
    what was allocated before (weights) and the throwaway cache itself."""
    t = max(1, min(max_num_batched_tokens, cfg.max_position_embeddings))
    nblk = -(-t // block_size)
    torch.cuda.synchronize(device)
    torch.cuda.empty_cache()
    base = torch.cuda.memory_allocated(device)
    kv = allocate_kv_cache(cfg, nblk, block_size, dtype, device)
    kv_bytes = nblk * bytes_per_block(cfg, block_size, dtype)
    torch.cuda.reset_peak_memory_stats(device)
    ids = torch.zeros(t, dtype=torch.int64, device=device)
    pos = torch.arange(t, dtype=torch.int64, device=device)
    meta = AttentionMetadata(
        slot_mapping=pos.clone(), query_start_loc=torch.tensor([0, t], dtype=torch.int32, device=device),
        seq_lens=torch.tensor([t], dtype=torch.int32, device=device),
        block_tables=torch.arange(nblk, dtype=torch.int32, device=device)[None], num_decodes=0,
        max_query_len=t, max_seq_len=t, query_start_loc_cpu=[0, t], seq_lens_cpu=[t])
    hidden = model(ids, pos, kv, meta)
    rows = min(max_num_seqs, t)
    logits = model.compute_logits(hidden[-rows:])
    # The sampler's worst case (top-p sorts: values, indices, probabilities) on all rows.
    sorted_vals, order = logits.sort(dim=-1, descending=True)
    sorted_vals.softmax(-1).cumsum(-1)
    torch.cuda.synchronize(device)
    peak = torch.cuda.max_memory_allocated(device) - base - kv_bytes
    del kv, hidden, logits, sorted_vals, order, meta
    torch.cuda.empty_cache()
    return int(peak)


def gpu_kv_cache_bytes(utilization: float, device: str | torch.device, activation_peak: int,
                       graph_logits_bytes: int = 0) -> int:
    dev = torch.device(device)
    free, total = torch.cuda.mem_get_info(dev)
    used_by_others = total - free - torch.cuda.memory_reserved(dev)
    budget = (int(total * utilization) - used_by_others - torch.cuda.memory_allocated(dev)
              - activation_peak - graph_logits_bytes - _GRAPH_RESERVE)
    if budget <= 0:
        raise ValueError(f"no GPU memory left for the KV cache at gpu_memory_utilization={utilization} "
                         f"(activation peak {activation_peak / 2**30:.2f} GiB)")
    return budget
