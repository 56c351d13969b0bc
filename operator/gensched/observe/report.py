"""``gensched report``: what each namespace and job used and yielded, as an HTML page with plots.

Sources, combinable:
- a Prometheus scraping the operator (``--prometheus URL``): the per-job accounting counters
  (``gensched_job_*_total``), carbon saved by deferral over ``--range``, GPU allocation;
- JSON files (``--from-json``, repeatable): a report's own data (``--save-json`` writes it, kind
  ``gensched-report``), or the output of ``gensched simulate timing --json`` (deferral savings),
  ``simulate autoscale --json`` (GPU-hours and energy of static vs per-operator serving) and
  ``simulate packing --json`` (GPUs allocated per placement policy).

The page is self-contained (plots are embedded PNGs), so it can be mailed or archived as is;
``--png`` writes the same plots as one picture.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from gensched.accounting.usage import J_PER_KWH, Ledger

KIND = "gensched-report"


class ReportError(ValueError):
    """A source that cannot be read, with what to do about it."""


@dataclass
class JobRow:
    namespace: str
    name: str
    gpu_hours: float = 0.0
    energy_kwh: float = 0.0
    gco2: float = 0.0
    cost: float = 0.0
    currency: str = ""
    outputs: float = 0.0
    output_unit: str = ""
    measured_share: float | None = None  # of the energy, measured by DCGM

    @property
    def cost_per_output(self) -> float | None:
        return self.cost / self.outputs if self.outputs > 0 else None

    @property
    def outputs_per_kwh(self) -> float | None:
        return self.outputs / self.energy_kwh if self.energy_kwh > 0 else None


@dataclass
class Comparison:
    """A saving: our value against the alternatives (e.g. deferred vs run at once)."""

    title: str
    unit: str
    values: dict[str, float]
    ours: str
    better: str = "lower"  # or "higher"
    note: str = ""

    @property
    def saving(self) -> float | None:
        """How much better ours is than the best alternative (positive = better), in ``unit``."""
        others = [v for k, v in self.values.items() if k != self.ours]
        if self.ours not in self.values or not others:
            return None
        best = min(others) if self.better == "lower" else max(others)
        mine = self.values[self.ours]
        return best - mine if self.better == "lower" else mine - best


@dataclass
class ReportData:
    title: str = "gensched: what the GPU work cost and yielded"
    sources: list[str] = field(default_factory=list)
    generated_at: str = ""
    jobs: list[JobRow] = field(default_factory=list)
    comparisons: list[Comparison] = field(default_factory=list)

    def merged(self, other: ReportData) -> ReportData:
        return ReportData(self.title, [*self.sources, *other.sources], self.generated_at or other.generated_at,
                          [*self.jobs, *other.jobs], [*self.comparisons, *other.comparisons])

    def to_dict(self) -> dict:
        return {"kind": KIND, **asdict(self)}

    def namespaces(self) -> list[JobRow]:
        """One row per namespace: the sums of its jobs."""
        out: dict[str, JobRow] = {}
        for j in self.jobs:
            r = out.setdefault(j.namespace, JobRow(j.namespace, "", currency=j.currency, output_unit=j.output_unit))
            r.gpu_hours += j.gpu_hours
            r.energy_kwh += j.energy_kwh
            r.gco2 += j.gco2
            r.cost += j.cost
            r.outputs += j.outputs
            if j.output_unit and r.output_unit != j.output_unit:
                r.output_unit = r.output_unit if not r.output_unit else "mixed"
        return [out[k] for k in sorted(out)]


def job_row(namespace: str, name: str, ledger: Ledger, currency: str = "", output_unit: str = "") -> JobRow:
    """A report row from a job's accounting ledger (status.accounting.ledger, or a simulation's)."""
    u = ledger.total
    return JobRow(namespace, name, u.gpu_hours, u.kwh, u.gco2, u.cost, currency, u.outputs, output_unit,
                  u.measured_joules / u.joules if u.joules > 0 else None)


# -- sources --------------------------------------------------------------------------------------
def from_json(path: Path) -> ReportData:
    """Read a report's data or a simulation's JSON (recognised by its keys)."""
    try:
        doc = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError) as exc:
        raise ReportError(f"{path}: cannot read ({exc.__class__.__name__}: {exc})") from exc
    except json.JSONDecodeError as exc:
        raise ReportError(f"{path}: not JSON (line {exc.lineno}): give a file written by --save-json or "
                          "`gensched simulate ... --json`") from exc
    if not isinstance(doc, dict):
        raise ReportError(f"{path}: expected a JSON object")
    try:
        if doc.get("kind") == KIND:
            return ReportData(title=str(doc.get("title") or ReportData.title), sources=[str(path)],
                              generated_at=str(doc.get("generated_at") or ""),
                              jobs=[JobRow(**j) for j in doc.get("jobs") or []],
                              comparisons=[Comparison(**c) for c in doc.get("comparisons") or []])
        if "signals" in doc and "scenario" in doc:
            return ReportData(sources=[f"{path} (simulate timing)"], comparisons=_timing(doc))
        if "strategies" in doc:
            return ReportData(sources=[f"{path} (simulate autoscale)"], comparisons=_autoscale(doc))
        if "policies" in doc:
            return ReportData(sources=[f"{path} (simulate packing)"], comparisons=_packing(doc))
    except (TypeError, KeyError, ValueError, AttributeError) as exc:
        raise ReportError(f"{path}: malformed ({exc.__class__.__name__}: {exc})") from exc
    raise ReportError(f"{path}: not a report or simulation JSON (expected kind {KIND!r}, or the keys of "
                      "`gensched simulate timing|autoscale|packing --json`)")


def _timing(doc: dict) -> list[Comparison]:
    out = []
    for name, r in doc["signals"].items():
        out.append(Comparison(f"Deferral on {name} ({doc['scenario']}, {doc.get('forecaster', '')})", "gCO2",
                              {"run at once": float(r["baseline_emissions_g"]),
                               "deferred by gensched": float(r["emissions_g"])}, "deferred by gensched",
                              note=f"{float(r['saving_pct']):.1f}% saved, {int(r.get('missed_deadlines', 0))} "
                                   "deadlines missed"))
    return out


def _autoscale(doc: dict) -> list[Comparison]:
    s = doc["strategies"]
    what = f"{doc.get('model', '')} on {doc.get('gpu', '')}, {Path(str(doc.get('trace', ''))).name}"
    names = {"static": "static", "model": "whole-model autoscaling", "operator": "per-operator autoscaling"}
    return [
        Comparison(f"Serving GPU-hours ({what})", "GPU-hours",
                   {names.get(k, k): float(v["gpu_seconds"]) / 3600 for k, v in s.items()}, names["operator"]),
        Comparison(f"Serving energy ({what})", "kWh",
                   {names.get(k, k): float(v["energy_kwh"]) for k, v in s.items()}, names["operator"]),
    ]


def _packing(doc: dict) -> list[Comparison]:
    vals = {k: 100 * float(v["allocated_gpu_ratio"]["median"]) for k, v in doc["policies"].items()}
    ours = next((k for k in vals if k.lower() == "gensched"), max(vals, key=lambda k: vals[k]))
    return [Comparison(f"GPUs allocated at saturation ({Path(str(doc.get('pods', ''))).name})", "% of GPUs",
                       vals, ours, better="higher", note="more allocated = less stranded by fragmentation")]


def from_prometheus(url: str, range_: str = "7d", at: datetime | None = None, timeout: float = 10.0) -> ReportData:
    """Per-job accounting and deferral savings from a Prometheus scraping gensched."""
    from prometheus_api_client import PrometheusConnect
    from prometheus_api_client.exceptions import PrometheusApiClientException
    from requests import RequestException

    prom = PrometheusConnect(url=url, disable_ssl=True)
    params = {"time": str((at or datetime.now(UTC)).timestamp()), "timeout": f"{timeout:g}s"}

    def q(expr: str) -> list[dict]:
        try:
            return prom.custom_query(expr, params=params)
        except (RequestException, PrometheusApiClientException, ValueError) as exc:
            raise ReportError(f"Prometheus at {url}: {exc.__class__.__name__}: {str(exc)[:300]} "
                              "(check --prometheus; the query was " + expr[:120] + ")") from exc

    by_job = "max by (namespace, generativejob{extra}) ({metric})"
    jobs: dict[tuple[str, str], JobRow] = {}

    def each(metric: str, extra: str = "") -> Iterable[tuple[JobRow, dict, float]]:
        for r in q(by_job.format(metric=metric, extra=f", {extra}" if extra else "")):
            m = r["metric"]
            key = (m.get("namespace", ""), m.get("generativejob", ""))
            row = jobs.setdefault(key, JobRow(*key))
            yield row, m, float(r["value"][1])

    for row, _, v in each("gensched_job_gpu_seconds_total"):
        row.gpu_hours = v / 3600
    measured: dict[tuple[str, str], float] = {}
    for row, m, v in each("gensched_job_energy_joules_total", "source"):
        row.energy_kwh += v / J_PER_KWH
        if m.get("source") == "measured":
            measured[(row.namespace, row.name)] = v / J_PER_KWH
    for row, _, v in each("gensched_job_emissions_grams_total"):
        row.gco2 = v
    for row, m, v in each("gensched_job_cost_total", "currency"):
        row.cost += v
        row.currency = m.get("currency", "")
    for row, m, v in each("gensched_job_outputs_total", "unit"):
        row.outputs += v
        row.output_unit = m.get("unit", "")
    for key, kwh in measured.items():
        row = jobs[key]
        row.measured_share = kwh / row.energy_kwh if row.energy_kwh > 0 else None
    if not jobs:
        raise ReportError(f"Prometheus at {url} has no gensched_job_gpu_seconds_total series: is it scraping the "
                          "operator (chart: metrics.serviceMonitor.enabled) and has any job run?")
    out = ReportData(sources=[f"Prometheus {url} (range {range_})"], jobs=[jobs[k] for k in sorted(jobs)])

    def scalar(expr: str) -> float:
        r = q(expr)
        return float(r[0]["value"][1]) if r else 0.0

    saved = scalar(f"sum(increase(gensched_carbon_saved_grams_total[{range_}]))")
    extra = scalar(f"sum(increase(gensched_carbon_extra_grams_total[{range_}]))")
    if saved or extra:
        out.comparisons.append(Comparison(f"Carbon saved by deferral (last {range_})", "gCO2",
                                          {"saved": saved, "extra (ran dirtier)": extra, "net": saved - extra},
                                          "net", better="higher"))
    alloc = q("sum(max by (gpu_model) (gensched_gpu_allocated)) / sum(max by (gpu_model) (gensched_gpu_capacity))")
    if alloc:
        out.comparisons.append(Comparison("GPUs allocated now", "% of GPUs",
                                          {"allocated": 100 * float(alloc[0]["value"][1])}, "allocated",
                                          better="higher"))
    return out


# -- rendering ------------------------------------------------------------------------------------
def _fmt(x: float | None, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "-"
    return f"{x:,.{digits}g}" if abs(x) < 1e6 else f"{x:,.0f}"


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError as exc:
        raise ReportError("the report draws with matplotlib: pip install 'gensched[plot]'") from exc
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _figures(data: ReportData) -> dict[str, Any]:
    """Matplotlib figures by section (nothing for a section without data)."""
    plt = _pyplot()
    figs: dict[str, Any] = {}
    ns = data.namespaces()
    if ns:
        fig, axes = plt.subplots(1, 4, figsize=(14, 3.2))
        names = [r.namespace for r in ns]
        for ax, (label, vals, color) in zip(axes, [
                ("GPU-hours", [r.gpu_hours for r in ns], "#4c72b0"), ("Energy (kWh)", [r.energy_kwh for r in ns],
                                                                      "#dd8452"),
                ("Emissions (gCO2)", [r.gco2 for r in ns], "#55a868"),
                (f"Cost ({ns[0].currency or 'no currency'})", [r.cost for r in ns], "#c44e52")], strict=True):
            ax.bar(names, vals, color=color)
            ax.set_title(label)
            ax.tick_params(axis="x", rotation=30)
        fig.suptitle("Per namespace")
        fig.tight_layout()
        figs["namespaces"] = fig
    jobs = sorted(data.jobs, key=lambda j: -j.gpu_hours)[:20]
    if jobs:
        fig, axes = plt.subplots(1, 2, figsize=(14, 0.35 * len(jobs) + 1.5))
        labels = [f"{j.namespace}/{j.name}" for j in jobs][::-1]
        axes[0].barh(labels, [j.gpu_hours for j in jobs][::-1], color="#4c72b0")
        axes[0].set_title("GPU-hours per job")
        axes[1].barh(labels, [j.gco2 for j in jobs][::-1], color="#55a868")
        axes[1].set_title("gCO2 per job")
        fig.tight_layout()
        figs["jobs"] = fig
    per_out = [j for j in data.jobs if j.cost_per_output is not None]
    if per_out:
        fig, ax = plt.subplots(figsize=(14, 0.35 * len(per_out) + 1.5))
        ax.barh([f"{j.namespace}/{j.name} ({j.output_unit or 'outputs'})" for j in per_out],
                [j.cost_per_output for j in per_out], color="#8172b3")
        ax.set_title("Cost per output")
        fig.tight_layout()
        figs["per-output"] = fig
    if data.comparisons:
        n = len(data.comparisons)
        fig, axes = plt.subplots(1, n, figsize=(max(5.0, 4.2 * n), 3.4), squeeze=False)
        for ax, c in zip(axes[0], data.comparisons, strict=True):
            keys = list(c.values)
            ax.bar(keys, [c.values[k] for k in keys], color=["#55a868" if k == c.ours else "#999999" for k in keys])
            ax.set_title(c.title if len(c.title) < 45 else c.title[:42] + "...", fontsize=9)
            ax.set_ylabel(c.unit)
            ax.tick_params(axis="x", rotation=20, labelsize=8)
        fig.tight_layout()
        figs["savings"] = fig
    return figs


def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    return buf.getvalue()


def _table(headers: list[str], rows: list[list[str]], cls: str) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def render_html(data: ReportData, pngs: dict[str, bytes] | None = None) -> str:
    """The whole page (self-contained); ``pngs`` are the plots when already drawn (see ``plots``)."""
    img = {k: base64.b64encode(v).decode() for k, v in (plots(data) if pngs is None else pngs).items()}

    def image(key: str, alt: str) -> str:
        return f'<img id="plot-{key}" alt="{html.escape(alt)}" src="data:image/png;base64,{img[key]}">' \
            if key in img else ""

    usage_cols = ["GPU-hours", "kWh", "measured", "gCO2", "cost", "outputs", "cost/output", "outputs/kWh"]

    def cells(r: JobRow) -> list[str]:
        return [_fmt(r.gpu_hours), _fmt(r.energy_kwh),
                "-" if r.measured_share is None else f"{100 * r.measured_share:.0f}%", _fmt(r.gco2),
                f"{_fmt(r.cost)} {r.currency}".strip(), f"{_fmt(r.outputs)} {r.output_unit}".strip(),
                _fmt(r.cost_per_output), _fmt(r.outputs_per_kwh)]

    ns = data.namespaces()
    total = JobRow("all", "", sum(r.gpu_hours for r in ns), sum(r.energy_kwh for r in ns),
                   sum(r.gco2 for r in ns), sum(r.cost for r in ns), ns[0].currency if ns else "",
                   sum(r.outputs for r in ns))
    summary = _table(["scope", *usage_cols], [["all", *cells(total)]], "summary")
    sections = [f'<section id="summary"><h2>Summary</h2>{summary}'
                f'<p class="sources">Sources: {html.escape("; ".join(data.sources) or "none")}. '
                f'Generated {html.escape(data.generated_at)}.</p></section>']
    if ns:
        sections.append('<section id="namespaces"><h2>Per namespace</h2>'
                        + _table(["namespace", *usage_cols], [[r.namespace, *cells(r)] for r in ns], "namespaces")
                        + image("namespaces", "GPU-hours, energy, gCO2 and cost per namespace") + "</section>")
    if data.jobs:
        rows = [[j.namespace, j.name, *cells(j)] for j in sorted(data.jobs, key=lambda j: (j.namespace, j.name))]
        sections.append('<section id="jobs"><h2>Per job</h2>' + _table(["namespace", "job", *usage_cols], rows, "jobs")
                        + image("jobs", "GPU-hours and gCO2 per job") + "</section>")
    if "per-output" in img:
        sections.append('<section id="per-output"><h2>Cost per output</h2>'
                        + image("per-output", "cost per output per job") + "</section>")
    if data.comparisons:
        rows = [[c.title, c.unit, ", ".join(f"{k}: {_fmt(v)}" for k, v in c.values.items()), _fmt(c.saving),
                 c.note] for c in data.comparisons]
        sections.append('<section id="savings"><h2>Savings from deferral, packing and autoscaling</h2>'
                        + _table(["what", "unit", "values", "saving", "note"], rows, "savings")
                        + image("savings", "ours against the alternatives") + "</section>")
    style = ("body{font-family:sans-serif;margin:2em;color:#222}table{border-collapse:collapse;margin:1em 0}"
             "td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}td:first-child,th:first-child"
             "{text-align:left}img{max-width:100%;display:block;margin:1em 0}.sources{color:#666}")
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(data.title)}</title>'
            f"<style>{style}</style></head><body><h1>{html.escape(data.title)}</h1>{''.join(sections)}"
            "</body></html>\n")


def plots(data: ReportData) -> dict[str, bytes]:
    """Each section's plot as PNG bytes."""
    plt = _pyplot()
    out = {}
    for key, fig in _figures(data).items():
        out[key] = _png(fig)
        plt.close(fig)
    return out


