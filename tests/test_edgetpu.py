"""Edge TPU compatibility: the offline check on real converted models, and the compiler-log parser.

``edgetpu_compiler`` runs only on x86-64 Linux with Coral's apt repository, which this machine
cannot reach; the offline check runs on real TFLite files built here with TensorFlow. The
compiler path is exercised with a stand-in script on PATH (the one thing that cannot exist here)
that behaves like the compiler: same arguments, same output file, same log format.
"""

from __future__ import annotations

import json
import os
import stat
import sys
import textwrap
from pathlib import Path

import pytest

import numpy as np

from convert import edgetpu
from convert.edgetpu import parse_compiler_log
from convert.edgetpu_offline import LIMIT, check_edgetpu_compat
from convert.edgetpu_report import AFTER_SPLIT, MAPPED
from edge.errors import ModelError
from tests.convert_model_fixtures import make_model


@pytest.fixture(scope="session")
def model(tmp_path_factory):
    """``model(kind)`` -> path of a real converted test model (built once per session, needs TF)."""
    pytest.importorskip("tensorflow")
    models_dir = tmp_path_factory.getbasetemp() / "convert_models"  # shared with test_drift
    return lambda kind: make_model(models_dir, kind)


def _by_op(report):
    out: dict[str, list] = {}
    for d in report.op_details:
        out.setdefault(d.op, []).append(d)
    return out


def test_full_int8_model_maps_entirely(model):
    report = check_edgetpu_compat(model("good"))
    ops = _by_op(report)
    # The converter folds BatchNorm and ReLU into the convolutions; GAP becomes MEAN.
    assert {"CONV_2D", "DEPTHWISE_CONV_2D", "ADD", "MAX_POOL_2D", "MEAN", "SOFTMAX"} <= set(ops)
    assert report.ok, report.format_table()
    assert report.cpu_ops == 0 and report.tpu_ops == len(report.op_details) == report.total_ops
    assert report.tpu_subgraphs == 1
    assert report.problems == [] and report.fixes == []
    assert report.min_runtime_version == 1  # GAP reduces x/y only: any libedgetpu runs it
    assert all(r.mapped and r.status == MAPPED for r in report.ops)
    assert "OK" in report.format_table()
    d = report.to_dict()
    assert d["ok"] is True and d["cpu_ops"] == 0
    json.dumps(d)  # serialisable


def test_float_input_output_flags_quantize_and_dequantize(model):
    report = check_edgetpu_compat(model("float_io"))
    assert not report.ok
    first, last = report.op_details[0], report.op_details[-1]
    assert (first.op, first.mapped) == ("QUANTIZE", False) and "float32" in first.reason
    assert (last.op, last.mapped) == ("DEQUANTIZE", False)
    # The int8 body in between still maps: one TPU subgraph between two CPU ops.
    assert all(d.mapped for d in report.op_details[1:-1])
    assert report.tpu_subgraphs == 1
    assert any("input is float32" in p for p in report.problems)
    assert any("inference_input_type" in f for f in report.fixes)
    table = report.format_table()
    assert "QUANTIZE" in table and "DEQUANTIZE" in table and "NOT OK" in table


def test_float_ops_are_flagged_with_the_op_named(model):
    report = check_edgetpu_compat(model("dynamic_range"))
    assert not report.ok and report.tpu_ops == 0
    conv = _by_op(report)["CONV_2D"][0]
    assert not conv.mapped
    assert conv.status == "Operation is working on an unsupported data type"
    assert "float32" in conv.reason
    assert "op #0 CONV_2D" in report.format_table()
    assert any("TFLITE_BUILTINS_INT8" in f for f in report.fixes)


def test_unsupported_op_splits_the_graph(model):
    report = check_edgetpu_compat(model("leaky"))
    details = report.op_details
    assert not report.ok
    assert (details[0].op, details[0].mapped) == ("CONV_2D", True)
    leaky = details[1]
    assert (leaky.op, leaky.mapped, leaky.status) == ("LEAKY_RELU", False, "Operation not supported")
    # Everything after the first CPU op runs on the CPU although it is supported.
    assert all(not d.mapped and d.status == AFTER_SPLIT for d in details[2:])
    assert report.tpu_ops == 1 and report.cpu_ops == len(details) - 1
    rows = {(r.op, r.status): r.count for r in report.ops}
    assert rows[("CONV_2D", MAPPED)] == 1 and rows[("CONV_2D", AFTER_SPLIT)] == 2
    md = report.to_markdown()
    assert "| LEAKY_RELU | 1 | CPU | Operation not supported |" in md

    # With the compiler's experimental multiple-subgraph mode only LEAKY_RELU stays on the CPU.
    multi = check_edgetpu_compat(model("leaky"), multiple_subgraphs=True)
    assert multi.cpu_ops == 1 and multi.tpu_subgraphs == 2 and not multi.ok


