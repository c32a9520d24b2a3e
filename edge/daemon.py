"""The device daemon: the only place where the pipeline stages are wired together.

``camera -> detect -> classify -> track -> publish``, one frame at a time, plus the periodic
summary and stats, systemd notify/watchdog, and a clean stop on SIGTERM/SIGINT or after
``--max-frames``: publish ``offline``, flush the outbox (bounded wait), exit 0. A broker that is
down only means buffering in the outbox; the pipeline keeps running.
"""

from __future__ import annotations

import json
import logging
import signal
import threading
import time
from dataclasses import dataclass, field

import numpy as np

from edge.config import Config
from edge.attention.alerts import DeviceAlerts
from edge.attention.state import AttentionState, measure
from edge.events import AttentionWindow, ExpressionSchedule, StageTimer, SummaryWindow
from edge.health import Health, cpu_temperature_c
from edge.outbox import Outbox, resolve_outbox_path
from edge.payloads import (
    alert_event, attention_event, camera_state, device_base, expression_event, stats_event, summary_event,
)
from edge.publish import create_publisher
from edge.workers import NOTHING_YET, run_in_order

log = logging.getLogger(__name__)

READ_TIMEOUT_S = 0.5  # bounded waits keep the loop responsive to signals and the watchdog
FLUSH_TIMEOUT_S = 2.5  # SIGTERM -> exit within 5 s: flush, then "offline" (<= 1 s), inside that budget


@dataclass
class RunResult:
    """What a run did, logged at exit (and returned, for tests and benchmarks)."""

    frames: int = 0
    events: dict = field(default_factory=dict)
    outbox_left: int = 0
    outbox_dropped: int = 0
    stop_reason: str = ""
    last_stats: dict | None = None
    seconds: float = 0.0  # wall time of the frame loop (after setup, before the clean stop)

    @property
    def fps(self) -> float:
        """Frames processed per second of the frame loop."""
        return self.frames / self.seconds if self.seconds > 0 else 0.0


class Pipeline:
    """The opened stages, created from the config (errors surface here, before any connect)."""

    def __init__(self, cfg: Config):
        # Imported here so that `fer-edge --help` stays light; these pull in cv2 / the TFLite runtime.
        from edge.camera import open_source
        from edge.classify import ExpressionClassifier
        from edge.detect import create_detector
        from edge.track import FaceTracker

        # ModelError on a bad model: fail before the camera. No emotions: no model at all (not even loaded).
        self.classifier = ExpressionClassifier(cfg.model) if cfg.model.emotions else None
        # One detector per worker: a TFLite interpreter serves one thread, and each keeps its own video schedule.
        self.workers = cfg.pipeline.worker_count()
        self.detectors = [create_detector(cfg.detector) for _ in range(self.workers)]
        self.detector = self.detectors[0]
        # [attention]: one landmarker per worker too (its interpreters serve one thread); none when it is off.
        self.landmarkers = []
        if cfg.attention.enabled:
            from edge.attention import FaceLandmarker

            self.landmarkers = [FaceLandmarker(threads=cfg.detector.threads) for _ in range(self.workers)]
        # On the CPU each worker classifies its own frame's faces too (an interpreter per thread); an Edge TPU is one
        # device, so there the one classifier runs in the in-order stage.
        self.classifiers = [self.classifier]
        if self.classifier and self.classifier.backend == "cpu" and self.workers > 1:
            self.classifiers += [ExpressionClassifier(cfg.model) for _ in range(self.workers - 1)]
        self.labels = self.classifier.labels if self.classifier else []
        self.backend = self.classifier.backend if self.classifier else "cpu"  # then only the CPU runs models
        self.tracker = FaceTracker(cfg.tracker, self.labels,
                                   self.classifier.manifest.class_prior if self.classifier else None)
        # wait=True: a camera or stream that is not there yet is retried, not fatal (stats say so).
        self.source = open_source(cfg.camera, wait=True)
        if self.source.still:
            # A photo is one frame, but the tracker reports a face after min_hits matches: show it that often.
            self.source.repeat = cfg.tracker.min_hits

    def close(self) -> None:
        try:
            self.source.close()
        except Exception as exc:  # closing a dead camera must not hide the real exit status
            log.debug("closing the source failed: %s", exc)


