"""Data on stdout: aligned tables, CSV and JSON, the same for every read command."""

from __future__ import annotations

import csv
import io
import json


def table(header: list[str], body: list[list]) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *body, strict=True)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    lines = [fmt.format(*header)] + [fmt.format(*map(str, r)) for r in body]
    return "\n".join(line.rstrip() for line in lines)


def csv_text(header: list[str], body: list[list]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    w.writerows(body)
    return buf.getvalue().rstrip("\n")


def json_text(data) -> str:
    return json.dumps(data, indent=2)


def indent(text: str, by: str = "  ") -> str:
    return "\n".join(by + line for line in text.splitlines())
