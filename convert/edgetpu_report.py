"""The Edge TPU report: which ops of a model run on the Edge TPU, which on the CPU, and why.

Filled by ``convert.edgetpu.compile_for_edgetpu`` (from the compiler's log) or by
``convert.edgetpu_offline.check_edgetpu_compat`` (against the documented requirements).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from convert.report import markdown_table
from edge.errors import ModelError

MAPPED = "Mapped to Edge TPU"
AFTER_SPLIT = "More than one subgraph is not supported"  # the compiler's status for ops past the first CPU op
DOCS_URL = "https://coral.ai/docs/edgetpu/models-intro/#supported-operations"


def check_model_file(path: Path) -> None:
    """Raise ModelError when the model file is missing."""
    if not path.is_file():
        raise ModelError(f"model file {path} not found; pass the path of an int8 .tflite")


@dataclass
class EdgeTpuOp:
    """One operator of the model and where it would run (offline check only)."""

    index: int
    op: str
    mapped: bool
    status: str  # short category, like the compiler's Status column
    reason: str = ""  # the full explanation when not mapped (or a caveat when mapped)


@dataclass
class EdgeTpuOpRow:
    """One row of the summary table: ``count`` ops of type ``op`` that share ``status``."""

    op: str
    count: int
    mapped: bool
    status: str
    reason: str = ""


@dataclass
class EdgeTpuReport:
    """Which ops of a model run on the Edge TPU, and why the others do not.

    ``method`` is ``"edgetpu_compiler"`` (parsed from the compiler's log) or ``"offline"``
    (checked against the documented requirements). ``problems`` are model-level findings (float
    input, several subgraphs) that make the model unfit even when each op alone would map.
    """

    model: str
    method: str
    ops: list[EdgeTpuOpRow] = field(default_factory=list)
    op_details: list[EdgeTpuOp] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    fixes: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    tpu_subgraphs: int = 0
    min_runtime_version: int | None = None
    compiler_version: str | None = None
    compiled_model: str | None = None
    compiler_log: str | None = None

    @property
    def total_ops(self) -> int:
        return sum(r.count for r in self.ops)

    @property
    def tpu_ops(self) -> int:
        return sum(r.count for r in self.ops if r.mapped)

    @property
    def cpu_ops(self) -> int:
        return self.total_ops - self.tpu_ops

    @property
    def ok(self) -> bool:
        """True when every op maps to the Edge TPU and there is no model-level problem."""
        return self.total_ops > 0 and self.cpu_ops == 0 and not self.problems

    @property
    def first_cpu_op(self) -> EdgeTpuOp | None:
        return next((d for d in self.op_details if not d.mapped), None)

    def to_dict(self) -> dict:
        d = asdict(self)
        d.update(ok=self.ok, total_ops=self.total_ops, tpu_ops=self.tpu_ops, cpu_ops=self.cpu_ops)
        return d

    def summary_line(self) -> str:
        verdict = "OK: the whole model runs on the Edge TPU" if self.ok else "NOT OK"
        return (f"{self.tpu_ops} of {self.total_ops} ops on the Edge TPU, {self.cpu_ops} on the CPU, "
                f"{self.tpu_subgraphs} TPU subgraph(s). {verdict}")

    def _why_lines(self, max_ops: int = 6) -> list[str]:
        lines = list(self.problems)
        if self.op_details:
            unmapped = [d for d in self.op_details if not d.mapped]
            # Ops that fail on their own account first; the "after the first CPU op" ones in one line.
            own = [d for d in unmapped if d.status != AFTER_SPLIT]
            lines += [f"op #{d.index} {d.op}: {d.reason}" for d in own[:max_ops]]
            if len(own) > max_ops:
                lines.append(f"... and {len(own) - max_ops} more op(s) that cannot map (see the JSON report)")
            after = [d for d in unmapped if d.status == AFTER_SPLIT]
            if after:
                lines.append(f"{len(after)} later op(s) ({', '.join(sorted({d.op for d in after}))}): "
                             f"{after[0].reason}")
        else:
            lines += [f"{r.op} x{r.count}: {r.status}" for r in self.ops if not r.mapped]
        return lines

    def format_table(self) -> str:
        """Plain-text table for the terminal (like the compiler's own ``-s`` output)."""
        how = ("edgetpu_compiler " + (self.compiler_version or "")).strip() if self.method == "edgetpu_compiler" \
            else "offline check against the documented Edge TPU requirements (edgetpu_compiler not run)"
        out = [f"Edge TPU: {self.model}", f"method: {how}"]
        w = max([len("Operator")] + [len(r.op) for r in self.ops]) + 2
        out.append(f"{'Operator':<{w}}{'Count':>5}  {'Runs on':<8}Status")
        for r in self.ops:
            out.append(f"{r.op:<{w}}{r.count:>5}  {'TPU' if r.mapped else 'CPU':<8}{r.status}")
        out.append(self.summary_line())
        why = self._why_lines()
        if why:
            out.append("Why not on the Edge TPU:")
            out += [f"  - {line}" for line in why]
        if self.fixes:
            out.append("Fix:")
            out += [f"  - {fix}" for fix in self.fixes]
        out += [f"note: {n}" for n in self.notes]
        if self.compiled_model:
            out.append(f"compiled model: {self.compiled_model}")
        return "\n".join(out)

    def to_markdown(self) -> str:
        """Markdown section for reports and closing notes."""
        how = f"`edgetpu_compiler` {self.compiler_version or ''}".strip() if self.method == "edgetpu_compiler" \
            else "offline check against the [documented requirements](" + DOCS_URL + ")"
        rows = [[r.op, r.count, "TPU" if r.mapped else "CPU", r.status] for r in self.ops]
        out = [f"### Edge TPU: `{Path(self.model).name}`", "", f"Method: {how}.", "",
               markdown_table(["Operator", "Count", "Runs on", "Status"], rows, align=["l", "r", "l", "l"])]
        out += ["", f"**{self.summary_line()}**"]
        why = self._why_lines()
        if why:
            out += ["", "Why not on the Edge TPU:", ""] + [f"- {line}" for line in why]
        if self.fixes:
            out += ["", "Fix:", ""] + [f"- {fix}" for fix in self.fixes]
        if self.notes:
            out += [""] + [f"- note: {n}" for n in self.notes]
        if self.compiled_model:
            out += ["", f"Compiled model: `{self.compiled_model}`"]
        return "\n".join(out) + "\n"
