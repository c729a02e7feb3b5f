"""TitanInfer: a high-performance LLM inference and serving engine."""

from __future__ import annotations

__version__ = "0.1.0"

from titaninfer.llm import LLM
from titaninfer.types import CompletionOutput, RequestOutput, SamplingParams

__all__ = ["LLM", "SamplingParams", "RequestOutput", "CompletionOutput", "__version__"]
