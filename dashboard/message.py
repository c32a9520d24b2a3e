"""One MQTT message as the dashboard's ingest parsed it, and its dedupe key."""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Message:
    """One MQTT message as the ingest parsed it (``payload`` is a dict, or the status string)."""

    device: str
    kind: str  # expression | summary | stats | status | attention | alert (the device's)
    payload: Any
    raw: bytes
    received: float = field(default_factory=time.time)
    retained: bool = False

    @property
    def ts(self) -> float:
        if isinstance(self.payload, dict) and isinstance(self.payload.get("ts"), (int, float)):
            return float(self.payload["ts"])
        return self.received

    @property
    def seq(self) -> int | None:
        s = self.payload.get("seq") if isinstance(self.payload, dict) else None
        return s if isinstance(s, int) and not isinstance(s, bool) else None

    @property
    def dkey(self) -> str:
        if self.seq is not None:
            return f"{self.seq}:{self.ts:.3f}"
        return "h" + hashlib.blake2b(self.raw, digest_size=10).hexdigest()
