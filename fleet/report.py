"""The fleet report: one row per device, the fleet's aggregates, and a PNG.

Why one report for the whole fleet: an operator with thousands of devices reads
the aggregates (how many failed, the spread of ROC-AUC, the median p99 gain over
no rejection and over hedging, the extra IOs) and then the few rows that stand
out; the per-device table, the JSON (``fleet.json``, which ``mittd fleet report``
re-renders) and the PNG are written atomically into one directory.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mittd.fleet.manifest import FleetError
from mittd.traces.atomic import save_figure, write_text

__all__ = ["REPORT_JSON", "aggregates", "format_aggregates", "format_table", "load_rows",
           "render", "write_report"]

REPORT_JSON = "fleet.json"
SKIPPED = "skipped (up to date)"


def _num(v: Any) -> float | None:
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) \
        and math.isfinite(v) else None


def _values(rows: Sequence[Mapping[str, Any]], key: str) -> list[float]:
    return [v for r in rows if r.get("status") != "error" and (v := _num(r.get(key))) is not None]


def _median(xs: list[float]) -> float | None:
    return float(np.median(xs)) if xs else None


def aggregates(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Counts by status and the fleet's medians and spreads (errors left out)."""
    auc = _values(rows, "roc_auc")
    status = [str(r.get("status")) for r in rows]
    return {
        "devices": len(rows),
        "ok": status.count("ok"),
        "error": status.count("error"),
        "skipped": sum(s.startswith("skipped") for s in status),
        "roc_auc_median": _median(auc),
        "roc_auc_p10": float(np.percentile(auc, 10)) if auc else None,
        "roc_auc_p90": float(np.percentile(auc, 90)) if auc else None,
        "p99_gain_vs_baseline_median": _median(_values(rows, "gain_vs_baseline")),
        "p99_gain_vs_hedge_median": _median(_values(rows, "gain_vs_hedge")),
        "extra_ios_mittd_total": int(sum(_values(rows, "extra_ios_mittd"))),
        "extra_ios_hedge_total": int(sum(_values(rows, "extra_ios_hedge"))),
        "us_per_decision_median": _median(_values(rows, "us_per_decision")),
        "task_seconds_total": float(sum(_values(rows, "seconds"))),
    }


def _f(v: Any, fmt: str, none: str = "-") -> str:
    x = _num(v)
    return none if x is None else format(x, fmt)


def _pct(v: Any) -> str:
    x = _num(v)
    return "-" if x is None else f"{x:+.1%}"


def _trace(r: Mapping[str, Any]) -> str:
    t = [str(x) for x in r.get("traces") or []]
    if not t:
        return "-"
    name = Path(t[0]).name or t[0]
    return name + (f" +{len(t) - 1}" if len(t) > 1 else "")


def _policy(r: Mapping[str, Any]) -> str:
    p = str(r.get("policy") or "-")
    return p.split(":", 1)[0]  # the mode and its parameters; the reason is in the JSON


def _extra(r: Mapping[str, Any]) -> str:
    m, h = r.get("extra_ios_mittd"), r.get("extra_ios_hedge")
    return "-" if m is None else f"{m:,}/{h:,}" if h is not None else f"{m:,}"


COLUMNS = ("device", "trace", "model", "status", "ROC-AUC", "policy", "p99 base µs",
           "p99 hedge µs", "p99 mittd µs", "vs base", "vs hedge", "extra IOs mittd/hedge",
           "µs/decision", "s", "error")


def _cells(r: Mapping[str, Any]) -> list[str]:
    err = r.get("error") or r.get("replay_error")
    return [str(r.get("device")), _trace(r), str(r.get("model") or "-"), str(r.get("status")),
            _f(r.get("roc_auc"), ".3f"), _policy(r), _f(r.get("p99_baseline_us"), ",.0f"),
            _f(r.get("p99_hedge_us"), ",.0f"), _f(r.get("p99_mittd_us"), ",.0f"),
            _pct(r.get("gain_vs_baseline")), _pct(r.get("gain_vs_hedge")), _extra(r),
            _f(r.get("us_per_decision"), ".2f"), _f(r.get("seconds"), ".1f"),
            str(err) if err else ""]


def format_table(rows: Sequence[Mapping[str, Any]], markdown: bool = False) -> str:
    """The per-device table, as aligned text or as a Markdown table."""
    body = [_cells(r) for r in rows]
    if markdown:
        esc = [[c.replace("|", "\\|") for c in row] for row in body]
        lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "|".join("---" for _ in COLUMNS) + "|"]
        return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in esc])
    widths = [max(len(h), *(len(row[i]) for row in body)) if body else len(h)
              for i, h in enumerate(COLUMNS)]
    widths[-1] = 0  # the error column is last and not padded
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    return "\n".join(fmt.format(*row).rstrip() for row in [list(COLUMNS), *body])


