"""A pure text/event-stream parser: lines in, (event, data) pairs out; and the reconnect delay policy."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

RECONNECT_FIRST_SECONDS = 1.0
RECONNECT_MAX_SECONDS = 15.0  # the cap of the exponential backoff between reconnects
RECONNECT_GIVE_UP_SECONDS = 300.0  # without a single good connection for this long, the watch fails


@dataclass
class Event:
    name: str
    data: dict[str, Any]
    id: str | None  # the last event id seen so far (the spec's "last event ID buffer"), for Last-Event-ID


def events(lines: Iterable[str]) -> Iterator[Event]:
    """Yields each complete event whose data is a JSON object; comments and `retry:` lines are skipped,
    multi-line data is joined with newlines, and an `id:` persists to later events until the next one (as the
    spec says), so `Event.id` is what a reconnect sends as Last-Event-ID."""
    name, data, last_id = "message", list[str](), None
    for raw in lines:
        line = raw.rstrip("\r")
        if not line:
            if data:
                try:
                    value = json.loads("\n".join(data))
                except ValueError:
                    value = None
                if isinstance(value, dict):
                    yield Event(name, value, last_id)
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
            elif field == "id" and "\0" not in value_text:
                last_id = value_text or None


def parse(lines: Iterable[str]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(event, data) for each complete event whose data is a JSON object."""
    for event in events(lines):
        yield event.name, event.data


def reconnect_delay(failures: int) -> float:
    """Seconds to wait before reconnect attempt number `failures` (1, 2, ...): doubling from
    RECONNECT_FIRST_SECONDS, capped at RECONNECT_MAX_SECONDS."""
    return min(RECONNECT_MAX_SECONDS, RECONNECT_FIRST_SECONDS * 2.0 ** max(0, failures - 1))
