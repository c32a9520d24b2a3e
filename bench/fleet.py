"""The simulated fleet's traffic (``fer-edge bench dashboard``): when each device publishes what.

Per device (defaults from the daemon's config): 1-8 faces (uniform), each face an expression event every
10 s at most and on changes (exponential gaps, mean 5 s), a summary and a stats message every 30 s. About
1 message/s per device. With ``attention`` (the history bench: every rollup column filled, as for a driver
camera) also an attention message every 20 s (PERCLOS, now and then a blink, long closure, yawn or off-road
glance) and an ``attention`` block in each summary. The live bench publishes ``events`` in real time into a
broker; the history bench writes days of them through the dashboard's store, stamped with their scheduled time.
"""

from __future__ import annotations

import heapq
import random
from typing import Iterator

LABELS = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
WEIGHTS = (0.04, 0.01, 0.03, 0.25, 0.1, 0.07, 0.5)
ATTENTION_S = 20.0  # between one device's attention messages (with ``attention``)
EVENTS = (("blink", 0.2, 0.5), ("long_closure", 1.2, 0.03), ("yawn", 2.0, 0.02), ("off_road", 3.5, 0.02))


class Fleet:
    """``devices`` simulated devices named ``<name>-0000``...; ``faces``: faces per device (None: 1-8 drawn)."""

    def __init__(self, devices: int, seed: int = 0, name: str = "sim", faces: list[int] | None = None,
                 attention: bool = False):
        self.rng = random.Random(seed)
        self.attention = attention
        self.names = [f"{name}-{d:04d}" for d in range(devices)]
        self.faces = list(faces) if faces else [self.rng.randint(1, 8) for _ in range(devices)]
        self.seq = {(n, k): 0 for n in self.names for k in ("expression", "summary", "attention")}
        self.t0 = 0.0

    def events(self, t0: float, duration: float) -> Iterator[tuple[float, int, str, int]]:
        """``(time, device index, kind, face)`` of every message from ``t0`` for ``duration`` s, in time order."""
        self.t0 = t0
        rng = self.rng
        heap: list[tuple[float, int, str, int]] = []
        for d in range(len(self.names)):
            for f in range(self.faces[d]):
                heap.append((t0 + rng.uniform(0, 5), d, "expression", f))
            heap.append((t0 + rng.uniform(0, 30), d, "summary", 0))
            heap.append((t0 + rng.uniform(0, 30), d, "stats", 0))
            if self.attention:
                heap.append((t0 + rng.uniform(0, ATTENTION_S), d, "attention", 0))
        heapq.heapify(heap)
        while heap and heap[0][0] < t0 + duration:
            at, d, kind, f = heapq.heappop(heap)
            yield at, d, kind, f
            gap = min(10.0, rng.expovariate(1 / 5.0)) if kind == "expression" else \
                ATTENTION_S if kind == "attention" else 30.0
            heapq.heappush(heap, (at + gap, d, kind, f))

    def payload(self, d: int, kind: str, face: int, now: float) -> dict:
        """The payload device ``d`` publishes at ``now`` (the daemon's shapes; ``seq`` counts per topic)."""
        rng, name = self.rng, self.names[d]
        if kind == "expression":
            self.seq[(name, kind)] += 1
            label = rng.choices(LABELS, WEIGHTS)[0]
            raw = {x: rng.random() + (3.0 if x == label else 0.0) for x in LABELS}  # all 7, like the daemon
            scores = {x: round(v / sum(raw.values()), 4) for x, v in raw.items()}
            return {"v": 1, "ts": round(now, 3), "device": name, "face_id": face, "expression": label,
                    "confidence": scores[label], "scores": scores,
                    "box": [round(rng.random() * 0.8, 4) for _ in range(4)], "frame": self.seq[(name, kind)] * 15,
                    "backend": "edgetpu", "seq": self.seq[(name, kind)]}
        if kind == "summary":
            self.seq[(name, kind)] += 1
            counts = {label: rng.randint(0, 40) for label in LABELS}
            p = {"v": 1, "ts": round(now, 3), "device": name, "faces": self.faces[d], "counts": counts,
                 "mean_scores": {}, "dominant": max(counts, key=counts.get),
                 "window": {"start": now - 30, "end": now, "seconds": 30.0, "observations": sum(counts.values())},
                 "seq": self.seq[(name, kind)]}
            if self.attention:
                p["attention"] = {"faces": self.faces[d], "observations": sum(counts.values()),
                                  "looking_share": round(rng.uniform(0.5, 1.0), 4)}
            return p
        if kind == "attention":
            self.seq[(name, kind)] += 1
            events = [{"type": t, "start": round(now - dur, 3), "duration": dur} for t, dur, p in EVENTS
                      if rng.random() < p]
            return {"v": 1, "ts": round(now, 3), "device": name, "face_id": 1, "box": [0.3, 0.2, 0.3, 0.4],
                    "frame": self.seq[(name, kind)] * 300, "looking": True, "eye_openness": [0.9, 0.92],
                    "eyes_closed": False, "closed_s": 0.0, "mouth_open": 0.05, "yaw": round(rng.gauss(0, 8), 1),
                    "pitch": round(rng.gauss(0, 5), 1), "roll": 1.0, "perclos": round(rng.uniform(0, 0.1), 4),
                    "blinks_per_min": round(rng.uniform(8, 20), 1), "long_closures_per_min": 0.0, "yawns": 0,
                    "off_road_s": 0.0, "drowsy": False, "distracted": False, "yawning": False, "events": events,
                    "seq": self.seq[(name, kind)]}
        return {"v": 1, "ts": round(now, 3), "device": name, "fps": 14.9, "backend": "edgetpu", "faces": self.faces[d],
                "latency_ms": {"capture": 1, "detect": 5, "classify": 3, "track": 0.2, "publish": 0.1},
                "outbox": {"depth": 0, "dropped": 0}, "cpu_temp_c": 52.0, "uptime_s": now - self.t0}
