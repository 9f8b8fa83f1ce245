"""``mittd check --config FILE``: everything ``mittd serve`` would refuse, found first.

Loading the config catches bad fields; this goes on to build every device's
state with ``mittd.daemon.devices.load_device`` — the very call ``mittd serve``
makes at start and on SIGHUP, so ``check`` passes exactly what serving accepts
(gunicorn's ``--check-config``) — and then times each engine against the
prediction budget. Every device is checked even after one fails, so a single
run lists every problem. Exit status: 0 all good, 1 a device has problems, 2
the config itself is invalid (a ``ConfigError``, printed by the caller).
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from mittd.daemon.config import Config, ConfigError, DeviceConfig, ServerConfig, load_config
from mittd.daemon.devices import DeviceError, load_device

# Exceptions whose message is a complete, user-facing explanation (the caller
# prints "mittd: error: MESSAGE" and exits 2).
USER_ERRORS: tuple[type[BaseException], ...] = (ConfigError,)


@dataclass
class DeviceReport:
    """The outcome for one device alias: a summary when good, else the reasons."""

    alias: str
    path: str
    summary: str = ""
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def lines(self) -> list[str]:
        if self.ok:
            out = [f"ok  {self.alias}  {self.path}  {self.summary}"]
        else:
            out = [f"FAIL  {self.alias}  {self.path}  {p}" for p in self.problems]
        out += [f"warn  {self.alias}  {self.path}  {w}" for w in self.warnings]
        return out


def _fmt(xs: Sequence[float]) -> str:
    """``[188.41, 500.0]``; never raises (NaN and inf print as such, not int(x))."""
    def one(x: float) -> str:
        x = float(x)
        return f"{x:.1f}" if math.isfinite(x) and x.is_integer() and abs(x) < 1e16 \
            else f"{x:g}"
    return "[" + ", ".join(one(x) for x in xs) + "]"


def _median_inference_us(engine: Any, repeats: int = 200) -> float:
    """Median batch-1 inference time, as the daemon runs it (zeros in, logits out)."""
    engine.input[:] = 0.0
    engine.run1()  # warm caches / JIT
    samples = []
    for _ in range(repeats):
        t = time.perf_counter_ns()
        engine.run1()
        samples.append(time.perf_counter_ns() - t)
    return statistics.median(samples) / 1000.0


def check_device(dev: DeviceConfig, server: ServerConfig, models: bool = True
                 ) -> DeviceReport:
    """Build ``dev``'s state as serving does, then time its engine."""
    rep = DeviceReport(dev.alias, str(dev.path))
    if not models:
        rep.summary = f"model {dev.model} (not loaded: --no-models)  engine {dev.engine}"
        return rep
    try:
        st = load_device(dev, server)
    except DeviceError as e:  # the FAIL line names the alias already
        rep.problems.append(str(e).removeprefix(f"devices.{dev.alias}: "))
        return rep
    try:
        took = _median_inference_us(st.engine)
    except Exception as e:  # serving would fail open on every IO: a problem, reported
        rep.problems.append(f"engine {dev.engine} failed on {st.model_version}: {e}")
        return rep
    if took > server.predict_budget_us:
        rep.warnings.append(
            f"median inference {took:.1f} µs exceeds server.predict_budget_us "
            f"{server.predict_budget_us:g}: most predictions would fail open (admit)")
    rep.summary = (f"{st.model_version}  engine {dev.engine}  thresholds "
                   f"{_fmt(st.thresholds_us)} µs  slo {st.default_deadline_us:g} µs  "
                   f"p_slow {_fmt(st.p_thresholds)}  inference {took:.1f} µs  policy "
                   f"{st.policy.mode}, reject cap {st.max_reject_share:.1%}  mode {st.mode}")
    if not st.policy.rejects and dev.decision_threshold is None:
        after = st.policy.hedge_after_us
        rep.warnings.append(f"never rejects: {st.policy.reason or 'policy hedge'}; clients "
                            f"should hedge after "
                            f"{'?' if after is None else format(after, ',.0f')} µs")
    old = st.bundle.old_format_warning()
    if old is not None:
        rep.warnings.append(old)
    reason = st.bundle.degenerate_reason()
    if reason is not None:
        rep.warnings.append(f"degenerate model (its decisions are not to be trusted): "
                            f"{reason.removeprefix('degenerate: ')}")
    return rep


def check_config(config: Config, models: bool = True) -> list[DeviceReport]:
    """One report per device, in config order."""
    return [check_device(d, config.server, models) for d in config.devices.values()]


def cmd_check(args: argparse.Namespace) -> int:
    config = load_config(args.config)  # ConfigError propagates: exit 2, one line
    reports = check_config(config, models=not args.no_models)
    rc = config.records
    if rc is not None:
        print(f"records: {rc.dir}/<alias>/  segments of {rc.segment_mb:g} MB or "
              f"{rc.segment_s:g} s, kept {rc.keep_mb:g} MB or {rc.keep_hours:g} h per device")
    for r in reports:
        for line in r.lines():
            print(line)
    failed = [r.alias for r in reports if not r.ok]
    if failed:
        print(f"mittd: check: {len(failed)} of {len(reports)} device(s) have problems: "
              f"{', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


def add_commands(commands: Any) -> None:
    """Register ``check`` on the ``mittd`` subparsers object."""
    p = commands.add_parser(
        "check", help="validate a daemon config and every device's model bundle",
        description="Load the config, then every device's model bundle, and build its "
                    "inference engine, as 'mittd serve' would; print one line per device. "
                    "Exit 0 when all are good, 1 when a device has problems (all listed), "
                    "2 when the config itself is invalid.")
    p.add_argument("--config", required=True, metavar="FILE",
                   help="TOML config file (e.g. /etc/mittd/mittd.toml)")
    p.add_argument("--no-models", action="store_true",
                   help="check the config only; do not load bundles or build engines")
    p.set_defaults(func=cmd_check)
