"""JSON values as types: what metrics.json, audit.jsonl, capacity.json and the other JSON artefacts hold.

``JSON`` is exact (a recursive union): a value built for a JSON file is checked against it. A record
that code reads back by key, whose values it narrows where it uses them (an audit line, a block of
metrics.json), is a ``Record``: the one place the package names a loose JSON object.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, TypeAlias  # Any: Record, the one loose JSON object

JSON: TypeAlias = "Mapping[str, JSON] | Sequence[JSON] | str | int | float | bool | None"
"""A value a JSON file can hold (read-only containers, so a ``dict[str, float]`` is one)."""
Scalar: TypeAlias = "str | int | float | bool | None"
"""A JSON leaf."""
Record: TypeAlias = dict[str, Any]  # Any: a JSON object read back by key; each use narrows its values
"""A JSON object read back by key (audit lines, the wfo and survivorship blocks)."""
