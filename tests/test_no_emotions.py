"""`[model] emotions = false` (the lawful classroom mode in the EU): no expression model is loaded and no expression
field leaves the device; faces are still counted. Real daemon, real mosquitto, the sample clip."""

from __future__ import annotations

import json

from edge.manifest import default_model_path
from tests.daemon_run import exit_report, start_daemon, stderr_of
from tests.mqtt_broker import Collector, mqtt_broker  # noqa: F401
from tests.test_daemon_e2e import daemon_config, validator

LABELS = json.loads(default_model_path().with_suffix(".json").read_text())["labels"]
EXPRESSION_KEYS = {"expression", "scores", "counts", "mean_scores", "dominant", "confidence"}


def keys_of(value) -> set:
    """Every key of a JSON document, nested."""
    if isinstance(value, dict):
        return set(value) | set().union(*(keys_of(v) for v in value.values()))
    if isinstance(value, list):
        return set().union(*(keys_of(v) for v in value)) if value else set()
    return set()


def test_no_emotions_loads_no_model_and_publishes_no_expression(mqtt_broker, tmp_path):
    col = Collector(mqtt_broker, "fer/#")
    bad_model = tmp_path / "not_a_model.tflite"
    bad_model.write_bytes(b"this is not a model")  # loading it would be a ModelError: it must not be loaded
    cfg = daemon_config(tmp_path, mqtt_broker, None)
    text = cfg.read_text().replace('[model]\n', f'[model]\nemotions = false\npath = "{bad_model}"\n', 1)
    cfg.write_text(text)
    proc = start_daemon(cfg, "--max-frames", "60")
    assert proc.wait(120) == 0, stderr_of(proc)
    assert "model none (emotions = false)" in stderr_of(proc)
    report = exit_report(stderr_of(proc))
    assert report["frames"] == 60 and not report["events"].get("expression")
    assert col.wait_for(lambda c: c.on("/status") and c.on("/status")[-1][1] == b"offline")
    assert not col.on("/expression")
    for topic, payload, _ in col.messages:
        text = payload.decode()
        assert not any(label in text for label in LABELS), (topic, text)
        if text.startswith("{"):
            assert not keys_of(json.loads(text)) & EXPRESSION_KEYS, (topic, text)
    summaries = col.json_on("fer/e2e/summary")
    assert summaries and max(s["faces"] for s in summaries) >= 2  # the sample's two faces are still counted
    for s in summaries:
        validator("summary").validate(s)
    col.close()


def test_with_emotions_the_same_run_publishes_expressions(mqtt_broker, tmp_path, standin_model):
    """The control: the same check sees the expression fields when emotions are on (the test above can fail)."""
    col = Collector(mqtt_broker, "fer/#")
    proc = start_daemon(daemon_config(tmp_path, mqtt_broker, standin_model), "--max-frames", "60")
    assert proc.wait(120) == 0, stderr_of(proc)
    assert col.wait_for(lambda c: c.on("/status") and c.on("/status")[-1][1] == b"offline")
    found = set().union(*(keys_of(json.loads(p)) for _, p, _ in col.messages if p.startswith(b"{")))
    assert {"expression", "scores", "counts"} <= found
    col.close()
