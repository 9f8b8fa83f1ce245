"""The ``mittd`` command: one console script, one subcommand per job.

Each package contributes its own subcommands through an ``add_commands``
function (``mittd.traces.cli`` adds ``trace`` and ``collect``), so this module
only wires them together and turns user mistakes into one-line errors.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version

from mittd.daemon import check, serve, status
from mittd.daemon.bench import cli as bench_cli
from mittd.daemon.bench import demo
from mittd.daemon.replay import cli as replay_cli
from mittd.fleet import cli as fleet_cli
from mittd.predictor import cli as predictor_cli
from mittd.predictor import eie_report
from mittd.traces import cli as traces_cli
from mittd.traces.atomic import OutputError
from mittd.traces.errors import TraceError
from mittd.training import cli as training_cli
from mittd.training import offline_eval

# Exceptions whose message is a complete, user-facing explanation.
USER_ERRORS: tuple[type[BaseException], ...] = (
    TraceError, OutputError, training_cli.TrainingError, *predictor_cli.USER_ERRORS,
    *check.USER_ERRORS, *replay_cli.USER_ERRORS, *demo.USER_ERRORS,
    *offline_eval.USER_ERRORS, *status.USER_ERRORS, *serve.USER_ERRORS,
    *fleet_cli.USER_ERRORS)


def _version() -> str:
    try:
        return version("mittd")
    except PackageNotFoundError:
        return "unknown"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mittd",
        description=(
            "mittd: an SLO-aware latency-prediction daemon for storage. It predicts "
            "whether an IO will miss its deadline from the device's pending requests "
            "and answers EBUSY at once, so clients fail over to another replica "
            "instead of waiting in the tail."
        ),
        epilog="Run 'mittd COMMAND --help' for the options of a command.",
    )
    parser.add_argument("--version", action="version", version=f"mittd {_version()}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True
    traces_cli.add_commands(commands)
    predictor_cli.add_commands(commands)
    bench_cli.add_commands(commands)
    eie_report.add_commands(commands)
    check.add_commands(commands)
    serve.add_commands(commands)
    status.add_commands(commands)
    replay_cli.add_commands(commands)
    demo.add_commands(commands)
    training_cli.add_commands(commands)
    offline_eval.add_commands(commands)
    fleet_cli.add_commands(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except USER_ERRORS as e:
        print(f"mittd: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("mittd: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
