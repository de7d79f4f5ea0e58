"""Helpers that start real servers for the tests (Redis now; the MTAs in their own modules)."""
