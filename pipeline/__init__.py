"""llm-fleet-sizing: the 13-step sizing method of *Sizing LLM Inference for Production* as a library.

Each step lives in a module named after its idea; notebooks and the `sizing` CLI are thin
callers of the same functions.
"""

__version__ = "0.1.0"
