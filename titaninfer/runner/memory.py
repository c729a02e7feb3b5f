"""How many bytes of GPU memory the KV cache may take."""

from __future__ import annotations

import torch

# Room left for activations, the sampler and CUDA graphs when no profiling run has measured
# the largest step (the runner measures it when it can; see ModelRunner.profile_peak).
_ACTIVATION_RESERVE = 2 << 30


def gpu_kv_cache_bytes(utilization: float, device: str | torch.device, activation_peak: int | None = None) -> int:
    """utilization * total memory, minus what is already allocated (weights) and the
    activation peak of the largest step."""
    dev = torch.device(device)
    free, total = torch.cuda.mem_get_info(dev)
    used_by_others = total - free - torch.cuda.memory_reserved(dev)
    budget = int(total * utilization) - used_by_others - torch.cuda.memory_allocated(dev)
    budget -= activation_peak if activation_peak is not None else _ACTIVATION_RESERVE
    if budget <= 0:
        raise ValueError(f"no GPU memory left for the KV cache at gpu_memory_utilization={utilization}")
    return budget
