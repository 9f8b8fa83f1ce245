"""The bad-input harness (issue 15): every ``mittd`` subcommand against a corpus of
bad inputs. A case passes when ``mittd.daemon.cli.main(argv)`` ends with exit
status 2 and its last stderr line is one ``mittd…: error: …`` line (no traceback),
within a per-case time limit.

Why a harness: argument and file validation rots one subcommand at a time; walking
the argparse tree (``build_parser()``) means a new subcommand or a new numeric
option without validation fails here, not in a user's terminal.

The case families:

- ``num``: every option with a ``type`` gets out-of-range and non-numbers (0, -1,
  nan, inf, 1e400, huge, ``abc``, empty, 1.5 for integers). They must be refused
  by argparse itself (``parse_args``), before any work: an option typed plain
  ``int``/``float`` accepts them, which is the finding. Values that are meaningful
  for an option (``--probe-after 0``: never probe) are listed in ``VALID``.
- ``file``: every path argument gets a missing path, a directory, an empty file,
  garbage bytes, a Parquet trace and a bundle cut in half, and bundles whose
  manifest is of the wrong type (built at run time from the shipped heimdall).
- ``out``: output paths that are a directory, in a missing folder, or the input
  (every case also checks that the shared good bundle and trace were not written).
- ``val``: values the command parses itself (sizes, SLOs, lists, policies,
  directories, daemon addresses) that are nonsense.
- ``cfg``: daemon configs (``check``/``serve``/``status --config``) that are
  garbage, of the wrong types or name a missing or broken bundle (``check`` on a
  bundle that does not load is its documented exit 1, "device(s) have problems").
- ``extra``: train/prune/compress/tune with TensorFlow "not installed".
- ``arg``: an unknown option for every subcommand; ``said``: refusals whose
  message must say a given thing (the former tests/test_bad_cli_args.py).

Commands that do long work on good input (collect, serve, demo, bench live ...)
only get inputs that must fail before the work; the per-case alarm
(``CASE_TIMEOUT_S``, pytest-timeout is not in the dev extra) turns a hang into a
failure instead of a stuck suite.

No case is expected to fail: a finding is fixed, not marked.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import shutil
import signal
import sys
import zipfile
from collections import Counter
from collections.abc import Iterator
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path

import pytest

from mittd.daemon.cli import build_parser, main
from mittd.predictor.shipped import shipped_bundle
from mittd.traces.shipped import shipped_trace

CASE_TIMEOUT_S = 20
MIN_CASES_PER_COMMAND = 5


# --- the argparse tree --------------------------------------------------------------

def leaves(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
           ) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    """Every runnable subcommand ("bench live", "trace info", ...) and its parser."""
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        yield " ".join(path), parser
        return
    for s in subs:
        for name, sub in s.choices.items():
            yield from leaves(sub, (*path, name))


PARSER = build_parser()
LEAVES = dict(leaves(PARSER))

# Minimal argv that parses for each subcommand (placeholders: see ``corpus``): the
# numeric cases add one option to it, so a refusal names that option, not a missing
# required argument. A new subcommand needs an entry here (test_every_command_...).
BASE: dict[str, list[str]] = {
    "trace info": ["{T}"],
    "trace convert": ["{T}", "{tmp}/conv.parquet"],
    "trace formats": [],
    "collect": ["{tmp}/dev", "-o", "{tmp}/c.parquet"],
    "model describe": ["{B}"],
    "model upgrade": ["{B}", "-o", "{tmp}/u.mittd"],  # never in place: B is shared
    "bench predictor": [],
    "fleet train": ["{T}", "-o", "{tmp}/fm"],
    "fleet replay": ["{T}", "--models", "{tmp}/fm"],
    "fleet report": ["{tmp}"],
    "fleet tune": ["{T}"],
    "fleet bench": [],
    "bench cold": ["--ios", "1", "--idle-ms", "1"],
    "bench rpc": [],
    "bench live": [],
    "bench tailcut": [],
    "bench records": [],
    "bench shadow": ["--dir", "{tmp}", "--bundle", "{B}", "--seconds", "1",
                     "--records", "{tmp}/rec"],
    "bench embedded": [],
    "eie report": ["{B}"],
    "check": ["--config", "{cfg_good}"],
    "serve": ["--config", "{cfg_good}"],
    "status": [],
    "replay": ["{T}", "-m", "{B}", "-o", "{tmp}/r"],
    "demo": [],
    "train": ["{T}", "-o", "{tmp}/t.mittd"],
    "prune": ["{B}", "--sparsity", "0.5", "-o", "{tmp}/p.mittd"],
    "compress": ["{B}", "--weights", "fp16", "-o", "{tmp}/c.mittd"],
    "tune": ["{T}"],
    "evaluate": ["{B}", "--trace", "{T}"],
}

# Values that mean something for an option, so its numeric cases skip them.
VALID: dict[tuple[str, str], set[str]] = {
    ("bench predictor", "--sparsity"): {"0"},  # the dense baseline
    ("bench rpc", "--sparsity"): {"0"},
    ("bench rpc", "--deadline-us"): {"0"},  # the model's first threshold
    ("bench live", "--probe-after"): {"0"},  # never probe
    ("bench live", "--validation-rounds"): {"0"},  # no validation window
    ("bench live", "--hedge-after-us"): {"0"},  # hedge at once
    ("bench live", "--deadline-us"): set(),
    ("eie report", "--synthetic-sparsity"): {"0"},
    ("replay", "--probe-after"): {"0"},
    ("replay", "--failover-cost-us"): {"0"},
    ("replay", "--hedge-after-us"): {"0"},
    ("replay", "--from"): {"0"},
    ("evaluate", "--from"): {"0"},
    ("train", "--validation-fraction"): {"0"},
    ("collect", "--rwmixread"): {"0"},  # writes only
    ("serve", "--grace"): {"0"},  # stop at once on TERM
    ("fleet train", "--retries"): {"0"},  # never re-run a dead worker's task
    ("fleet replay", "--retries"): {"0"},
    ("fleet tune", "--retries"): {"0"},
    ("fleet train", "--from"): {"0"},  # replay the whole trace
    ("fleet replay", "--from"): {"0"},
    ("bench tailcut", "--slo"): {"1e300"},  # µs: silly but grammatical (predictor/slo.py)
}
for _leaf in LEAVES:  # every seed may be 0; numpy's default_rng takes any size
    VALID.setdefault((_leaf, "--seed"), set()).add("0")
    if _leaf.startswith("bench") or _leaf == "replay":
        VALID[(_leaf, "--seed")].add("9" * 30)

NUMBERS = ["0", "-1", "nan", "inf", "-inf", "1e400", "abc", ""]
HUGE_INT = "9" * 30
HUGE_FLOAT = "1e300"


def _is_float(action: argparse.Action) -> bool:
    try:
        action.type("0.5")  # type: ignore[misc]
    except (argparse.ArgumentTypeError, ValueError, TypeError):
        return False
    return True


# --- the cases ----------------------------------------------------------------------

@dataclass
class Case:
    """One run of ``mittd``: ``argv`` (with ``{placeholders}``), what must happen."""

    id: str
    command: str
    argv: list[str]
    says: str = ""  # a substring of the last stderr line
    parse_only: bool = False  # must be refused by argparse (never runs the command)
    no_tf: bool = False  # TensorFlow "not installed"
    rc: int = 2


def numeric_cases() -> list[Case]:
    cases = []
    for leaf, parser in LEAVES.items():
        for action in parser._actions:
            if action.type is None or not action.option_strings or action.choices:
                continue
            opt = action.option_strings[-1] if action.option_strings[-1].startswith("--") \
                else action.option_strings[0]
            if opt == "--json":
                continue
            kind_float = _is_float(action)
            values = [*NUMBERS, HUGE_FLOAT if kind_float else HUGE_INT]
            if not kind_float:
                values.append("1.5")
            if getattr(action.type, "__name__", "").endswith(("_file", "_dir")):
                continue  # a path type: the ``out`` cases
            for v in values:
                if v in VALID.get((leaf, opt), set()):
                    continue
                cases.append(Case(f"num:{leaf}:{opt}={v or 'EMPTY'}", leaf,
                                  [*leaf.split(), *BASE[leaf], f"{opt}={v}"],
                                  says=opt, parse_only=True))
    return cases


# Path arguments of every subcommand: "{X}" is replaced by each bad file.
PATH_SLOTS: dict[str, list[list[str]]] = {
    "trace info": [["{X}"]],
    "trace convert": [["{X}", "{tmp}/conv.parquet"]],
    "collect": [["{tmp}/dev", "-o", "{tmp}/c.parquet", "--size", "1M", "--replay", "{X}"]],
    "model describe": [["{X}"]],
    "model upgrade": [["{X}", "-o", "{tmp}/u.mittd"]],
    "fleet report": [["{X}"]],
    "bench records": [["--bundle", "{X}", "--ios", "100", "--rounds", "1"],
                      ["--latencies", "{X}", "--ios", "100", "--rounds", "1"]],
    "bench rpc": [["--bundle", "{X}"]],
    "bench cold": [["--bundle", "{X}", "--ios", "1", "--idle-ms", "1"]],
    "bench embedded": [["--model", "{X}", "--no-io", "--ops", "10", "--rounds", "1"]],
    "bench shadow": [["--dir", "{tmp}", "--bundle", "{X}", "--seconds", "0.5",
                      "--records", "{tmp}/rec", "--busy", "0", "--size", "1M"]],
    "bench live": [["--model", "{X}", "--duration", "1", "--dir", "{tmp}"],
                   ["--trace", "{X}", "--duration", "1", "--dir", "{tmp}"]],
    "eie report": [["{X}"], ["{B}", "--trace", "{X}"]],
    "replay": [["{X}", "-m", "{B}", "-o", "{tmp}/r"], ["{T}", "-m", "{X}", "-o", "{tmp}/r"],
               ["{T}", "-m", "{B}", "--replica", "{X}", "-o", "{tmp}/r"]],
    "train": [["{X}", "-o", "{tmp}/t.mittd"]],
    "prune": [["{X}", "--sparsity", "0.5", "-o", "{tmp}/p.mittd"],
              ["{B}", "--sparsity", "0.5", "--trace", "{X}", "-o", "{tmp}/p.mittd"]],
    "compress": [["{X}", "--weights", "fp16", "-o", "{tmp}/c.mittd"]],
    "tune": [["{X}"]],
    "evaluate": [["{X}", "--trace", "{T}"], ["{B}", "--trace", "{X}"]],
    "check": [["--config", "{X}"]],
    "serve": [["--config", "{X}"]],
    "status": [["--config", "{X}"]],
}
# Which slots take a bundle (they also get the wrong-manifest bundles).
BUNDLE_SLOTS = {("model describe", 0), ("model upgrade", 0), ("bench records", 0),
                ("bench embedded", 0), ("bench shadow", 0), ("bench live", 0), ("eie report", 0),
                ("replay", 1), ("prune", 0), ("compress", 0), ("evaluate", 0), ("bench rpc", 0),
                ("bench cold", 0)}
BAD_FILES = ["missing", "adir", "empty", "garbage", "trunc_parquet", "trunc_bundle",
             "garbage_parquet"]
BAD_BUNDLES = ["man_list", "man_empty", "man_null", "man_str", "man_notjson", "no_manifest",
               "man_format", "man_graph_list", "man_layers_str", "man_featuriser_str",
               "man_dim_str", "man_nodes_int", "npy_garbage", "npy_missing", "not_zip_mittd"]


def file_cases() -> list[Case]:
    cases = []
    for leaf, slots in PATH_SLOTS.items():
        for i, slot in enumerate(slots):
            names = BAD_FILES + (BAD_BUNDLES if (leaf, i) in BUNDLE_SLOTS else [])
            for name in names:
                argv = [a.replace("{X}", "{" + name + "}") for a in slot]
                cases.append(Case(f"file:{leaf}:{i}:{name}", leaf, [*leaf.split(), *argv]))
    return cases


def output_cases() -> list[Case]:
    """Output paths that cannot be written: a directory, a missing folder, an input.

    A file output (``--json``, ``--png``, a bundle) must not be a directory, sit in a
    missing folder, or be one of the command's own inputs (overwriting the trace or
    bundle it reads); a report directory (``-o DIR``, created when missing) must not
    be an existing file."""
    files = {  # key: (argv with {O} for the output, the input {O} may not be)
        "trace convert": (["{T}", "{O}"], "{T}"),
        "collect": (["{tmp}/dev", "--size", "1M", "-o", "{O}"], ""),
        "train": (["{T}", "-o", "{O}"], "{T}"),
        "prune": (["{B}", "--sparsity", "0.5", "-o", "{O}"], "{B}"),
        "compress": (["{B}", "--weights", "fp16", "-o", "{O}"], "{B}"),
        "model upgrade": (["{B}", "-o", "{O}"], ""),  # in place is its default
        "tune": (["{T}", "--json", "{O}"], "{T}"),
        "evaluate": (["{B}", "--trace", "{T}", "--json", "{O}"], "{T}"),
        "evaluate bundle": (["{B}", "--trace", "{T}", "--json", "{O}"], "{B}"),
        "eie report": (["{B}", "--json", "{O}"], "{B}"),
        "eie report trace": (["{B}", "--trace", "{T}", "--json", "{O}"], "{T}"),
        "eie report png": (["{B}", "--png", "{O}"], "{B}"),
        "bench predictor": (["--json", "{O}"], ""),
        "bench rpc": (["--bundle", "{B}", "--json", "{O}"], "{B}"),
        "bench live": (["--model", "{B}", "--json", "{O}", "--duration", "1"], "{B}"),
        "bench live trace": (["--trace", "{T}", "--json", "{O}", "--duration", "1"], "{T}"),
        "bench live png": (["--model", "{B}", "--png", "{O}", "--duration", "1"], "{B}"),
        "bench records": (["--bundle", "{B}", "--json", "{O}"], "{B}"),
        "bench cold": (["--bundle", "{B}", "--ios", "1", "--idle-ms", "1", "--json", "{O}"],
                       "{B}"),
        "bench records latencies": (["--latencies", "{T}", "--json", "{O}"], "{T}"),
        "bench shadow": (["--dir", "{tmp}", "--bundle", "{B}", "--seconds", "1",
                          "--records", "{tmp}/rec", "--json", "{O}"], "{B}"),
        "bench embedded": (["--model", "{B}", "--json", "{O}"], "{B}"),
    }
    dirs = {
        "replay": ["{T}", "-m", "{B}", "-o", "{O}"],
        "bench live -o": ["-o", "{O}", "--duration", "1"],
        "bench tailcut": ["-o", "{O}", "--workloads", "1"],
        "bench shadow records": ["--dir", "{tmp}", "--bundle", "{B}", "--seconds", "1",
                                 "--records", "{O}"],
        "collect keep-logs": ["{tmp}/dev", "--size", "1M", "-o", "{tmp}/c.parquet",
                              "--keep-logs", "{O}"],
        "demo": ["-o", "{O}", "--no-live"],
        "train report": ["{T}", "-o", "{tmp}/t.mittd", "--report", "{O}"],
        "prune report": ["{B}", "--sparsity", "0.5", "-o", "{tmp}/p.mittd", "--report", "{O}"],
    }
    cases = []

    def add(key: str, what: str, argv: list[str], path: str) -> None:
        leaf = next(k for k in LEAVES if key == k or key.startswith(k + " "))
        cases.append(Case(f"out:{key}:{what}", leaf,
                          [*leaf.split(), *[a.replace("{O}", path) for a in argv]]))

    for key, (argv, inp) in files.items():
        add(key, "dir", argv, "{adir}")
        add(key, "nofolder", argv, "{tmp}/no/such/dir/x.out")
        if inp:
            add(key, "input", argv, inp)
    for key, argv in dirs.items():
        add(key, "file", argv, "{empty}")
        add(key, "under-a-file", argv, "{empty}/sub")
    return cases


def value_cases() -> list[Case]:
    """Options parsed by the command itself (sizes, lists, SLOs): nonsense values."""
    v: list[tuple[str, list[str]]] = []
    for size in ["0", "-1", "abc", "1e400", "", "99999999999999999999999T"]:
        v += [(f"bench tailcut --size={size}", ["--workloads", "1"]),
              (f"bench embedded --size={size}", ["--ops", "10", "--rounds", "1"]),
              (f"bench shadow --size={size}", ["--dir", "{tmp}", "--bundle", "{B}",
                                               "--seconds", "1", "--records", "{tmp}/rec"]),
              (f"bench shadow --read-size={size}", ["--dir", "{tmp}", "--bundle", "{B}",
                                                    "--seconds", "1", "--records",
                                                    "{tmp}/rec"]),
              (f"bench live --size={size}", ["--duration", "1"]),
              (f"collect --size={size}", ["{tmp}/dev", "-o", "{tmp}/c.parquet"]),
              (f"collect --bs={size}", ["{tmp}/dev", "-o", "{tmp}/c.parquet", "--size",
                                        "1M"])]
    for busy in ["-1", "2", "nan", "abc", "0.5,abc", ""]:
        v += [(f"bench live --busy={busy}", ["--duration", "1"]),
              (f"bench shadow --busy={busy}", ["--dir", "{tmp}", "--bundle", "{B}",
                                               "--seconds", "1", "--records", "{tmp}/rec"])]
    for lst in ["0", "-1", "abc", "", ",", "1.5", "9" * 30]:
        v += [(f"eie report --pes={lst}", ["{B}"]),
              (f"bench rpc --clients={lst}", [])]
    for cut in ["0", "1", "nan", "abc", "0.9,x", "-0.5"]:
        v += [(f"bench live --validation-cutoffs={cut}", ["--duration", "1"])]
    for slo in ["abc", "-5us", "0", "p0", "p101", "nan", ""]:
        v += [(f"replay --slo={slo}", ["{T}", "-m", "{B}", "-o", "{tmp}/r"]),
              (f"train --slo={slo}", ["{T}", "-o", "{tmp}/t.mittd"]),
              (f"bench tailcut --slo={slo}", ["--workloads", "1"])]
    for pol in ["", "nope", "baseline,,nope"]:
        v += [(f"replay --policy={pol}", ["{T}", "-m", "{B}", "-o", "{tmp}/r"])]
    for eng in ["nope", ""]:
        v += [(f"bench embedded --engine={eng}", ["--ops", "10", "--rounds", "1",
                                                  "--no-io"])]
    for runtime in ["0", "-1s", "abc", ""]:
        v += [(f"collect --runtime={runtime}", ["{tmp}/dev", "-o", "{tmp}/c.parquet",
                                                "--size", "1M"])]
    v += [("collect --job=nonsense", ["{tmp}/dev", "-o", "{tmp}/c.parquet", "--size", "1M"]),
          ("collect --keep-logs={empty}", ["{tmp}/dev", "-o", "{tmp}/c.parquet", "--size",
                                           "1M"]),
          ("bench tailcut --dir={empty}", ["--workloads", "1"]),
          ("bench tailcut --dir={tmp}/no/such", ["--workloads", "1"]),
          ("bench embedded --dir={empty}", ["--ops", "10", "--rounds", "1"]),
          ("bench embedded --dir={tmp}/no/such", ["--ops", "10", "--rounds", "1"]),
          ("bench records --dir={empty}", ["--ios", "100", "--rounds", "1"]),
          ("bench records --dir={tmp}/no/such", ["--ios", "100", "--rounds", "1"]),
          ("bench rpc --dir={empty}", []),
          ("bench rpc --dir={tmp}/no/such", []),
          ("bench shadow --dir={empty}", ["--bundle", "{B}", "--seconds", "1", "--records",
                                          "{tmp}/rec"]),
          ("bench shadow --dir={tmp}/no/such", ["--bundle", "{B}", "--seconds", "1",
                                                "--records", "{tmp}/rec"]),
          ("bench live --dir={empty}", ["--duration", "1"]),
          ("bench live --dir={tmp}/no/such", ["--duration", "1"]),
          ("bench live --target={tmp}/no/such", ["--duration", "1"]),
          ("bench live --target={adir}", ["--duration", "1"]),
          ("eie report --synthetic-sparsity=0.5 nosuchmodel", []),
          ("model describe nosuchmodel", []),
          ("status --socket={tmp}/no.sock", ["--timeout", "1"]),
          ("status --socket={empty}", ["--timeout", "1"]),
          ("status --target=nohost:0", ["--timeout", "1"]),
          ("status --target=garbage", ["--timeout", "1"]),
          ("status --target=127.0.0.1:1", ["--timeout", "1"]),
          ("status --target=127.0.0.1:1 --ca={garbage}", ["--timeout", "1"]),
          ("status --target=127.0.0.1:1 --ca={missing}", ["--timeout", "1"]),
          ("status --target=127.0.0.1:1 --cert={garbage}", ["--timeout", "1"]),
          ("status --socket={tmp}/no.sock --ca={garbage}", ["--timeout", "1"]),
          ("trace info --format=msr {garbage}", []),
          ("trace info --format=blkparse {garbage}", []),
          ("trace info --format=fio {garbage}", []),
          ("trace info --format=parquet {garbage}", []),
          ("trace info --format=linnos-in {empty}", []),
          ("trace convert {T} {T}", ["--force"]),
          ("evaluate {B} --trace={T} --format=nope", []),
          ("tune {T} --trials=0", []),
          ("prune {B} --sparsity=0.5 --group=0", ["-o", "{tmp}/p.mittd"]),
          ]
    for address in ["127.0.0.1:1", "ray://127.0.0.1:1", "nohost", "host:99999"]:
        v += [(f"fleet train {{T}} --address={address}", ["-o", "{tmp}/fm"]),
              (f"fleet replay {{T}} --address={address}", ["--models", "{tmp}/fm"]),
              (f"fleet tune {{T}} --address={address}", [])]
    cases = []
    for text, rest in v:
        words = text.split()
        leaf = next(k for k in sorted(LEAVES, key=len, reverse=True)
                    if words[:len(k.split())] == k.split())
        cases.append(Case(f"val:{text}", leaf, [*words, *rest]))
    return cases


# Configs whose only fault is the bundle's content: ``check`` reports the device
# (its documented exit 1, "N of M device(s) have problems"), ``--no-models`` does
# not load bundles at all, so passes them.
MODEL_CONTENT = {"model_garbage", "model_trunc", "model_man_list", "model_man_empty"}


def message_cases() -> list[Case]:
    """Refusals whose message must say a given thing (from the first round of issue
    15, where each was a traceback, an exit 0 or 1 after the work, or a 262 GiB
    allocation)."""
    said = [
        (["evaluate", "{B}", "--trace", "{T}", "--decision-threshold", "0"],
         "--decision-threshold"),
        (["evaluate", "{B}", "--trace", "{T}", "--decision-threshold", "5"], "in (0, 1)"),
        (["evaluate", "{B}", "--trace", "{T}", "--decision-threshold", "nan"], "in (0, 1)"),
        (["evaluate", "{B}", "--trace", "{T}", "--json", "{tmp}"], "is a directory"),
        (["evaluate", "{B}", "--trace", "{T}", "--json", "{tmp}/no/such/x.json"],
         "does not exist"),
        (["eie", "report", "{B}", "--json", "{tmp}"], "is a directory"),
        (["eie", "report", "{B}", "--pes", "100000000"], "more PEs than"),
        (["eie", "report", "{B}", "--json", "{B}"], "refusing to overwrite"),
        (["replay", "{T}", "-m", "{B}", "-o", "{tmp}/r", "--seed=-1"], "--seed"),
        (["replay", "{T}", "-m", "{B}", "-o", "{empty}"], "is a file, expected a directory"),
        (["replay", "{T}", "-m", "{B}", "-o", "{tmp}/r", "--decision-threshold", "1.5"],
         "in (0, 1)"),
        (["bench", "predictor", "--calls", "0"], "--calls"),
        (["bench", "records", "--json", "{tmp}"], "is a directory"),
        (["bench", "records", "--bundle", "{B}", "--json", "{B}"], "refusing to overwrite"),
        (["bench", "embedded", "--seed", "-3"], "--seed"),
        (["bench", "live", "--png", "{tmp}/x.svg"], "ending in .png"),
        (["bench", "tailcut", "--slo", "p101"], "percentile must be in (0, 100]"),
        (["bench", "rpc", "--dir", "{empty}"], "not an existing directory"),
        (["train", "{T}", "--epochs", "0", "-o", "{tmp}/x.mittd"], "--epochs"),
        (["train", "{T}", "--batch-size", "-1", "-o", "{tmp}/x.mittd"], "--batch-size"),
        (["tune", "{T}", "--json", "{tmp}"], "is a directory"),
    ]
    return [Case(f"said:{' '.join(a[:2])}-{i}", next(k for k in sorted(LEAVES, key=len,
                                                                         reverse=True)
                                                       if a[:len(k.split())] == k.split()),
                 a, says=says) for i, (a, says) in enumerate(said)]


def config_cases() -> list[Case]:
    cases = []
    for name in CONFIGS:
        cfg = "{cfg_" + name + "}"
        cases.append(Case(f"cfg:serve:{name}", "serve", ["serve", "--config", cfg]))
        cases.append(Case(f"cfg:status:{name}", "status", ["status", "--config", cfg,
                                                           "--timeout", "1"]))
        if name in MODEL_CONTENT:
            cases.append(Case(f"cfg:check:{name}", "check", ["check", "--config", cfg], rc=1,
                              says="have problems: nvme0"))
        else:
            cases.append(Case(f"cfg:check:{name}", "check", ["check", "--config", cfg]))
            cases.append(Case(f"cfg:check --no-models:{name}", "check",
                              ["check", "--no-models", "--config", cfg]))
    return cases


def unknown_option_cases() -> list[Case]:
    """Every subcommand refuses an unknown option and a stray argument (argparse)."""
    cases = []
    for leaf in LEAVES:
        cases.append(Case(f"arg:{leaf}:unknown-option", leaf,
                          [*leaf.split(), *BASE[leaf], "--no-such-option"],
                          says="unrecognized arguments", parse_only=True))
        if leaf == "trace formats":
            for extra in ("x", "--json", "-", "--format=msr"):
                cases.append(Case(f"arg:{leaf}:{extra}", leaf, [*leaf.split(), extra],
                                  parse_only=True))
    return cases


def extra_cases() -> list[Case]:
    """The train extra "not installed": one line naming it, before any work."""
    argvs = {"train": ["train", "{T}", "-o", "{tmp}/t.mittd"],
             "prune": ["prune", "{B}", "--sparsity", "0.5", "-o", "{tmp}/p.mittd"],
             "compress": ["compress", "{B}", "--weights", "fp16", "--finetune", "-o",
                          "{tmp}/c.mittd"],
             "tune": ["tune", "{T}", "--trials", "1"]}
    return [Case(f"extra:{k}:no-tensorflow", k, a, no_tf=True) for k, a in argvs.items()]


# Daemon configs: name -> TOML text ({B} etc. are replaced at run time).
CONFIGS: dict[str, str] = {
    "garbage": "\x00\x01[[[ not toml ===",
    "empty": "",
    "server_int": "server = 5\n",
    "devices_list": "devices = [1, 2]\n",
    "device_str": "[devices]\nnvme0 = 'x'\n",
    "no_model": "[devices.nvme0]\npath = '{dev}'\n",
    "model_missing": "[devices.nvme0]\npath = '{dev}'\nmodel = '{missing}'\n",
    "model_garbage": "[devices.nvme0]\npath = '{dev}'\nmodel = '{garbage}'\n",
    "model_trunc": "[devices.nvme0]\npath = '{dev}'\nmodel = '{trunc_bundle}'\n",
    "model_man_list": "[devices.nvme0]\npath = '{dev}'\nmodel = '{man_list}'\n",
    "model_man_empty": "[devices.nvme0]\npath = '{dev}'\nmodel = '{man_empty}'\n",
    "model_dir": "[devices.nvme0]\npath = '{dev}'\nmodel = '{adir}'\n",
    "path_missing": "[devices.nvme0]\npath = '{missing}'\nmodel = '{B}'\n",
    "path_int": "[devices.nvme0]\npath = 7\nmodel = '{B}'\n",
    "engine_bad": "[devices.nvme0]\npath = '{dev}'\nmodel = '{B}'\nengine = 'fast'\n",
    "alignment_bad": "[devices.nvme0]\npath = '{dev}'\nmodel = '{B}'\nalignment = 3\n",
    "probe_neg": "[server]\nprobe_after = -1\n[devices.nvme0]\npath = '{dev}'\n"
                 "model = '{B}'\n",
    "pending_huge": "[server]\nmax_pending_per_device = 99999999999999999\n"
                    "[devices.nvme0]\npath = '{dev}'\nmodel = '{B}'\n",
    "budget_nan": "[server]\npredict_budget_us = nan\n[devices.nvme0]\npath = '{dev}'\n"
                  "model = '{B}'\n",
    "unknown_key": "[server]\nslo_us = 5\n[devices.nvme0]\npath = '{dev}'\nmodel = '{B}'\n",
    "alias_bad": "[devices.'a b/c']\npath = '{dev}'\nmodel = '{B}'\n",
    "tcp_public": "[server]\ntcp = '0.0.0.0:7000'\n[devices.nvme0]\npath = '{dev}'\n"
                  "model = '{B}'\n",
    "mode_bad": "[devices.nvme0]\npath = '{dev}'\nmodel = '{B}'\nmode = 'sometimes'\n",
}


ALL_CASES: list[Case] = [*numeric_cases(), *file_cases(), *output_cases(), *value_cases(),
                         *config_cases(), *extra_cases(), *unknown_option_cases(),
                         *message_cases()]


# --- the corpus ---------------------------------------------------------------------

def _rezip(src: Path, dst: Path, manifest: bytes | None, *, drop: str = "",
           replace: dict[str, bytes] | None = None) -> None:
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for item in zin.namelist():
            if item == drop:
                continue
            data = zin.read(item)
            if item == "manifest.json":
                if manifest is None:
                    continue
                data = manifest
            if replace and item in replace:
                data = replace[item]
            zout.writestr(item, data)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Every bad file, built once per run from the shipped bundle and trace."""
    d = tmp_path_factory.mktemp("corpus")
    src_b = shipped_bundle("heimdall")
    b = d / "heimdall.mittd"  # a copy: an "-o INPUT" case must not clobber the shipped one
    shutil.copy(src_b, b)
    t = d / "trace.parquet"
    shutil.copy(shipped_trace(), t)
    man = json.loads(zipfile.ZipFile(src_b).read("manifest.json"))
    c: dict[str, str] = {"B": str(b), "T": str(t)}
    (d / "adir").mkdir()
    c["adir"] = str(d / "adir")
    c["missing"] = str(d / "no-such-file.mittd")
    (d / "empty").write_bytes(b"")
    c["empty"] = str(d / "empty")
    garbage = bytes((i * 131 + 7) % 256 for i in range(4096))
    (d / "garbage.bin").write_bytes(garbage)
    c["garbage"] = str(d / "garbage.bin")
    (d / "garbage.parquet").write_bytes(garbage)
    c["garbage_parquet"] = str(d / "garbage.parquet")
    raw = t.read_bytes()
    (d / "half.parquet").write_bytes(raw[: len(raw) // 2])
    c["trunc_parquet"] = str(d / "half.parquet")
    raw = b.read_bytes()
    (d / "half.mittd").write_bytes(raw[: len(raw) // 2])
    c["trunc_bundle"] = str(d / "half.mittd")
    (d / "notzip.mittd").write_bytes(garbage)
    c["not_zip_mittd"] = str(d / "notzip.mittd")

    def variant(name: str, manifest: object | bytes | None, **kw: object) -> None:
        p = d / f"{name}.mittd"
        data = manifest if isinstance(manifest, bytes) or manifest is None \
            else json.dumps(manifest).encode()
        _rezip(src_b, p, data, **kw)  # type: ignore[arg-type]
        c[name] = str(p)

    variant("man_list", [1, 2, 3])
    variant("man_empty", {})
    variant("man_null", b"null")
    variant("man_str", "a manifest")
    variant("man_notjson", b"{{{ not json")
    variant("no_manifest", None)
    variant("man_format", {**man, "format": 5})
    variant("man_graph_list", {**man, "graph": []})
    variant("man_layers_str", {**man, "layers": "fc1"})
    variant("man_featuriser_str", {**man, "featuriser": "heimdall"})
    variant("man_dim_str", {**man, "featuriser": {**man["featuriser"], "dim": "eleven"}})
    variant("man_nodes_int", {**man, "graph": {**man["graph"], "nodes": 7}})
    variant("npy_garbage", json.dumps(man).encode(), replace={"fc1.kernel.npy": garbage})
    variant("npy_missing", json.dumps(man).encode(), drop="fc1.kernel.npy")

    dev = d / "dev.img"
    dev.write_bytes(b"\0" * (1 << 20))
    c["dev"] = str(dev)
    c["tmp"] = str(d)
    subs = {k: v for k, v in c.items()}
    for name, text in {**CONFIGS, "good": "[devices.nvme0]\npath = '{dev}'\n"
                                          "model = '{B}'\n"}.items():
        p = d / f"cfg_{name}.toml"
        p.write_text(text.format(**subs))
        c[f"cfg_{name}"] = str(p)
    return c


# --- running one case ---------------------------------------------------------------

class CaseTimeout(Exception):
    """The case ran past its time limit: a hang on bad input, or real work."""


def _alarm(_sig: int, _frame: object) -> None:
    raise CaseTimeout("still running at the time limit (CASE_TIMEOUT_S)")


def run_case(case: Case, corpus: dict[str, str], tmp: Path,
             monkeypatch: pytest.MonkeyPatch) -> tuple[int | str, str]:
    subs = {**corpus, "tmp": str(tmp)}
    argv = [a.format(**subs) for a in case.argv]
    if case.no_tf:
        for mod in [m for m in sys.modules if m == "tensorflow" or m.startswith("tensorflow.")
                    or m.startswith(("tf_keras", "tensorflow_model_optimization"))]:
            monkeypatch.delitem(sys.modules, mod)
        for mod in ("tensorflow", "tf_keras", "tensorflow_model_optimization"):
            monkeypatch.setitem(sys.modules, mod, None)
    out, err = io.StringIO(), io.StringIO()
    old = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(CASE_TIMEOUT_S)
    try:
        with redirect_stdout(out), redirect_stderr(err):
            if case.parse_only:
                try:
                    ns = build_parser().parse_args(argv)
                    rc: int | str = f"accepted by argparse: {ns!r}"[:300]
                except SystemExit as e:
                    rc = e.code if isinstance(e.code, int) else 1
            else:
                try:
                    rc = main(argv)
                except SystemExit as e:
                    rc = e.code if isinstance(e.code, int) else 1
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
    return rc, err.getvalue()


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id) for c in ALL_CASES])
def test_bad_input_is_one_line_error(case: Case, corpus: dict[str, str], tmp_path: Path,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Exit 2, one ``mittd…: error:`` line last on stderr, no traceback, in time."""
    monkeypatch.chdir(tmp_path)  # defaults such as out/demo land in the case's tmp dir
    good = {k: Path(corpus[k]).read_bytes() for k in ("B", "T")}
    try:
        rc, err = run_case(case, corpus, tmp_path, monkeypatch)
    finally:  # a case that wrote over an input must not spoil the cases after it
        spoilt = [k for k, data in good.items() if Path(corpus[k]).read_bytes() != data]
        for k in spoilt:
            Path(corpus[k]).write_bytes(good[k])
    assert not spoilt, f"the command wrote over its input {[corpus[k] for k in spoilt]}"
    assert "Traceback" not in err, err[-2000:]
    assert rc == case.rc, f"exit {rc!r}; stderr: {err[-1500:]}"
    lines = err.strip().splitlines()
    assert lines, "no message on stderr"
    last = lines[-1]
    assert last.startswith("mittd"), last
    if case.rc == 2:
        assert ": error: " in last, last
    if case.says:
        assert case.says in last, last


def test_every_command_has_cases() -> None:
    """A new subcommand (a new argparse leaf) must bring its own bad-input cases."""
    assert set(BASE) == set(LEAVES), f"BASE misses {set(LEAVES) - set(BASE)}"
    per = Counter(c.command for c in ALL_CASES)
    thin = {leaf: per[leaf] for leaf in LEAVES if per[leaf] < MIN_CASES_PER_COMMAND}
    assert not thin, f"subcommands with fewer than {MIN_CASES_PER_COMMAND} cases: {thin}"
    assert len(ALL_CASES) >= 300


def test_case_ids_are_unique() -> None:
    ids = {c.id for c in ALL_CASES}
    assert len(ids) == len(ALL_CASES), [i for i, n in Counter(c.id for c in ALL_CASES).items()
                                        if n > 1]


def test_harness_catches_what_it_should(corpus: dict[str, str], tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """The runner itself: a plain ``float`` option is "accepted" (the finding it exists
    to report), an argparse refusal is exit 2."""
    p = argparse.ArgumentParser(prog="mittd x")
    p.add_argument("--f", type=float)
    ns = p.parse_args(["--f=nan"])
    assert math.isnan(ns.f)
    rc, err = run_case(Case("self", "trace info", ["trace", "info", "{missing}"]), corpus,
                       tmp_path, monkeypatch)
    assert rc == 2 and "error" in err


def test_no_option_is_typed_plain_int_or_float() -> None:
    """``type=int``/``type=float`` takes nan, inf, -1 and 10**30: every numeric option
    names its range through a mittd.traces.argtypes-style type instead."""
    plain = {(leaf, a.option_strings[-1]) for leaf, p in LEAVES.items() for a in p._actions
             if a.type in (int, float) and a.option_strings}
    assert not plain, sorted(plain)
