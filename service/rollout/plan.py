"""The routing plan: a canary (a version, its share of traffic and its rule) and a shadow.

``stable`` is not part of the plan: it is the active version (models' current pointer), which
only an activation moves. A plan has a ``revision`` that every change raises by one, so a
change can be made conditional on the revision it was decided from (the rule's "decided once").
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, fields
from typing import Any

ROUTING_CHANGED = "routing"
"""The payload of the activation channel's notification of a routing change."""


@dataclass(frozen=True)
class Canary:
    """A version that answers ``weight`` of the requests that pin none; with ``promote_after``
    set, the rule promotes or rolls it back once it has that many feedback labels."""

    version: str
    weight: float
    promote_after: int | None = None
    max_accuracy_drop: float = 0.0


@dataclass(frozen=True)
class Shadow:
    """A version that computes, off the request's path, every request stable answers."""

    version: str


@dataclass(frozen=True)
class Plan:
    """``promoting``: a canary the rule promoted whose activation is not yet done (any
    replica completes it); it is the canary no more, and not yet stable."""

    canary: Canary | None = None
    shadow: Shadow | None = None
    revision: int = 0
    promoting: str | None = None

    def versions(self) -> list[str]:
        """The versions the plan routes to besides stable."""
        return [part.version for part in (self.canary, self.shadow) if part is not None]

    def names(self, version: str) -> str | None:
        """What the plan makes of ``version`` ("canary", "shadow", "promoted canary"), or
        None."""
        if self.canary is not None and self.canary.version == version:
            return "canary"
        if self.shadow is not None and self.shadow.version == version:
            return "shadow"
        if self.promoting == version:
            return "promoted canary"
        return None

    def view(self, stable: str | None) -> dict[str, Any]:
        """GET /routing's answer."""
        return {
            "stable": stable,
            "canary": asdict(self.canary) if self.canary else None,
            "shadow": asdict(self.shadow) if self.shadow else None,
            "revision": self.revision,
        }


def encode(part: Canary | Shadow | None) -> str | None:
    """A plan's part as the store keeps it (JSON text, or NULL)."""
    return None if part is None else json.dumps(asdict(part))


def decode(
    canary: str | None, shadow: str | None, revision: int, promoting: str | None = None
) -> Plan:
    """A plan from the store's columns. Keys this code does not know (written by a newer
    replica) are left out, so an older replica keeps routing."""
    return Plan(
        Canary(**known(json.loads(canary), Canary)) if canary else None,
        Shadow(**known(json.loads(shadow), Shadow)) if shadow else None,
        int(revision),
        promoting,
    )


def known(fields_: dict[str, Any], kind: type) -> dict[str, Any]:
    names = {f.name for f in fields(kind)}
    return {key: value for key, value in fields_.items() if key in names}


def key_point(key: bytes) -> float:
    """Where a routing key falls in [0, 1): the same key always at the same point, keys
    spread evenly. A key goes to the canary when its point is below the canary's weight, so
    raising the weight only ever moves keys from stable to the canary."""
    digest = hashlib.blake2b(key, digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0**64
