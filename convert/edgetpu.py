"""Edge TPU compatibility of an int8 ``.tflite``: compile it, or check it offline.

Two ways to the same ``EdgeTpuReport`` (which ops would run on the Edge TPU, which on the CPU, why):

- ``compile_for_edgetpu``: when ``edgetpu_compiler`` is on PATH (x86-64 Linux only), run it with
  ``-s`` and parse the "Operator / Count / Status" table it prints; keeps ``<name>_edgetpu.tflite``.
- ``check_edgetpu_compat``: no compiler here (the usual case on a workstation without Coral's apt
  repository, and always on ARM), so read the flatbuffer and check every operator against the
  compiler's documented requirements (coral.ai/docs/edgetpu/models-intro/, "Model requirements"
  and "Supported operations"):

  * tensors are 8-bit quantized (int8/uint8); biases int32 and shape/axis parameters are constant;
  * tensor sizes are constant at compile time (no dynamic dimension);
  * tensors have at most 3 dimensions, or only the 3 innermost dimensions are > 1 (so batch 1);
  * only operators from the supported list, with their listed limitations;
  * the compiler maps one Edge TPU subgraph by default: from the first mappable op up to the
    first op that cannot map; that op and everything after it run on the CPU ("More than one
    subgraph is not supported"), even when supported (the experimental ``-a`` flag lifts this).

``edgetpu_report`` picks the compiler when it is available and the offline check otherwise.
Modules: ``convert.edgetpu_report`` (the report), ``convert.edgetpu_offline`` (the offline check),
``convert.tflite_graph`` (the flatbuffer reader); this one runs the compiler and the command.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
from pathlib import Path

from convert.edgetpu_offline import check_edgetpu_compat
from convert.edgetpu_report import MAPPED, EdgeTpuOpRow, EdgeTpuReport, check_model_file
from edge.errors import ModelError
from edge.int8 import edgetpu_path

# `fer-edge edgetpu --help` (plain text: argparse shows it as written).
HELP = "check which ops of an int8 .tflite run on the Edge TPU (compile it, or check it offline)"
DESCRIPTION = (
    "Compile the model with edgetpu_compiler when it is on PATH (x86-64 Linux only) and report which ops it "
    "mapped to the Edge TPU; otherwise check every op against the compiler's documented requirements "
    "(8-bit tensors, static shapes, batch 1, supported operations) and say which ops would stay on the CPU "
    "and why. Exits 0 when every op maps to the Edge TPU, else 1."
)


# --------------------------------------------------------------------------- compiler path

def find_compiler() -> str | None:
    """Path of ``edgetpu_compiler`` on PATH, or None."""
    return shutil.which("edgetpu_compiler")


_ROW_RE = re.compile(r"^\s*([A-Z][A-Z0-9_]*)\s+(\d+)\s+(\S.*?)\s*$")


def parse_compiler_log(text: str) -> dict:
    """Parse what ``edgetpu_compiler -s`` prints.

    Returns a dict with ``version``, ``tpu_subgraphs``, ``total_ops``, ``tpu_ops``, ``cpu_ops``
    (from the "Number of operations that will run on ..." lines when printed, which the compiler
    does only when some op stays on the CPU; else counted from the table), ``rows`` (list of
    ``EdgeTpuOpRow``), ``output_model`` and ``log_file``.
    """
    info: dict = {"version": None, "tpu_subgraphs": None, "total_ops": None, "tpu_ops": None,
                  "cpu_ops": None, "rows": [], "output_model": None, "log_file": None}
    in_table = False
    for line in text.splitlines():
        s = line.strip()
        if m := re.match(r"Edge TPU Compiler version (\S+)", s):
            info["version"] = m.group(1)
        elif m := re.match(r"Number of Edge TPU subgraphs:\s*(\d+)", s):
            info["tpu_subgraphs"] = int(m.group(1))
        elif m := re.match(r"Total number of operations:\s*(\d+)", s):
            info["total_ops"] = int(m.group(1))
        elif m := re.match(r"Number of operations that will run on Edge TPU:\s*(\d+)", s):
            info["tpu_ops"] = int(m.group(1))
        elif m := re.match(r"Number of operations that will run on CPU:\s*(\d+)", s):
            info["cpu_ops"] = int(m.group(1))
        elif m := re.match(r"Output model:\s*(\S.*)", s):
            info["output_model"] = m.group(1)
        elif m := re.match(r"Operation log:\s*(\S.*)", s):
            info["log_file"] = m.group(1)
        elif re.match(r"Operator\s+Count\s+Status", s):
            in_table = True
        elif in_table and (m := _ROW_RE.match(line)):
            status = m.group(3)
            info["rows"].append(EdgeTpuOpRow(op=m.group(1), count=int(m.group(2)),
                                             mapped=status == MAPPED, status=status))
        elif in_table and s and not _ROW_RE.match(line):
            in_table = False  # the table ended (a segment header or a message follows)
    rows = info["rows"]
    if info["tpu_ops"] is None:
        info["tpu_ops"] = sum(r.count for r in rows if r.mapped)
    if info["cpu_ops"] is None:
        info["cpu_ops"] = sum(r.count for r in rows if not r.mapped)
    if info["total_ops"] is None:
        info["total_ops"] = sum(r.count for r in rows)
    return info


def compile_for_edgetpu(tflite_path: str | Path, out_dir: str | Path | None = None,
                        timeout_s: float = 180) -> EdgeTpuReport:
    """Run ``edgetpu_compiler -s -o OUT_DIR MODEL`` and report which ops it mapped.

    tflite_path: the full-integer model. out_dir: where ``<name>_edgetpu.tflite`` (and the
    compiler's ``<name>_edgetpu.log``) go; default beside the model. Raises ``ModelError`` when
    the compiler is missing, fails, or times out.
    """
    tflite_path = Path(tflite_path)
    check_model_file(tflite_path)
    compiler = find_compiler()
    if compiler is None:
        raise ModelError("edgetpu_compiler is not on PATH (it runs only on x86-64 Linux; install "
                         "Coral's edgetpu-compiler package), or use the offline check")
    out_dir = Path(out_dir) if out_dir else tflite_path.parent
    out_dir.mkdir(parents=True, exist_ok=True)
    cmd = [compiler, "-s", "-o", str(out_dir), str(tflite_path)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        raise ModelError(f"edgetpu_compiler did not finish within {timeout_s:.0f} s on {tflite_path}; "
                         "try --timeout with a larger value") from None
    text = (proc.stdout or "") + ("\n" + proc.stderr if proc.stderr else "")
    compiled = out_dir / edgetpu_path(tflite_path).name
    if proc.returncode != 0 or not compiled.is_file():
        last = next((ln.strip() for ln in reversed(text.splitlines()) if ln.strip()), "no output")
        raise ModelError(f"edgetpu_compiler failed on {tflite_path} (exit {proc.returncode}: {last}); "
                         f"run `fer-edge edgetpu --offline {tflite_path}` to see which ops are the problem")
    info = parse_compiler_log(text)
    report = EdgeTpuReport(model=str(tflite_path), method="edgetpu_compiler", ops=info["rows"],
                           tpu_subgraphs=info["tpu_subgraphs"] or 0,
                           compiler_version=info["version"], compiled_model=str(compiled),
                           compiler_log=text)
    if not report.ops:
        report.problems.append("the compiler printed no operator table (was -s ignored?)")
    elif (info["tpu_ops"], info["cpu_ops"]) != (report.tpu_ops, report.cpu_ops):
        report.notes.append(f"compiler summary says {info['tpu_ops']} TPU / {info['cpu_ops']} CPU ops; "
                            f"the table adds up to {report.tpu_ops} / {report.cpu_ops}")
    return report


def edgetpu_report(tflite_path: str | Path, out_dir: str | Path | None = None, timeout_s: float = 180,
                   offline: bool = False) -> EdgeTpuReport:
    """Compile with ``edgetpu_compiler`` when it is on PATH (and ``offline`` is False), else check offline."""
    if not offline and find_compiler() is not None:
        return compile_for_edgetpu(tflite_path, out_dir, timeout_s=timeout_s)
    return check_edgetpu_compat(tflite_path)


# --------------------------------------------------------------------------- CLI

def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``fer-edge edgetpu``."""
    parser.add_argument("model", metavar="MODEL.tflite", help="full-integer (int8) TFLite model")
    parser.add_argument("--out-dir", default=None,
                        help="where edgetpu_compiler writes <name>_edgetpu.tflite (default: beside the model)")
    parser.add_argument("--offline", action="store_true",
                        help="skip edgetpu_compiler even if it is on PATH; check against the documented requirements")
    parser.add_argument("--timeout", type=float, default=180, help="compiler timeout in seconds (default 180)")
    parser.add_argument("--json", dest="json_path", default=None, help="also write the report as JSON here")
    parser.add_argument("--markdown", dest="md_path", default=None, help="also write the report as Markdown here")


def run(args: argparse.Namespace) -> int:
    """``fer-edge edgetpu``: print the table; exit 0 when every op maps to the Edge TPU, else 1."""
    report = edgetpu_report(args.model, out_dir=args.out_dir, timeout_s=args.timeout, offline=args.offline)
    print(report.format_table())
    if args.json_path:
        Path(args.json_path).write_text(json.dumps(report.to_dict(), indent=2) + "\n")
    if args.md_path:
        Path(args.md_path).write_text(report.to_markdown())
    return 0 if report.ok else 1


def main(argv: list[str] | None = None) -> int:
    """``python -m convert.edgetpu MODEL.tflite`` (the same as ``fer-edge edgetpu``)."""
    from convert.standalone import run_standalone

    return run_standalone("fer-edge edgetpu", DESCRIPTION, add_arguments, run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
