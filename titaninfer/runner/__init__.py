"""Model execution: batch inputs and attention metadata, the KV cache tensors, sampling."""
