"""Safe YAML loading that remembers where every value came from.

The document is composed into PyYAML nodes (no Python objects are built by PyYAML, so no
unsafe tags and no alias expansion there), then walked once into plain data while recording
the line of each path. Aliases are expanded by the walk, which is bounded, so an alias bomb
stops with an error instead of eating memory.
"""

from __future__ import annotations

import errno
import json
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

import yaml

MAX_BYTES = 1 << 20
MAX_NODES = 200_000

Path_ = tuple[str | int, ...]


@dataclass
class Problem:
    path: Path_
    message: str
    hint: str | None = None
    line: int | None = None


def dotted(path: Path_) -> str:
    out = ""
    for part in path:
        if isinstance(part, int) and not isinstance(part, bool):
            out += f"[{part}]"
        elif isinstance(part, str) and (not part or not part.isprintable() or any(c.isspace() for c in part)):
            # keep a problem on one line with a path of one word: "k8s master" -> ["k8s\u0020master"]
            out += "[" + json.dumps(part).replace(" ", "\\u0020") + "]"
        else:
            out += ("." if out else "") + str(part)
    return out or "(document)"


@dataclass
class Source:
    """Parsed document plus the line (1-based) of every path in it."""

    name: str
    data: object = None
    lines: dict[Path_, int] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)

    def line_of(self, path: Path_) -> int:
        # a missing field is reported at its nearest existing parent
        for n in range(len(path), -1, -1):
            if path[:n] in self.lines:
                return self.lines[path[:n]]
        return 1

    def format(self, p: Problem) -> str:
        line = p.line if p.line is not None else self.line_of(p.path)
        hint = f" ({p.hint})" if p.hint else ""
        # one line per problem, whatever a message quotes (PyYAML's reader errors span two)
        return " ".join(f"{self.name}:{line}: {dotted(p.path)}: {p.message}{hint}".splitlines())


_PLAIN_TAGS = {"tag:yaml.org,2002:seq", "tag:yaml.org,2002:map"}


class _Walker:
    def __init__(self, src: Source):
        self.src = src
        self.count = 0
        self.scalars = yaml.SafeLoader("")

    def walk(self, node: yaml.Node, path: Path_) -> object:
        self.count += 1
        if self.count > MAX_NODES:
            raise _TooBig(node.start_mark.line + 1)
        if not path or path[-1] != "<key>":
            self.src.lines.setdefault(path, node.start_mark.line + 1)
        if isinstance(node, yaml.ScalarNode):
            try:
                return self.scalars.construct_object(node)
            except (ValueError, KeyError, TypeError, OverflowError, AttributeError, IndexError) as e:
                # e.g. 2001-02-30 (a timestamp with no such day), !!int abc, !!bool maybe; PyYAML's
                # timestamp constructor raises AttributeError on a value that is no timestamp at all, its int and
                # float constructors IndexError on an empty one (`!!int` alone)
                msg = f"{node.value!r} cannot be read as {node.tag.rsplit(':', 1)[-1]} ({e})"
                raise yaml.constructor.ConstructorError(None, None, msg, node.start_mark) from None
        if node.tag not in _PLAIN_TAGS and not isinstance(node, yaml.ScalarNode):
            raise yaml.constructor.ConstructorError(None, None, f"tag {node.tag!r} is not allowed", node.start_mark)
        if isinstance(node, yaml.SequenceNode):
            return [self.walk(item, path + (i,)) for i, item in enumerate(node.value)]
        out: dict = {}
        merged: dict = {}
        for knode, vnode in node.value:
            if knode.tag == "tag:yaml.org,2002:merge":
                for src in vnode.value if isinstance(vnode, yaml.SequenceNode) else [vnode]:
                    if isinstance(src, yaml.MappingNode):
                        value = self.walk(src, path)
                        if isinstance(value, dict):
                            for k, v in value.items():
                                merged.setdefault(k, v)
                continue
            key = self.walk(knode, path + ("<key>",))
            if not isinstance(key, (str, int, float, bool)) and key is not None:
                self.src.problems.append(
                    Problem(path, "mapping keys must be plain scalars", line=knode.start_mark.line + 1)
                )
                continue
            kpath = path + (key,)
            if key in out:
                self.src.problems.append(
                    Problem(
                        kpath,
                        f"duplicate key (first at line {self.src.lines[kpath]})",
                        "remove one of them",
                        line=knode.start_mark.line + 1,
                    )
                )
                continue
            self.src.lines[kpath] = knode.start_mark.line + 1
            out[key] = self.walk(vnode, kpath)
        for k, v in merged.items():
            out.setdefault(k, v)
        return out


class _TooBig(Exception):
    def __init__(self, line: int):
        self.line = line


def load(text: str | bytes, name: str) -> Source:
    src = Source(name)
    if isinstance(text, bytes):
        if len(text) > MAX_BYTES:
            src.problems.append(Problem((), f"file is larger than {MAX_BYTES >> 20} MiB", line=1))
            return src
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as e:
            src.problems.append(Problem((), f"not UTF-8 text: {e.reason}", line=1))
            return src
    try:
        nodes = list(yaml.compose_all(text, Loader=yaml.SafeLoader))
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line = mark.line + 1 if mark else 1
        what = " ".join(x for x in (e.context, e.problem) if x)
        src.problems.append(Problem((), f"YAML syntax error: {what}", line=line))
        return src
    except yaml.YAMLError as e:
        src.problems.append(Problem((), f"YAML error: {e}", line=1))
        return src
    except RecursionError:
        src.problems.append(Problem((), "YAML nesting is too deep", line=1))
        return src
    if len(nodes) > 1:
        src.problems.append(
            Problem((), "more than one YAML document", "keep one topology per file", line=nodes[1].start_mark.line + 1)
        )
        return src
    if not nodes or (isinstance(nodes[0], yaml.ScalarNode) and nodes[0].value == ""):
        src.problems.append(Problem((), "the file is empty", "see inventories/seed/topology.yml", line=1))
        return src
    if not isinstance(nodes[0], yaml.MappingNode):
        src.problems.append(
            Problem(
                (), "the document must be a mapping of fields (name, nodes, ...)", line=nodes[0].start_mark.line + 1
            )
        )
        return src
    try:
        src.data = _Walker(src).walk(nodes[0], ())
    except _TooBig as e:
        src.problems.append(
            Problem((), f"document expands to more than {MAX_NODES} values", "an alias bomb?", line=e.line)
        )
        src.data = None
    except RecursionError:
        src.problems.append(Problem((), "YAML nesting is too deep", line=1))
        src.data = None
    except yaml.constructor.ConstructorError as e:
        line = e.problem_mark.line + 1 if e.problem_mark else 1
        src.problems.append(Problem((), f"unsupported YAML value: {e.problem}", line=line))
        src.data = None
    return src


def load_file(path: Path) -> Source:
    try:
        # O_NONBLOCK: opening a FIFO waits for a writer; only a regular file is read at all
        with open(os.open(path, os.O_RDONLY | os.O_NONBLOCK), "rb") as f:
            mode = os.fstat(f.fileno()).st_mode
            if stat.S_ISDIR(mode):
                raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR))
            if not stat.S_ISREG(mode):
                src = Source(str(path))
                src.problems.append(Problem((), "cannot read: not a regular file (a FIFO or a device)", line=1))
                return src
            raw = f.read(MAX_BYTES + 1)
    except OSError as e:
        src = Source(str(path))
        src.problems.append(Problem((), f"cannot read: {e.strerror}", line=1))
        return src
    return load(raw, str(path))