def read_attention(landmarker, image, faces: list, att) -> dict:
    """Landmarks of the largest ``att.max_faces`` faces (all when None) -> {index in faces: FaceSignals}; faces
    whose landmarks score under ``att.min_face_score`` (the model sees no face in the crop) are left out. The same
    two-pass crop as ``analyze --attention`` and ``bench attention`` (the figures in docs/attention.md)."""
    from edge.attention.landmarks import face_landmarks

    order = sorted(range(len(faces)), key=lambda i: -faces[i].box[2] * faces[i].box[3])[:att.max_faces]
    height, width = image.shape[:2]
    out = {}
    for i in order:
        lm = face_landmarks(landmarker, image, faces[i], min_score=att.min_face_score)
        if lm is not None:
            out[i] = measure(lm.points, (width, height))
    return out


def install_stop_handlers(stop: threading.Event) -> None:
    """SIGTERM/SIGINT set ``stop``; the main loop notices within READ_TIMEOUT_S. A second signal
    aborts the clean stop (exit 130; the outbox keeps what was not delivered)."""

    def handler(signum, _frame):
        if stop.is_set():  # a second signal while stopping: give up on the clean stop
            raise KeyboardInterrupt
        log.info("received %s: stopping", signal.Signals(signum).name)
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, handler)


