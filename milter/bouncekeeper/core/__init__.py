"""The pure core: parsing, classification, VERP and policy.

Nothing here does I/O, reads the clock or the environment, or imports an adapter library. Callers pass
in the bytes, the keys and the current time. An import-linter contract in pyproject.toml keeps it so.
"""
