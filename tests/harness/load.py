"""Request arrivals shaped like the Azure LLM inference trace (conversation), time-compressed to a
target rate; a seeded Poisson stand-in with the trace's output lengths when the data is absent."""

from __future__ import annotations

import csv
import random
from datetime import datetime

from tests.conftest import SHARED_DATA

CONV = SHARED_DATA / "azure-llm-2023" / "AzureLLMInferenceTrace_conv.csv"


def azure_shaped_arrivals(rate: float, seconds: float, seed: int = 0) -> list[tuple[float, int]]:
    """(arrival second, generated tokens) pairs over ``seconds`` at about ``rate`` requests/s."""
    if CONV.is_file():
        rows = []
        with CONV.open() as fh:
            for row in csv.DictReader(fh):
                rows.append((datetime.fromisoformat(row["TIMESTAMP"][:26]), int(row["GeneratedTokens"])))
                if len(rows) >= int(rate * seconds * 1.5) + 10:
                    break
        t0 = rows[0][0]
        raw = [((t - t0).total_seconds(), n) for t, n in rows]
        native = len(raw) / max(raw[-1][0], 1e-9)
        k = native / rate  # compress or stretch to the target rate, keeping the burst shape
        return [(t * k, n) for t, n in raw if t * k <= seconds]
    rng = random.Random(seed)
    t, out = 0.0, []
    while t < seconds:
        t += rng.expovariate(rate)
        out.append((t, max(1, int(rng.lognormvariate(4.5, 1.0)))))
    return out