def test_dynamic_batch_is_flagged(model):
    report = check_edgetpu_compat(model("dynamic_batch"))
    assert not report.ok
    assert all(not d.mapped for d in report.op_details)
    assert report.op_details[0].status == "Tensor has dynamic shape"
    assert "[-1, 48, 48, 1]" in report.op_details[0].reason
    assert any("dynamic shape" in p for p in report.problems)
    assert any("batch_size=1" in f for f in report.fixes)


def _mutated(src: Path, dst: Path, edit) -> Path:
    """Re-pack ``src`` after ``edit(model, op_name, op)`` changed operator options or buffers."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    m = schema.ModelT.InitFromPackedBuf(src.read_bytes(), 0)
    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    for op in m.subgraphs[0].operators:
        code = m.operatorCodes[op.opcodeIndex]
        edit(m, names[max(code.builtinCode, code.deprecatedBuiltinCode)], op)
    builder = flatbuffers.Builder(1024)
    builder.Finish(m.Pack(builder), file_identifier=b"TFL3")
    dst.write_bytes(builder.Output())
    return dst


def test_documented_op_limitations(model, tmp_path):
    def edit(m, name, op):
        if name == "MAX_POOL_2D":
            op.builtinOptions.fusedActivationFunction = 1  # RELU: pools take no fused activation
        elif name == "DEPTHWISE_CONV_2D":
            op.builtinOptions.dilationWFactor = 2  # x and y dilation must be equal
        elif name == "MEAN":  # reduce over batch and height instead of height and width
            axes = m.buffers[m.subgraphs[0].tensors[op.inputs[1]].buffer]
            assert np.frombuffer(bytes(axes.data), np.int32).tolist() == [1, 2]
            axes.data = np.frombuffer(np.array([0, 1], np.int32).tobytes(), np.uint8)

    path = _mutated(model("good"), tmp_path / "mutated.tflite", edit)
    report = check_edgetpu_compat(path, multiple_subgraphs=True)
    bad = {d.op: d for d in report.op_details if not d.mapped}
    assert set(bad) == {"MAX_POOL_2D", "DEPTHWISE_CONV_2D", "MEAN"}
    assert all(d.status == LIMIT for d in bad.values())
    assert "fused RELU" in bad["MAX_POOL_2D"].reason
    assert "dilation 1x2" in bad["DEPTHWISE_CONV_2D"].reason
    assert "batch dimension" in bad["MEAN"].reason
    # Default (one subgraph): the first of them, the depthwise conv right after the first conv, ends it.
    single = check_edgetpu_compat(path)
    assert single.tpu_ops == 1 and single.op_details[1].op == "DEPTHWISE_CONV_2D"


# A compiler log in the format edgetpu_compiler 16 prints with -s (one op left on the CPU).
PARTIAL_LOG = textwrap.dedent("""\
    Edge TPU Compiler version 16.0.384591198
    Started a compilation timeout timer of 180 seconds.

    Model compiled successfully in 412 ms.

    Input model: models/fer_float_io.tflite
    Input size: 71.20KiB
    Output model: out/fer_float_io_edgetpu.tflite
    Output size: 143.52KiB
    On-chip memory used for caching model parameters: 88.25KiB
    On-chip memory remaining for caching model parameters: 7.62MiB
    Off-chip memory used for streaming uncached model parameters: 0.00B
    Number of Edge TPU subgraphs: 1
    Total number of operations: 27
    Operation log: out/fer_float_io_edgetpu.log

    Model successfully compiled but not all operations are supported by the Edge TPU. A percentage of the model will instead run on the CPU, which is slower. If possible, consider updating your model to use only operations supported by the Edge TPU. For details, visit g.co/coral/model-reqs.
    Number of operations that will run on Edge TPU: 24
    Number of operations that will run on CPU: 3

    Operator                       Count      Status

    QUANTIZE                       1          Operation is otherwise supported, but not mapped due to some unspecified limitation
    CONV_2D                        13         Mapped to Edge TPU
    DEPTHWISE_CONV_2D              4          Mapped to Edge TPU
    ADD                            4          Mapped to Edge TPU
    MAX_POOL_2D                    1          Mapped to Edge TPU
    MEAN                           1          Mapped to Edge TPU
    SOFTMAX                        1          Mapped to Edge TPU
    LEAKY_RELU                     1          Operation not supported
    DEQUANTIZE                     1          Operation is working on an unsupported data type
    """)

# All ops mapped: the compiler then prints no "Number of operations that will run" lines.
FULL_LOG = textwrap.dedent("""\
    Edge TPU Compiler version 16.0.384591198
    Started a compilation timeout timer of 180 seconds.

    Model compiled successfully in 377 ms.

    Input model: mini_xception.tflite
    Input size: 70.11KiB
    Output model: mini_xception_edgetpu.tflite
    Output size: 141.02KiB
    On-chip memory used for caching model parameters: 86.00KiB
    On-chip memory remaining for caching model parameters: 7.65MiB
    Off-chip memory used for streaming uncached model parameters: 0.00B
    Number of Edge TPU subgraphs: 1
    Total number of operations: 24
    Operation log: mini_xception_edgetpu.log

    Operator                       Count      Status

    CONV_2D                        14         Mapped to Edge TPU
    DEPTHWISE_CONV_2D              4          Mapped to Edge TPU
    ADD                            4          Mapped to Edge TPU
    MEAN                           1          Mapped to Edge TPU
    SOFTMAX                        1          Mapped to Edge TPU
    """)


def test_parse_compiler_log_partial():
    info = parse_compiler_log(PARTIAL_LOG)
    assert info["version"] == "16.0.384591198"
    assert info["tpu_subgraphs"] == 1 and info["total_ops"] == 27
    assert (info["tpu_ops"], info["cpu_ops"]) == (24, 3)
    rows = {r.op: r for r in info["rows"]}
    assert len(info["rows"]) == 9
    assert rows["CONV_2D"].count == 13 and rows["CONV_2D"].mapped
    assert not rows["LEAKY_RELU"].mapped and rows["LEAKY_RELU"].status == "Operation not supported"
    assert not rows["QUANTIZE"].mapped and "unspecified limitation" in rows["QUANTIZE"].status
    assert sum(r.count for r in info["rows"] if not r.mapped) == 3
    assert info["output_model"] == "out/fer_float_io_edgetpu.tflite"
    assert info["log_file"] == "out/fer_float_io_edgetpu.log"


def test_parse_compiler_log_all_mapped():
    info = parse_compiler_log(FULL_LOG)
    assert (info["tpu_ops"], info["cpu_ops"], info["total_ops"]) == (24, 0, 24)
    assert all(r.mapped for r in info["rows"])
    assert parse_compiler_log("")["rows"] == []


def _fake_compiler(bin_dir: Path, log: str, rc: int = 0) -> None:
    """An ``edgetpu_compiler`` stand-in: checks -s/-o, writes <stem>_edgetpu.tflite, prints ``log``."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    (bin_dir / "log.txt").write_text(log)
    script = bin_dir / "edgetpu_compiler"
    script.write_text(textwrap.dedent(f"""\
        #!{sys.executable}
        import shutil, sys
        from pathlib import Path
        args = sys.argv[1:]
        assert args[0] == "-s" and args[1] == "-o", args
        out, model = Path(args[2]), Path(args[3])
        print(Path({str(bin_dir / "log.txt")!r}).read_text())
        if {rc} == 0:
            shutil.copy(model, out / (model.stem + "_edgetpu.tflite"))
        sys.exit({rc})
        """))
    script.chmod(script.stat().st_mode | stat.S_IEXEC)


