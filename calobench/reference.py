"""Published results a plugin registers for a board (``register_references``)."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Reference:
    """A published result shown on a board beside calobench's rows, never ranked: ``metrics`` maps
    calobench metric names to ``(value, uncertainty)`` measured by the publication's own protocol;
    ``showers_per_s`` / ``device`` its reported generation speed; ``floor`` marks the publication's
    real-vs-real row."""

    dataset: str
    model: str
    source: str
    metrics: dict = field(default_factory=dict)
    showers_per_s: float | None = None
    device: str = ""
    floor: bool = False
    note: str = ""
