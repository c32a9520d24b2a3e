"""Workstation half of fer-edge: data, models, training, int8 conversion, Edge TPU check, drift.

TensorFlow 2.21 crashes in oneDNN (segfault / double free) on some AMD EPYC CPUs; limiting oneDNN
to AVX2 avoids it at full speed. It must be set before TensorFlow is imported, so it is set here,
on import of the package, unless the user chose otherwise.
"""

import os

os.environ.setdefault("ONEDNN_MAX_CPU_ISA", "AVX2")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