def format_aggregates(agg: Mapping[str, Any]) -> str:
    lines = [f"devices: {agg['devices']} ({agg['ok']} ok, {agg['skipped']} skipped, "
             f"{agg['error']} error)"]
    if agg.get("roc_auc_median") is not None:
        lines.append(f"ROC-AUC: median {agg['roc_auc_median']:.3f} (p10 {agg['roc_auc_p10']:.3f}, "
                     f"p90 {agg['roc_auc_p90']:.3f})")
    if agg.get("p99_gain_vs_baseline_median") is not None:
        lines.append(f"read p99 with mittd: median {_pct(agg['p99_gain_vs_baseline_median'])} "
                     f"vs no rejection, {_pct(agg['p99_gain_vs_hedge_median'])} vs hedging "
                     "(+ = lower p99)")
        lines.append(f"extra IOs: {agg['extra_ios_mittd_total']:,} with mittd, "
                     f"{agg['extra_ios_hedge_total']:,} with hedging")
    if agg.get("us_per_decision_median") is not None:
        lines.append(f"decision: median {agg['us_per_decision_median']:.2f} µs")
    return "\n".join(lines)


def render(doc: Mapping[str, Any]) -> str:
    """What the commands print: the table, then the aggregates."""
    rows = doc.get("rows") or []
    return format_table(rows) + "\n\n" + format_aggregates(doc.get("aggregates")
                                                           or aggregates(rows))


def _png(path: Path, rows: Sequence[Mapping[str, Any]], title: str) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.ticker import MaxNLocator
    except ImportError:
        return False
    good = [r for r in rows if r.get("status") != "error"]
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4.2))
    auc = _values(good, "roc_auc")
    if auc:
        a.hist(auc, bins=min(30, max(5, len(auc))), range=(min(0.5, *auc), 1.0), color="C0")
    a.set_xlabel("test ROC-AUC")
    a.set_ylabel("devices")
    a.yaxis.set_major_locator(MaxNLocator(integer=True))  # whole devices
    a.set_title(f"ROC-AUC per device ({len(auc)} devices)")
    pts = [(r["p99_baseline_us"], r.get("p99_hedge_us"), r["p99_mittd_us"]) for r in good
           if _num(r.get("p99_baseline_us")) and _num(r.get("p99_mittd_us"))]
    if pts:
        base = np.array([p[0] for p in pts], float)
        b.scatter(base, [p[2] for p in pts], s=14, label="mittd", color="C2")
        hed = [(x, h) for x, h, _ in pts if _num(h)]
        if hed:
            b.scatter([x for x, _ in hed], [h for _, h in hed], s=14, marker="x",
                      label="hedging", color="C1")
        lo, hi = float(base.min()) * 0.5, float(base.max()) * 1.1
        b.plot([lo, hi], [lo, hi], color="grey", lw=0.8, ls="--", label="no change")
        b.legend(loc="upper left")
    b.set_xlabel("read p99 without rejection (µs)")
    b.set_ylabel("read p99 (µs)")
    b.set_title("read p99 per device (below the line: better)")
    fig.suptitle(title)
    fig.tight_layout()
    save_figure(fig, path, dpi=110)
    plt.close(fig)
    return True


def write_report(rows: Sequence[Mapping[str, Any]], out_dir: str | Path, *, kind: str,
                 meta: Mapping[str, Any] | None = None) -> tuple[dict[str, Any], list[Path], bool]:
    """Write ``fleet.json``, ``fleet.md``, ``fleet.txt`` and ``fleet.png`` (when
    matplotlib is installed: the bool) into ``out_dir``; return the document and files."""
    d = Path(out_dir)
    try:
        d.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise FleetError(f"{d}: cannot create the report directory: {e.strerror or e}") from None
    doc: dict[str, Any] = {"report": "mittd-fleet", "version": 1, "kind": kind,
                           "written_unix": time.time(), **dict(meta or {}),
                           "aggregates": aggregates(rows), "rows": [dict(r) for r in rows]}
    files = [d / REPORT_JSON, d / "fleet.md", d / "fleet.txt"]
    write_text(files[0], json.dumps(doc, indent=1, default=float) + "\n")
    md = (f"# mittd fleet {kind}\n\n" + format_aggregates(doc["aggregates"]).replace("\n", "  \n")
          + "\n\n" + format_table(rows, markdown=True) + "\n")
    write_text(files[1], md)
    write_text(files[2], render(doc) + "\n")
    drawn = _png(d / "fleet.png", rows, f"mittd fleet {kind}: {len(rows)} devices")
    if drawn:
        files.append(d / "fleet.png")
    return doc, files, drawn


def load_rows(report_dir: str | Path) -> dict[str, Any]:
    """A saved report (``fleet.json``) for ``mittd fleet report``; FleetError if none."""
    p = Path(report_dir) / REPORT_JSON
    try:
        doc = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FleetError(f"{p}: no fleet report here (run 'mittd fleet train' or "
                         "'mittd fleet replay' first)") from None
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise FleetError(f"{p}: cannot read the fleet report: {e}") from None
    if not isinstance(doc, dict) or doc.get("report") != "mittd-fleet" \
            or not isinstance(doc.get("rows"), list):
        raise FleetError(f"{p}: not a mittd fleet report")
    return doc
