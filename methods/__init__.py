"""Alignment methods: one small module each, a config dataclass and a function that runs it."""
