"""Benchmark configs (TOML files in this folder), shipped with the package."""
