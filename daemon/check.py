"""``mittd check --config FILE``: everything ``mittd serve`` would refuse, found first.

Loading the config catches bad fields; this goes on to load every device's
bundle (checksum, format version, featuriser against the model's input) and to
build its engine, the same steps the daemon takes at start and on SIGHUP, so an
operator can validate a new config or model before reloading (gunicorn's
``--check-config``). Every device is checked even after one fails, so a single
run lists every problem. Exit status: 0 all good, 1 a device has problems, 2
the config itself is invalid (a ``ConfigError``, printed by the caller).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from mittd.daemon.config import Config, ConfigError, DeviceConfig, load_config
from mittd.predictor.bundle import BundleError, load_bundle
from mittd.predictor.engines import make_engine

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


def _fmt(xs: list[float]) -> str:
    return "[" + ", ".join(f"{x:g}" if x != int(x) else f"{x:.1f}" for x in xs) + "]"


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


def check_device(dev: DeviceConfig, predict_budget_us: float, models: bool = True
                 ) -> DeviceReport:
    """Load ``dev``'s bundle and build its engine, collecting every problem found."""
    rep = DeviceReport(dev.alias, str(dev.path))
    if not models:
        rep.summary = f"model {dev.model} (not loaded: --no-models)  engine {dev.engine}"
        return rep
    try:
        bundle = load_bundle(dev.model)
    except BundleError as e:
        rep.problems.append(str(e))
        return rep
    latency = bundle.latency_thresholds_us()
    if dev.slo_us is None and not latency:
        rep.problems.append(f"devices.{dev.alias}.slo_us is not set and the bundle carries "
                            "no latency threshold to default to; set slo_us")
    if dev.decision_threshold is None:
        cutoffs = bundle.decision_thresholds()
        bad = [c for c in cutoffs if not 0.0 < c < 1.0]
        if bad:
            rep.problems.append(f"{dev.model}: bundle decision threshold(s) {bad} not in "
                                f"(0, 1); set devices.{dev.alias}.decision_threshold")
    else:
        cutoffs = [dev.decision_threshold]
    try:
        engine = make_engine(dev.engine, bundle.graph, bundle.params)
        took = _median_inference_us(engine)
    except Exception as e:  # any engine failure is this device's problem, reported
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        rep.problems.append(f"engine {dev.engine} failed on {bundle.version_id}: {msg}")
        return rep
    if took > predict_budget_us:
        rep.warnings.append(
            f"median inference {took:.1f} µs exceeds server.predict_budget_us "
            f"{predict_budget_us:g}: most predictions would fail open (admit)")
    slo = dev.slo_us if dev.slo_us is not None else (latency[0] if latency else 0.0)
    rep.summary = (f"{bundle.version_id}  engine {dev.engine}  thresholds {_fmt(latency)} µs"
                   f"  slo {slo:g} µs  p_slow {_fmt(cutoffs)}  inference {took:.1f} µs")
    return rep


def check_config(config: Config, models: bool = True) -> list[DeviceReport]:
    """One report per device, in config order."""
    budget = config.server.predict_budget_us
    return [check_device(d, budget, models) for d in config.devices.values()]


def cmd_check(args: argparse.Namespace) -> int:
    config = load_config(args.config)  # ConfigError propagates: exit 2, one line
    reports = check_config(config, models=not args.no_models)
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
