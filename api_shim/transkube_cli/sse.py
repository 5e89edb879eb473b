"""A pure text/event-stream parser: lines in, (event, data) pairs out."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import Any


def parse(lines: Iterable[str]) -> Iterator[tuple[str, dict[str, Any]]]:
    """Yields (event, data) for each complete event whose data is a JSON object; comments, `retry:` and `id:`
    lines are skipped, multi-line data is joined with newlines (as the spec says)."""
    name, data = "message", list[str]()
    for raw in lines:
        line = raw.rstrip("\r")
        if not line:
            if data:
                try:
                    value = json.loads("\n".join(data))
                except ValueError:
                    value = None
                if isinstance(value, dict):
                    yield name, value
            name, data = "message", list[str]()
        elif line.startswith(":"):
            continue
        else:
            field, _, value_text = line.partition(":")
            value_text = value_text.removeprefix(" ")
            if field == "event":
                name = value_text
            elif field == "data":
                data.append(value_text)
