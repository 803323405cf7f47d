"""A second module with a class named like one in ``app``: generated names must differ."""

from __future__ import annotations

import attrs


@attrs.frozen
class Point:
    """A point in space (this module's ``Point`` has three coordinates)."""

    x: float
    y: float
    z: float