def run_daemon(cfg: Config, max_frames: int | None = None, stop: threading.Event | None = None) -> RunResult:
    """Run the pipeline until stopped, the source ends, or ``max_frames`` frames were processed."""
    stop = stop or threading.Event()
    health = Health(cfg.watchdog.stall_s)
    pipe = Pipeline(cfg)
    labels, backend, device = pipe.labels, pipe.backend, cfg.device.id

    def open_outbox() -> Outbox:
        o = cfg.outbox
        return Outbox(resolve_outbox_path(o), o.max_events, o.max_age_s, o.min_free_mb, o.memory_max)

    try:
        publisher = create_publisher(cfg.mqtt, device, open_outbox)
    except BaseException:
        pipe.close()
        raise
    publisher.start()
    schedule = ExpressionSchedule(cfg.events.interval_s)
    window = SummaryWindow(labels)
    timer = StageTimer()
    detector_ms: dict[str, float] = {}  # per detector pass, summed over the stats interval (0.0: not run in it)
    result = RunResult()
    started = time.monotonic()
    next_summary = started + cfg.summary.interval_s
    next_stats = started + cfg.stats.interval_s
    live_faces = 0
    window_frames = 0  # frames processed in the current summary window
    log.info("running: source %r, detector %s x %d worker(s), model %s on %s, publishing to %s", cfg.camera.source,
             pipe.detector.describe(), pipe.workers,
             pipe.classifier.model_path.name if pipe.classifier else "none (emotions = false)", backend,
             f"mqtt://{cfg.mqtt.host}:{cfg.mqtt.port}/{device_base(cfg.mqtt.prefix, device)}" if cfg.mqtt.host else "stdout")
    health.ready(f"running on {backend}")

    def publish_summary(now_wall: float) -> None:
        publisher.publish_event("summary", summary_event(
            device, now_wall, len(window.faces), window.counts if labels else None,
            window.mean_scores() if labels else None,
            window.start, now_wall, window.observations,
            attention=att_window.summary() if pipe.landmarkers else None))
        window.reset(now_wall)
        att_window.reset()

    def detector_stats() -> dict:
        n = max(timer.frames, 1)
        sched = [d.schedule_stats() for d in pipe.detectors]
        if sched[0]:  # each worker's detector keeps its own schedule: the share over all of them
            sched[0] = {**sched[0], "full_share": round(sum(s["full_share"] for s in sched) / len(sched), 3)}
        return {"type": cfg.detector.type, "passes": pipe.detector.describe(), "workers": pipe.workers,
                "latency_ms": {k: round(v / n, 2) for k, v in detector_ms.items()}, **sched[0]}

    def produced() -> dict:
        # No emotions: not even a count of expression messages goes out (none are made).
        return {k: n for k, n in publisher.produced.items() if labels or k != "expression"}

    def publish_stats(now: float) -> None:
        camera = camera_state(**pipe.source.state())
        payload = stats_event(
            device, time.time(), timer.fps(now), timer.latency_ms(), backend, result.frames,
            getattr(pipe.source, "dropped", 0), publisher.outbox_depth, publisher.outbox_dropped,
            now - started, cpu_temperature_c(), produced(), live_faces, publisher.connected,
            camera=camera, outbox=publisher.outbox_stats(), detector=detector_stats(), role=cfg.device.role)
        # Keep each pass once it has run: a pass the schedule skipped all interval reports 0.0 ms
        # per frame instead of vanishing from stats (dashboards and doctor see the same keys).
        detector_ms.update(dict.fromkeys(detector_ms, 0.0))
        publisher.publish_event("stats", payload)
        result.last_stats = payload
        timer.reset(now)
        health.status(f"{payload['fps']} fps, {live_faces} face(s), camera "
                      f"{'connected' if camera['connected'] else 'down: ' + str(camera['error'])}, broker "
                      f"{'connected' if publisher.connected else 'down'}, outbox {publisher.outbox_depth}")

    def periodic(now: float) -> None:
        """Summary and stats when due; also while the camera is down (then stats only: no window to sum up)."""
        nonlocal next_summary, next_stats, window_frames
        if now >= next_summary:
            if window_frames:
                publish_summary(time.time())
            window_frames = 0
            next_summary = now + cfg.summary.interval_s
        if now >= next_stats:
            publish_stats(now)
            next_stats = now + cfg.stats.interval_s

    def take():
        """The next frame (one reader at a time), None to end the run, NOTHING_YET on a read timeout."""
        if stop.is_set():
            result.stop_reason = result.stop_reason or "signal"
            return None
        if max_frames is not None and taken[0] >= max_frames:
            result.stop_reason = f"--max-frames {max_frames} reached"
            return None
        t0 = time.perf_counter()
        try:
            frame = pipe.source.read(timeout=READ_TIMEOUT_S)
        except TimeoutError:
            return NOTHING_YET
        if frame is None:
            result.stop_reason = "source ended"
            return None
        taken[0] += 1
        return frame, time.perf_counter() - t0

    def classify(classifier, faces) -> np.ndarray:
        if classifier is None:
            return np.zeros((len(faces), 0), np.float32)
        return classifier.classify_faces(faces)

    def detect(worker: int, item):
        """Detection on this worker's own detector (its schedule follows the frames this worker sees), then the
        landmarks and, with one classifier per worker (CPU), the expressions of its faces."""
        frame, _capture_s = item
        detector = pipe.detectors[worker]
        t0 = time.perf_counter()
        faces = detector.detect_frame(frame.image)  # a video: the preset's schedule
        t1 = time.perf_counter()
        signals = read_attention(pipe.landmarkers[worker], frame.image, faces, cfg.attention) if pipe.landmarkers else None
        t2 = time.perf_counter()
        scores = classify(pipe.classifiers[worker], faces) if len(pipe.classifiers) > 1 else None
        return faces, t1 - t0, dict(detector.timings_ms), signals, t2 - t1, scores, time.perf_counter() - t2

    def finish(item, detected) -> None:
        """Classify, track and publish one frame: one frame at a time, in capture order."""
        nonlocal live_faces, window_frames
        (frame, capture_s), (faces, detect_s, pass_ms, signals, landmarks_s, scores, classify_s) = item, detected
        health.tick()
        for stage, ms in pass_ms.items():
            detector_ms[stage] = detector_ms.get(stage, 0.0) + ms
        t2 = time.perf_counter()
        if scores is None:  # one classifier (the Edge TPU, or one worker): here, in order
            scores = classify(pipe.classifier, faces)
            classify_s = time.perf_counter() - t2
        t3 = time.perf_counter()
        tracks = pipe.tracker.update(faces, scores, frame.ts)
        seen = [t for t in tracks if t.last_seen >= frame.ts]  # matched in this very frame
        live_faces = len(tracks)
        t4 = time.perf_counter()
        height, width = frame.image.shape[:2]
        crops = {tuple(f.box): f.crop for f in faces} if cfg.privacy.publish_crops else {}
        # In the frames' time, like attention: a file read faster than real time sends as many events as played.
        for t in schedule.due(seen, frame.ts):
            publisher.publish_event("expression", expression_event(
                device, t, frame.index, frame.ts, (width, height), labels, backend,
                crop=crops.get(tuple(t.box))))
        window.add(seen)
        if signals is not None:
            follow_attention(frame, faces, signals, seen, tracks, (width, height))
            timer.add("landmarks", landmarks_s)
        t5 = time.perf_counter()
        for stage, seconds in zip(("capture", "detect", "classify", "track", "publish"),
                                  (capture_s, detect_s, classify_s, t4 - t3, t5 - t4)):
            timer.add(stage, seconds)
        timer.frame_done()
        result.frames += 1
        window_frames += 1
        health.frame_done()
        periodic(time.monotonic())

    def follow_attention(frame, faces, signals, seen, tracks, size) -> None:
        """Feed each face seen in this frame to its AttentionState; publish attention messages when due and the
        device's alerts when they change (one frame at a time, in capture order, like the rest of finish)."""
        att = cfg.attention
        by_box = {tuple(f.box): signals[i] for i, f in enumerate(faces) if i in signals}
        now = frame.ts  # the rate is in the frames' time: a file read faster than real time keeps it too
        read = False
        for t in seen:
            sig = by_box.get(tuple(t.box))
            if sig is None:
                continue
            state = att_states.setdefault(t.face_id, AttentionState(att))
            new = state.update(sig, frame.ts)
            read = True
            snap = state.snapshot()
            looking = snap["looking"]  # None while the face's ahead pose is being learnt
            att_window.add(t.face_id, snap, looking, new)
            # A new event goes out at once, so each message carries exactly this frame's events.
            if new or now - att_sent.get(t.face_id, -1e9) >= att.interval_s:
                publisher.publish_event("attention", attention_event(
                    device, t.face_id, t.box, frame.index, frame.ts, size, snap, new, looking))
                att_sent[t.face_id] = now
        live = {t.face_id for t in tracks}
        for table in (att_states, att_sent):
            for fid in [f for f in table if f not in live]:
                del table[fid]
        if att.alerts:
            for ch in att_alerts.update({fid: st.snapshot() for fid, st in att_states.items()}, frame.ts, read):
                publisher.publish_event("alert", alert_event(device, ch.kind, ch.state, ch.since, ch.detail,
                                                             ts=frame.ts, source="device", face_id=ch.face_id))

    def idle() -> None:
        # No frame: a camera being retried keeps the watchdog fed; one that hangs does not.
        health.tick(waiting=pipe.source.waiting_for_camera())
        periodic(time.monotonic())

    taken = [0]
    att_states: dict[int, AttentionState] = {}  # per followed face
    att_sent: dict[int, float] = {}  # face_id -> frame ts of its last attention message
    att_window, att_alerts = AttentionWindow(), DeviceAlerts(absent_s=cfg.attention.distracted_s)
    try:
        loop_started = time.perf_counter()
        try:
            run_in_order(pipe.workers, take, detect, finish, idle)
        finally:
            result.seconds = time.perf_counter() - loop_started
        # Clean stop: last summary and stats, then offline + outbox flush inside the 5 s budget.
        health.stopping()
        publish_summary(time.time())
        publish_stats(time.monotonic())
    finally:
        pipe.close()
        publisher.stop(timeout=FLUSH_TIMEOUT_S)
        result.events = dict(publisher.produced)
        result.outbox_left = publisher.outbox_depth
        result.outbox_dropped = publisher.outbox_dropped
    log.info("stopped (%s): %s", result.stop_reason, json.dumps({
        "frames": result.frames, "events": result.events,
        "outbox_left": result.outbox_left, "outbox_dropped": result.outbox_dropped}))
    return result
