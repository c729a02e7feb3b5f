"""The step loop: schedule -> run the model -> process outputs."""

from titaninfer.engine.engine import LLMEngine

__all__ = ["LLMEngine"]
