"""stderr without the runtime's banners: TFLite's XNNPACK line is dropped, anything else is kept."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from edge.banners import quiet

REPO = Path(__file__).resolve().parents[1]


def test_quiet_drops_the_banner_and_replays_the_rest(capfd):
    with quiet():
        os.write(2, b"INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\nreal error: keep me\n")
        print("a warning from Python", file=sys.stderr)
    err = capfd.readouterr().err
    assert "XNNPACK" not in err
    assert "real error: keep me\n" in err and "a warning from Python\n" in err


def test_loading_a_model_prints_no_banner():
    code = ("from edge.int8 import make_interpreter; from edge.manifest import MODELS_DIR; "
            "make_interpreter(MODELS_DIR / 'mini_xception.tflite', 'cpu')")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=dict(os.environ, PYTHONPATH=str(REPO)),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "XNNPACK" not in proc.stderr and proc.stderr.strip() == "", proc.stderr
