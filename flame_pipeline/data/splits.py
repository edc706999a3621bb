"""Deterministic train/test assignment from a stable id (no RNG state, no dependence on order)."""
from __future__ import annotations

import hashlib


def hash_split(stable_id: str, test_fraction: float) -> str | None:
    """"test" for about ``test_fraction`` of ids, else "train"; None when the fraction is 0
    (the source does not dictate a split and curation assigns one)."""
    if test_fraction <= 0.0:
        return None
    u = int.from_bytes(hashlib.sha256(stable_id.encode("utf-8")).digest()[:8], "big") / 2.0**64
    return "test" if u < test_fraction else "train"
