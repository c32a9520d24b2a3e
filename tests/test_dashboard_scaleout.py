"""Scale-out: two ingest workers on one MQTT 5 shared subscription write one stream into one PostgreSQL.

The broker hands each message to one worker: together they store every message exactly once (duplicates
re-sent by the devices, as at-least-once delivery does, are dropped whichever worker gets them), and both
take a share. A web process next to them (``--no-ingest``) serves the API and stores only the retained
status that shared subscriptions never receive.
"""

from __future__ import annotations

import json
import time

import paho.mqtt.client as mqtt

from dashboard.store import open_store
from tests.daemon_run import wait_until
from tests.dashboard_run import Dashboard
from tests.mqtt_broker import mqtt_broker  # noqa: F401

DEVICES, PER_DEVICE, RESENT = 20, 50, 100


def test_two_workers_split_one_stream_nothing_lost_or_doubled(mqtt_broker, pg_url, tmp_path):
    workers = [Dashboard(tmp_path / f"w{i}", mqtt_broker, pg_url, "--ingest-only", "--share-group", "ingest",
                         "--worker-name", f"w{i}", web=False) for i in (1, 2)]
    web = None
    try:
        for w in workers:
            w.wait_ready()
        pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="fleet-sim", protocol=mqtt.MQTTv5)
        pub.connect(mqtt_broker.host, mqtt_broker.port)
        pub.loop_start()
        t0 = time.time()
        sent = []
        for seq in range(1, PER_DEVICE + 1):
            for d in range(DEVICES):
                device = f"bus-{d:02d}"
                p = {"v": 1, "ts": round(t0 + seq * 0.1, 3), "device": device, "face_id": 1, "expression": "neutral",
                     "confidence": 0.6, "scores": {"neutral": 0.6}, "box": [0, 0, 0.1, 0.1], "frame": seq,
                     "backend": "cpu", "seq": seq}
                sent.append((f"fer/{device}/expression", json.dumps(p)))
        for d in range(DEVICES):
            pub.publish(f"fer/bus-{d:02d}/status", "online", qos=1, retain=True)
        infos = [pub.publish(t, p, qos=1) for t, p in sent]
        infos += [pub.publish(t, p, qos=1) for t, p in sent[:RESENT]]  # redelivered duplicates
        for info in infos:
            info.wait_for_publish(10)
        store = open_store(pg_url)
        unique = DEVICES * PER_DEVICE
        assert wait_until(lambda: store.execute("SELECT COUNT(*) FROM expressions")[0][0] >= unique, 60)
        time.sleep(1.0)  # anything doubled would land by now
        total, distinct = store.execute("SELECT COUNT(*), COUNT(DISTINCT (device, seq)) FROM expressions")[0]
        assert total == distinct == unique
        # the per-minute rollups count each stored event once, whichever worker got it or its duplicate
        assert store.execute("SELECT SUM(events), SUM(n_neutral) FROM minutes")[0] == (unique, unique)
        for w in workers:
            assert w.stop() == 0, w.stderr()[-2000:]
        rows = {r[0]: r[1:] for r in store.execute("SELECT name, received, stored, duplicates FROM workers")}
        assert set(rows) == {"w1", "w2"}
        assert all(stored > 0 for _, stored, _ in rows.values()), rows  # both took a share
        assert sum(r[1] for r in rows.values()) == unique + DEVICES  # expressions + one status per device
        assert sum(r[0] for r in rows.values()) == len(infos) + DEVICES  # the broker gave each message to one
        assert sum(r[2] for r in rows.values()) == RESENT
        # the web process: retained statuses (never delivered to shared subscriptions) and the API
        web = Dashboard(tmp_path / "web", mqtt_broker, pg_url, "--no-ingest").wait_ready()
        devices = web.get("/api/devices")
        assert len(devices) == DEVICES and {d["status"] for d in devices} == {"online"}
        assert len(web.get("/api/devices/bus-03/expressions")) == PER_DEVICE
        print(f"scale-out: {len(infos)} messages ({RESENT} re-sent) split {rows['w1'][0]}/{rows['w2'][0]} "
              f"between two workers, {unique} stored once")
        pub.loop_stop()
        store.close()
    finally:
        for w in workers:
            w.stop()
        if web:
            web.stop()
