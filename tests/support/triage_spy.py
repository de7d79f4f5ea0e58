"""Count the classifications a process runs: the real triage, wrapped (a spy, not a stub)."""

from __future__ import annotations

import pytest

from bouncekeeper.core import classify
from bouncekeeper.core.model import Classification


def count_triages(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """Each message core.classify triages from now on (until the test ends), in order."""
    runs: list[bytes] = []
    real = classify._Triage.run

    def counted(self: classify._Triage) -> Classification:
        runs.append(self.raw)
        return real(self)

    monkeypatch.setattr(classify._Triage, "run", counted)
    return runs
