"""Dialect-aware INSERT … ON CONFLICT DO UPDATE; defined in ``projections.upsert`` so read models can use it."""

from __future__ import annotations

from projections.upsert import upsert_statement

__all__ = ["upsert_statement"]
