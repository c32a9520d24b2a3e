"""Optional Home Assistant MQTT discovery (``[mqtt] ha_discovery = true``).

On every connect the publisher sends one retained config message per sensor to
``<ha_discovery_prefix>/sensor/<node>/<object>/config``; Home Assistant then shows the device with
its dominant expression, face count, fps, latency, outbox depth, CPU temperature and camera state, read from the
existing ``summary`` and ``stats`` topics, available while ``status`` is ``online``.
"""

from __future__ import annotations

import re

from edge.payloads import STATUS_OFFLINE, STATUS_ONLINE, topic

# object id -> (name, source topic kind, value template, unit, device_class, icon)
SENSORS = {
    "dominant_expression": ("Dominant expression", "summary", "{{ value_json.dominant or 'none' }}", None, None, "mdi:emoticon-outline"),
    "faces": ("Faces", "summary", "{{ value_json.faces }}", None, None, "mdi:account-group"),
    "fps": ("Frames per second", "stats", "{{ value_json.fps }}", "fps", None, "mdi:speedometer"),
    "latency": ("Pipeline latency", "stats", "{{ value_json.latency_ms.total }}", "ms", "duration", None),
    "outbox_depth": ("Outbox depth", "stats", "{{ value_json.outbox.depth }}", None, None, "mdi:tray-full"),
    "cpu_temperature": ("CPU temperature", "stats", "{{ value_json.cpu_temp_c }}", "°C", "temperature", None),
    "camera": ("Camera", "stats", "{{ 'connected' if (value_json.camera | default({'connected': true})).connected"
               " else 'down' }}", None, None, "mdi:cctv"),
}


def discovery_messages(discovery_prefix: str, prefix: str, device_id: str, version: str) -> list[tuple[str, dict]]:
    """``(topic, config payload)`` for each sensor of ``device_id``."""
    node = re.sub(r"[^A-Za-z0-9_-]", "_", f"fer_edge_{device_id}")
    device = {"identifiers": [node], "name": f"fer-edge {device_id}", "manufacturer": "fer-edge",
              "model": "facial expression recognition", "sw_version": version}
    out = []
    for obj, (name, kind, template, unit, device_class, icon) in SENSORS.items():
        cfg = {
            "name": name, "unique_id": f"{node}_{obj}", "object_id": f"{node}_{obj}",
            "state_topic": topic(prefix, device_id, kind), "value_template": template,
            "availability_topic": topic(prefix, device_id, "status"),
            "payload_available": STATUS_ONLINE, "payload_not_available": STATUS_OFFLINE,
            "device": device,
        }
        if unit:
            cfg["unit_of_measurement"] = unit
            cfg["state_class"] = "measurement"
        if device_class:
            cfg["device_class"] = device_class
        if icon:
            cfg["icon"] = icon
        out.append((f"{discovery_prefix}/sensor/{node}/{obj}/config", cfg))
    return out
