"""Regenerate the committed Python stubs of ``mittd.proto`` with grpcio-tools.

Usage::

    python -m mittd.proto.generate            # rewrite proto/mittd_pb2{.py,.pyi,_grpc.py}
    python -m mittd.proto.generate --check    # exit 1 if the committed stubs are stale
    python -m mittd.proto.generate --out-dir DIR

protoc writes ``import mittd_pb2 as mittd__pb2`` into the gRPC stub, which only
works with ``proto/`` itself on ``sys.path``. The stubs live in the ``mittd.proto``
package of the ``mittd`` namespace, so that line is rewritten to the absolute
package import ``from mittd.proto import mittd_pb2 as mittd__pb2``. Nothing else
is touched: the committed files are exactly protoc's output plus that fix, which
``tests/proto/test_proto.py`` checks byte for byte.
"""

from __future__ import annotations

import argparse
import filecmp
import re
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

PROTO_DIR = Path(__file__).resolve().parent
PROTO_FILE = PROTO_DIR / "mittd.proto"
PACKAGE = "mittd.proto"

#: The generated files, relative to the output directory, for ``mittd.proto``.
GENERATED = ("mittd_pb2.py", "mittd_pb2.pyi", "mittd_pb2_grpc.py")

_BARE_IMPORT = re.compile(r"^import (\w+_pb2) as (\w+)$", re.MULTILINE)


def fix_imports(text: str, package: str = PACKAGE) -> str:
    """Turn protoc's top-level ``import X_pb2 as Y`` lines into package imports."""
    return _BARE_IMPORT.sub(rf"from {package} import \1 as \2", text)


def _protoc_include() -> str:
    """The directory of the well-known ``google/protobuf/*.proto`` shipped with grpcio-tools."""
    from importlib.resources import files

    return str(files("grpc_tools") / "_proto")


def generate(out_dir: Path | str | None = None, proto_file: Path | str = PROTO_FILE) -> list[Path]:
    """Run protoc (grpcio-tools) on ``proto_file`` and write the fixed stubs to ``out_dir``.

    ``out_dir`` defaults to the folder of ``proto_file``. Returns the written paths.
    Raises ``ModuleNotFoundError`` if grpcio-tools is missing and ``RuntimeError``
    if protoc fails or the gRPC stub's import could not be fixed.
    """
    try:
        from grpc_tools import protoc
    except ModuleNotFoundError as exc:  # pragma: no cover - depends on the environment
        raise ModuleNotFoundError(
            "grpcio-tools is needed to regenerate the stubs: pip install -e '.[dev]'"
        ) from exc

    proto_file = Path(proto_file).resolve()
    out = Path(out_dir).resolve() if out_dir is not None else proto_file.parent
    out.mkdir(parents=True, exist_ok=True)
    args = [
        "grpc_tools.protoc",
        f"--proto_path={proto_file.parent}",
        f"--proto_path={_protoc_include()}",
        f"--python_out={out}",
        f"--pyi_out={out}",
        f"--grpc_python_out={out}",
        proto_file.name,
    ]
    rc = protoc.main(args)
    if rc != 0:
        raise RuntimeError(f"protoc failed (exit {rc}) on {proto_file}")

    stem = proto_file.stem
    written = [out / f"{stem}_pb2.py", out / f"{stem}_pb2.pyi", out / f"{stem}_pb2_grpc.py"]
    for path in written:
        text = path.read_text(encoding="utf-8")
        fixed = fix_imports(text)
        if path.name.endswith("_grpc.py") and f"from {PACKAGE} import {stem}_pb2 " not in fixed:
            raise RuntimeError(f"could not fix the import of {stem}_pb2 in {path}")
        path.write_text(fixed, encoding="utf-8")
    return written


def stale(proto_file: Path | str = PROTO_FILE) -> list[str]:
    """Names of the committed stubs next to ``proto_file`` that differ from a fresh run."""
    proto_file = Path(proto_file).resolve()
    with tempfile.TemporaryDirectory() as tmp:
        fresh = generate(tmp, proto_file)
        return [
            f.name
            for f in fresh
            if not (proto_file.parent / f.name).is_file()
            or not filecmp.cmp(f, proto_file.parent / f.name, shallow=False)
        ]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m mittd.proto.generate",
        description="Regenerate the Python gRPC stubs of mittd.proto (grpcio-tools).",
    )
    parser.add_argument("--proto", type=Path, default=PROTO_FILE, help="the .proto file")
    parser.add_argument(
        "--out-dir", type=Path, default=None, help="where to write (default: next to the .proto)"
    )
    parser.add_argument(
        "--check", action="store_true", help="write nothing; exit 1 if the committed stubs differ"
    )
    ns = parser.parse_args(argv)
    try:
        if ns.check:
            bad = stale(ns.proto)
            if bad:
                print(f"stale stubs: {', '.join(bad)}; run python -m mittd.proto.generate",
                      file=sys.stderr)
                return 1
            print("stubs are up to date")
            return 0
        for path in generate(ns.out_dir, ns.proto):
            print(path)
    except (ModuleNotFoundError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