def test_compile_for_edgetpu_runs_compiler_and_parses(model, tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    _fake_compiler(bin_dir, PARTIAL_LOG)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    out = tmp_path / "out"
    report = edgetpu.edgetpu_report(model("good"), out_dir=out)
    assert report.method == "edgetpu_compiler"
    assert Path(report.compiled_model) == out / "good_edgetpu.tflite" and (out / "good_edgetpu.tflite").is_file()
    assert (report.tpu_ops, report.cpu_ops) == (24, 3) and not report.ok
    assert "edgetpu_compiler 16.0.384591198" in report.format_table()
    # --offline ignores the compiler.
    assert edgetpu.edgetpu_report(model("good"), out_dir=out, offline=True).method == "offline"


def test_compile_failure_is_a_model_error(model, tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    _fake_compiler(bin_dir, "Edge TPU Compiler version 16.0.384591198\nInternal compiler error. Aborting!", rc=1)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    with pytest.raises(ModelError, match="Internal compiler error"):
        edgetpu.compile_for_edgetpu(model("good"), tmp_path / "out")


def test_cli_exit_codes_and_reports(model, tmp_path, capsys):
    js, md = tmp_path / "r.json", tmp_path / "r.md"
    assert edgetpu.main([str(model("good")), "--offline", "--json", str(js), "--markdown", str(md)]) == 0
    assert json.loads(js.read_text())["ok"] is True
    assert md.read_text().startswith("### Edge TPU: `good.tflite`")
    assert edgetpu.main([str(model("leaky")), "--offline"]) == 1
    out = capsys.readouterr().out
    assert "LEAKY_RELU" in out and "NOT OK" in out


def test_bad_files_give_one_line_errors(tmp_path, capsys):
    assert edgetpu.main([str(tmp_path / "missing.tflite"), "--offline"]) == 2
    junk = tmp_path / "junk.tflite"
    junk.write_bytes(os.urandom(256))
    assert edgetpu.main([str(junk), "--offline"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all(line.startswith("fer-edge: error: ") for line in err)
    assert "not found" in err[0] and "not a TFLite flatbuffer" in err[1]
