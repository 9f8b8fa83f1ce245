"""Errors raised for bad trace input, and the tally of malformed lines.

A user mistake (wrong format, empty file, garbage lines) must end in one clear
line naming the file and what is wrong, never in a traceback; these classes
carry that line.
"""

from __future__ import annotations

from dataclasses import dataclass, field


class TraceError(Exception):
    """A trace file cannot be read as asked; the message is shown to the user as is."""


class MalformedLineError(TraceError):
    """Raised in strict mode at the first line that does not parse."""


@dataclass
class BadLines:
    """Counts malformed lines and keeps a few of them as a sample for the report."""

    path: str
    strict: bool = False
    sample_size: int = 5
    count: int = 0
    samples: list[tuple[int, str, str]] = field(default_factory=list)
    unit: str = "line"  # "row" for Parquet, where there are no lines

    def where(self, n: int) -> str:
        """``path:12`` for a text line, ``path: row 12`` for a Parquet row."""
        return f"{self.path}:{n}" if self.unit == "line" else f"{self.path}: {self.unit} {n}"

    def add(self, line_no: int, line: str, reason: str) -> None:
        """Record one malformed line (1-based line number); raise when strict."""
        self.count += 1
        text = line if len(line) <= 120 else line[:117] + "..."
        if self.strict:
            raise MalformedLineError(f"{self.where(line_no)}: {reason}: {text!r}")
        if len(self.samples) < self.sample_size:
            self.samples.append((line_no, text, reason))

    def skip(self, n: int) -> None:
        """Count ``n`` more malformed rows beyond the sample (no text built for them)."""
        if n > 0:
            self.count += n

    def summary(self) -> str:
        """Human report: how many lines were skipped, with line numbers and a sample."""
        if not self.count:
            return ""
        lines = [f"{self.path}: skipped {self.count} malformed {self.unit}(s); first ones:"]
        lines += [f"  {self.unit} {n}: {reason}: {text!r}" for n, text, reason in self.samples]
        return "\n".join(lines)
