"""Evaluation: generation, judges, and the aggregators behind the paper's tables and figures."""
