"""corral: run, babysit and route a fleet of OpenAI-compatible LLM inference servers."""

__version__ = "0.1.0"
