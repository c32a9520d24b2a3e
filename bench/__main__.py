"""``python -m bench --worker KIND JSON``: one measurement in a fresh process (used by ``fer-edge bench``)."""

from __future__ import annotations

import json
import sys


def worker_main(argv: list[str]) -> int:
    """Run the worker ``argv[1]`` with the keyword arguments in the JSON ``argv[2]``; print its JSON result."""
    kind, params = argv[1], json.loads(argv[2])
    if kind == "dashboard_sim":  # the simulated fleet: needs neither the TFLite runtime nor OpenCV
        from bench.dashboard import simulate_worker

        print(json.dumps(simulate_worker(**params)), flush=True)
        return 0
    from bench.e2e import e2e_ours_worker
    from bench.pipeline import pipeline_worker
    from bench.e2e_truth import truth_align_worker, truth_fer_worker, truth_gt_worker, truth_ours_worker
    from bench.reference import e2e_fer_worker
    from bench.speed import latency_worker
    from bench.yunet import truth_yunet_worker

    fn = {"latency": latency_worker, "e2e_ours": e2e_ours_worker, "e2e_fer": e2e_fer_worker,
          "truth_ours": truth_ours_worker, "truth_fer": truth_fer_worker, "truth_gt": truth_gt_worker,
          "truth_align": truth_align_worker, "pipeline": pipeline_worker, "truth_yunet": truth_yunet_worker}[kind]
    print(json.dumps(fn(**params)), flush=True)
    return 0


if __name__ == "__main__":
    if len(sys.argv) >= 3 and sys.argv[1] == "--worker":
        sys.exit(worker_main(sys.argv[1:]))
    sys.exit("usage: python -m bench --worker KIND JSON (use `fer-edge bench` instead)")
