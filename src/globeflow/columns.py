"""One alias table for tabular inputs, shared by every command.

Columns are matched case-insensitively; the first alias present wins.
"""

from __future__ import annotations

from collections.abc import Iterable

ALIASES: dict[str, tuple[str, ...]] = {
    "id": ("id", "img_id", "path"),
    "lat": ("lat", "latitude"),
    "lon": ("lon", "lng", "longitude"),
    "group": ("group", "author"),
    "text": ("text",),
    "pred_lat": ("pred_lat",),
    "pred_lon": ("pred_lon",),
    "true_lat": ("true_lat",),
    "true_lon": ("true_lon",),
}


def resolve_columns(columns: Iterable[str], wanted: Iterable[str] = ALIASES) -> dict[str, str]:
    """Map canonical names → actual column names present in ``columns`` (missing ones omitted)."""
    lower = {c.lower().strip(): c for c in columns}
    found: dict[str, str] = {}
    for canonical in wanted:
        for alias in ALIASES.get(canonical, (canonical,)):
            if alias in lower:
                found[canonical] = lower[alias]
                break
    return found