def write_png(data: ReportData, path: Path, pngs: dict[str, bytes] | None = None) -> None:
    """All plots stacked into one picture."""
    plt = _pyplot()
    pngs = plots(data) if pngs is None else pngs
    if not pngs:
        raise ReportError("nothing to plot: the sources hold no jobs and no savings")
    images = [plt.imread(io.BytesIO(p), format="png") for p in pngs.values()]
    width = max(i.shape[1] for i in images)
    height = sum(i.shape[0] for i in images)
    fig = plt.figure(figsize=(width / 90, height / 90), dpi=90)
    top = 0
    for i in images:
        ax = fig.add_axes((0, 1 - (top + i.shape[0]) / height, i.shape[1] / width, i.shape[0] / height))
        ax.imshow(i)
        ax.axis("off")
        top += i.shape[0]
    fig.savefig(path, dpi=90)
    plt.close(fig)


def run_report(prometheus: str | None, range_: str, json_files: list[Path], out: Path, png: Path | None,
               save_json: Path | None, title: str | None = None, at: datetime | None = None) -> ReportData:
    """Collect from every source, write the page (and the picture and data when asked)."""
    if not prometheus and not json_files:
        raise ReportError("give --prometheus URL and/or --from-json FILE")
    if not re.fullmatch(r"[0-9]+[smhdwy]", range_):
        raise ReportError(f"--range {range_!r}: use a Prometheus duration such as 24h, 7d or 30d")
    data = ReportData(title=title or ReportData.title, generated_at=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"))
    if prometheus:
        data = data.merged(from_prometheus(prometheus, range_, at))
    for path in json_files:
        data = data.merged(from_json(path))
    pngs = plots(data)
    try:
        out.write_text(render_html(data, pngs))
        if png is not None:
            write_png(data, png, pngs)
        if save_json is not None:
            save_json.write_text(json.dumps(data.to_dict(), indent=1))
    except OSError as exc:
        raise ReportError(f"cannot write {exc.filename}: {exc.strerror}") from exc
    return data
