"""safealign: a benchmark suite for safety-constrained LLM alignment (SACPO and its baselines)."""

__version__ = "0.1.0"


class BenchError(Exception):
    """A user-facing problem: the CLI prints its one-line message and exits non-zero."""
