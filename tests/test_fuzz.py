"""Property tests (hypothesis): whatever text, bytes, topology or arguments come in, labctl answers with
one `FILE:LINE: path: message` line per problem (or a short usage error) and an exit code of 0, 1 or 2,
never a traceback. Nothing here can reach a real lab: LABCTL_HOME is a fresh empty directory for every
CLI example, `up`/`down` only ever see unreadable or invalid topologies, and every function that could
touch the host (playbooks, namespaces, rmtree outside the labs home) is stubbed to fail loudly."""

from __future__ import annotations

import copy
import json
import re
import shutil
import tempfile
import types
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from conftest import SEED
from labctl import cli
from labctl.errors import TopologyError
from labctl.outputs import render, runner
from labctl.plan import layout
from labctl.spec import schedule, schema, topology, yamlsrc

pytestmark = pytest.mark.unit

PROBLEM = re.compile(r"[^:]+:\d+: \S+: .+")
SEED_TEXT = SEED.read_text()
SEED_DATA = yaml.safe_load(SEED_TEXT)

# generation speed says nothing about labctl, and a loaded CI machine trips it
SLOW_OK = [HealthCheck.too_slow, HealthCheck.data_too_large]


def examples(n: int) -> int:
    """n examples in `make test`; a fifth under `make unit` (its hypothesis profile, tests/conftest.py)."""
    return n // 5 if settings.default is settings.get_profile("unit") else n


FAST = settings(max_examples=examples(150), deadline=None, database=None, suppress_health_check=SLOW_OK)
FIXTURES = settings(
    FAST, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large]
)


def assert_problem_lines(err: TopologyError) -> None:
    assert err.problems, "a TopologyError without problems"
    for line in err.problems:
        assert "\n" not in line and "\r" not in line, repr(line)
        assert PROBLEM.fullmatch(line), repr(line)
    assert str(err).splitlines() == err.problems


def load_or_problems(text: str | bytes) -> schema.Topology | None:
    """The property every input must have: a Topology, or a TopologyError of well-formed lines."""
    src = yamlsrc.load(text, "fuzz.yml")
    for p in src.problems:
        line = src.format(p)
        assert "\n" not in line and PROBLEM.fullmatch(line), repr(line)
    try:
        return topology.from_source(src)
    except TopologyError as e:
        assert_problem_lines(e)
        return None


# --- random text and bytes ----------------------------------------------------------------------------

YAML_TOKENS = [
    "name", "nodes", "k8s-master", "role", "address", "labels", "workloads", "calico", "network", "lan",
    ": ", ":", "\n", "\n  ", "\n    ", "  ", "- ", "-", "{", "}", "[", "]", ", ", "? ", "|\n", ">-\n",
    "&a ", "*a", "&b [*a, *a, *a] ", "<<: ", "<<: *a", "---\n", "...\n", "# c", "'", '"', "\\", "\t",
    "!!int ", "!!str ", "!!float ", "!!bool ", "!!binary ", "!!timestamp ", "!!set ", "!!omap ", "!!map ",
    "!!seq ", "!!null ", "!!python/object:os.system ", "!unsafe ", "!", "%YAML 1.1\n", "%TAG ! tag:x,2000:\n",
    "2001-02-30", "2001-12-14t21:59:43.10-05:00", "0x1F", "0o17", "1_000", "1.30", "1e999", ".inf", ".nan",
    "yes", "no", "on", "~", "null", "10.12.22.1", "192.168.0.0/16", "10.12.0.1/16", "{{ 7*7 }}", "\x00",
    "\ufeff", "\x85", "\u2028", "é", "名", "\U0001f600", "@", "`", "%", "=", "<<",
]  # fmt: skip

yaml_ish = st.lists(st.sampled_from(YAML_TOKENS) | st.text(max_size=6), max_size=40).map("".join)


@st.composite
def seed_spliced(draw) -> str:
    """The seed topology with a few random edits: the errors then come from deep inside a valid file."""
    text = SEED_TEXT
    for _ in range(draw(st.integers(1, 4))):
        i = draw(st.integers(0, len(text)))
        j = draw(st.integers(i, min(len(text), i + draw(st.integers(0, 12)))))
        text = text[:i] + draw(st.sampled_from(YAML_TOKENS) | st.text(max_size=4)) + text[j:]
    return text


@FAST
@given(yaml_ish)
def test_random_yamlish_text_gives_problem_lines(text):
    load_or_problems(text)


def test_explicit_tag_that_cannot_construct_is_a_problem_line():
    # found by the fuzzer: PyYAML's !!timestamp raises AttributeError on a non-timestamp
    with pytest.raises(TopologyError) as e:
        topology.loads("name: x\nkubernetes: {service_subnet: !!timestamp 10.96.0.0/12}\nnodes: {}\n", "x.yml")
    assert_problem_lines(e.value)
    assert any("'10.96.0.0/12' cannot be read as timestamp" in p for p in e.value.problems), e.value.problems


@pytest.mark.parametrize("tag", ["!!int", "!!float"])
def test_an_empty_tagged_number_is_a_problem_line(tag):
    # found by the fuzzer: PyYAML's int and float constructors raise IndexError on an empty value
    with pytest.raises(TopologyError) as e:
        topology.loads(f"name: {tag}\nnodes: {{}}\n", "x.yml")
    assert_problem_lines(e.value)
    assert any(f"'' cannot be read as {tag[2:]}" in p for p in e.value.problems), e.value.problems


@FAST
@given(seed_spliced())
def test_spliced_seed_gives_problem_lines(text):
    load_or_problems(text)


@FAST
@given(st.binary(max_size=300) | seed_spliced().map(lambda s: s.encode("utf-8", "surrogatepass")))
def test_random_bytes_give_problem_lines(raw):
    load_or_problems(raw)


@FAST
@given(yaml_ish | seed_spliced())
def test_loads_raises_only_topology_error(text):
    try:
        topology.loads(text, "x.yml")
    except TopologyError as e:
        assert_problem_lines(e)


# --- structured mutations of the seed -----------------------------------------------------------------

WEIRD_STRINGS = [
    "", " ", "1.30", "yes", "~", "null", "10.12.22.1", "192.168.0.0/16", "a: b", "x\ny", "---", "# c",
    "{{ 7*7 }}", "$(touch /tmp/x)", "ü", "\ud800", "\x00", "\t", "k8s-master", "worker", "control-plane",
    "x" * 70, "y" * 5000, "IPIP", "None", "v3.30.7", "1.34",
]  # fmt: skip
scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.sampled_from([10**100, -(2**64), 2**63, 0, -1, 65536, 4294967295])
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20)
    | st.sampled_from(WEIRD_STRINGS)
)
keys = (
    st.text(max_size=10)
    | st.integers()
    | st.booleans()
    | st.none()
    | st.sampled_from(["", " ", "a b", "<<", "ü", "a.b", "[0]", "x:y", "\n"])
)
values = st.recursive(scalars, lambda c: st.lists(c, max_size=3) | st.dictionaries(keys, c, max_size=3), max_leaves=8)


def all_paths(d, prefix=()):
    yield prefix
    if isinstance(d, dict):
        for k, v in d.items():
            yield from all_paths(v, prefix + (k,))
    elif isinstance(d, list):
        for i, v in enumerate(d):
            yield from all_paths(v, prefix + (i,))


def _parent(d, path):
    for p in path[:-1]:
        d = d[p]
    return d


@st.composite
def mutated_seed(draw) -> dict:
    d = copy.deepcopy(SEED_DATA)
    for _ in range(draw(st.integers(1, 4))):
        path = draw(st.sampled_from(list(all_paths(d))))
        op = draw(st.sampled_from(["drop", "set", "set", "addkey", "renamekey"]))
        if not path:
            if op == "set":
                return draw(values)
            d[draw(keys)] = draw(values)
            continue
        parent = _parent(d, path)
        last = path[-1]
        if op == "drop":
            del parent[last]
        elif op == "set":
            parent[last] = draw(values)
        elif op == "addkey" and isinstance(parent[last], dict):
            parent[last][draw(keys)] = draw(values)
        elif op == "renamekey" and isinstance(parent, dict):
            parent[draw(keys)] = parent.pop(last)
    return d


def dump(d) -> str:
    return yaml.safe_dump(d, sort_keys=False, allow_unicode=True)


class Unsafe(str):
    """An ansible `!unsafe` string, as ansible reads it: data, never a template."""


class MarkerLoader(yaml.SafeLoader):
    pass


MarkerLoader.add_constructor("!unsafe", lambda loader, node: Unsafe(loader.construct_scalar(node)))


def reparse(out: Path) -> None:
    """Every rendered YAML/JSON file parses, and in the inventory each Jinja-looking string is !unsafe."""
    for f in sorted(out.rglob("*")):
        if f.suffix in (".yml", ".yaml"):
            docs = list(yaml.load_all(f.read_text(), Loader=MarkerLoader))
            assert docs, f
            if f.name == "ansible-inventory.yml":
                for s in strings(docs):
                    if any(m in s for m in ("{{", "{%", "{#")):
                        assert isinstance(s, Unsafe), (f, s)
        elif f.suffix == ".json":
            json.loads(f.read_text())


def strings(x):
    if isinstance(x, str):
        yield x
    elif isinstance(x, dict):
        for k, v in x.items():
            yield from strings(k)
            yield from strings(v)
    elif isinstance(x, list):
        for v in x:
            yield from strings(v)


def render_into(t: schema.Topology, base: Path) -> None:
    out = Path(tempfile.mkdtemp(prefix="r", dir=base))
    try:
        files = render.render(schedule.plan(t), layout.LabDir(out / "lab"), None)
        assert files
        reparse(out / "lab")
    finally:
        shutil.rmtree(out)


@FIXTURES
@given(d=mutated_seed())
def test_mutated_seed_gives_problem_lines_or_renders(d, tmp_path):
    t = load_or_problems(dump(d))
    event("valid" if t is not None else "refused")
    if t is not None:
        render_into(t, tmp_path)


# mostly valid topologies: each must validate and render, or be refused in well-formed lines
dns = st.from_regex(r"[a-z0-9]([-a-z0-9]{0,10}[a-z0-9])?", fullmatch=True)
label = st.from_regex(r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,8}[A-Za-z0-9])?", fullmatch=True)
ifname = st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,14}", fullmatch=True).filter(
    lambda s: s not in ("lo", "tunl0", "vxlan.calico", "all", "default")
)


@st.composite
def valid_topology(draw) -> dict:
    names = draw(st.lists(dns, min_size=1, max_size=4, unique=True))
    hosts = draw(st.lists(st.integers(1, 65000), min_size=len(names), max_size=len(names), unique=True))
    nodes = {}
    for i, (n, h) in enumerate(zip(names, hosts, strict=True)):
        node = {"role": "control-plane" if i == 0 else "worker", "address": f"10.12.{h >> 8}.{h & 255}"}
        if draw(st.booleans()):
            node["labels"] = draw(st.dictionaries(label, label | st.just(""), max_size=2))
        if draw(st.booleans()):
            node["interface"] = draw(ifname)
        nodes[n] = node
    d = {
        "name": draw(st.from_regex(r"[a-z][a-z0-9-]{0,19}", fullmatch=True)),
        "provider": draw(st.sampled_from(["netns", "vm"])),
        "network": {"lan": "10.12.0.0/16"},
        "kubernetes": {"version": draw(st.sampled_from(["1.32", "1.34", "1.35.1"]))},
        "calico": {
            "version": "v3.30.7",
            "encapsulation": draw(st.sampled_from(schema.ENCAPSULATIONS)),
            "block_size": draw(st.integers(20, 28)),
            "asn": draw(st.integers(1, 4294967294).filter(lambda a: a not in (23456, 65535))),
            "nat_outgoing": draw(st.booleans()),
        },
        "defaults": {
            "interface": draw(ifname),
            "ssh": {
                "user": draw(st.from_regex(r"[a-z_][a-z0-9_.-]{0,8}", fullmatch=True)),
                "key": draw(st.text(min_size=1, max_size=30).filter(lambda s: "\n" not in s and "\0" not in s)),
                "jump": draw(st.none() | st.just("ubuntu@bastion.example.net:2222")),
            },
        },
        "nodes": nodes,
    }
    if draw(st.booleans()):
        wl = []
        for i in range(draw(st.integers(0, 4))):
            n = draw(st.sampled_from(names))
            sel = dict(nodes[n].get("labels") or {}) or {"kubernetes.io/hostname": n}
            wl.append({"name": f"w{i}-{draw(dns)}"[:40].rstrip("-"), "node_selector": sel})
        d["workloads"] = wl
    return d


@FIXTURES
@given(d=valid_topology())
def test_valid_topologies_render_and_reparse(d, tmp_path):
    t = load_or_problems(dump(d))
    if t is not None:
        render_into(t, tmp_path)


def test_valid_topology_strategy_mostly_validates():
    """Guard for the property above: its strategy must really produce valid topologies."""
    ok = 0

    @settings(max_examples=40, deadline=None, database=None, suppress_health_check=SLOW_OK)
    @given(valid_topology())
    def count(d):
        nonlocal ok
        ok += load_or_problems(dump(d)) is not None

    count()
    assert ok >= 20


# --- every command's arguments --------------------------------------------------------------------------

COMMANDS = ["validate", "render", "up", "down", "inspect", "verify", "graph", "exec", "schema", "list"]
OPTIONS = ["-t", "--topology", "-o", "--output", "--name", "-n", "--format", "-f", "--wait", "--check", "--no-ipip",
           "--dry-run", "--", "--help", "--bogus"]  # fmt: skip
# no value may start at "/" (an absolute -o or --name), and the working directory is 4 levels below
# the example's own temp dir, so even "../.." stays inside it
VALUES = ["", "-", "../..", "..", ".", "json", "xml", "csv", "table", "dot", "mermaid", "0", "-1", "3.5", "nan",
          "1e309", "ünïcødé", "名前", "a b", "x" * 300, "seed", "k8s-master", "nonexistent.yml", "{{ 7*7 }}",
          "$(touch x)", "'", '"', "@INVALID@", "@EMPTY@", "@DIR@", "@MISSING@"]  # fmt: skip
free_text = st.text(st.characters(exclude_characters="/\x00", exclude_categories=("Cs",)), max_size=10)
# what `up` and `down` get for -t: never a valid topology
BAD_TOPOLOGY = ["@INVALID@", "@EMPTY@", "@DIR@", "@MISSING@", "", "-", "../..", "nonexistent.yml", "ünïcødé"]


@st.composite
def argv(draw) -> list[str]:
    cmd = draw(st.sampled_from(COMMANDS * 4 + ["frobnicate", "UP", ""]))
    safe = cmd.lower() in ("up", "down")
    vocab = st.sampled_from(VALUES + ([] if safe else ["@VALID@"] * 4)) | free_text
    opts = st.sampled_from([o for o in OPTIONS if not (safe and o in ("-t", "--topology"))])
    # mostly option-value pairs, so that commands get past argument parsing often enough
    pieces = st.tuples(opts, vocab).map(list) | opts.map(lambda o: [o]) | vocab.map(lambda v: [v])
    rest = [x for piece in draw(st.lists(pieces, max_size=4)) for x in piece]
    if safe:
        # `up` without -t builds the seed lab: always give it a topology that cannot load
        return [cmd, "-t", draw(st.sampled_from(BAD_TOPOLOGY)), *rest]
    return [cmd, *rest]


def _never(*a, **k):
    raise AssertionError("the CLI fuzz must never reach a real lab")


@pytest.fixture
def sandbox(monkeypatch, tmp_path):
    """Stub everything that could touch the host; record rmtree calls outside the labs home."""
    from labctl.app import lab
    from labctl.live import nodes
    from labctl.providers import vm
    from labctl.providers.netns import provider as netns

    monkeypatch.setattr(runner, "run_playbook", _never)
    monkeypatch.setattr(lab.Lab, "up", _never)
    for cls in (netns.NetnsProvider, vm.VmProvider):
        for meth in ("preflight", "bootstrap", "teardown", "remove_nodes"):
            monkeypatch.setattr(cls, meth, _never, raising=False)
    monkeypatch.setattr(nodes, "NodeShell", _never)
    escaped: list[Path] = []

    def rmtree(path, *a, **k):
        p, home = Path(path).resolve(), layout.home()
        if home not in p.parents:
            escaped.append(p)  # see test_down_name_cannot_escape_the_labs_home
            return
        shutil.rmtree(p, *a, **k)

    monkeypatch.setattr(lab, "shutil", types.SimpleNamespace(rmtree=rmtree))
    monkeypatch.setenv("NO_COLOR", "1")
    return types.SimpleNamespace(tmp=tmp_path, escaped=escaped, monkeypatch=monkeypatch)


def fresh_world(sb) -> dict[str, str]:
    base = Path(tempfile.mkdtemp(prefix="w", dir=sb.tmp))
    home = base / "home"
    home.mkdir()
    cwd = base / "a" / "b" / "c" / "d"
    cwd.mkdir(parents=True)
    sb.monkeypatch.setenv("LABCTL_HOME", str(home))
    sb.monkeypatch.chdir(cwd)
    (base / "valid.yml").write_text(SEED_TEXT)
    (base / "invalid.yml").write_text("name: [\n")
    (base / "empty.yml").write_text("")
    return {
        "@VALID@": str(base / "valid.yml"),
        "@INVALID@": str(base / "invalid.yml"),
        "@EMPTY@": str(base / "empty.yml"),
        "@DIR@": str(base),
        "@MISSING@": str(base / "missing" / "t.yml"),
    }


@settings(FIXTURES, max_examples=examples(250))
@given(args=argv())
def test_cli_arguments_never_crash(sandbox, args):
    files = fresh_world(sandbox)
    args = [files.get(a, a) for a in args]
    if args[0].lower() in ("up", "down"):
        assert files["@VALID@"] not in args
    r = CliRunner().invoke(cli.app, args)
    event(f"{args[0]} -> exit {r.exit_code}")  # see --hypothesis-show-statistics
    out = r.output + (r.stderr if r.stderr not in r.output else "")
    assert "Traceback" not in out and "internal error" not in out, out
    assert r.exception is None or isinstance(r.exception, SystemExit), (args, repr(r.exception), out)
    assert r.exit_code in (0, 1, 2), (args, r.exit_code, out)
    if r.exit_code == 2:
        assert len(r.stderr.splitlines()) <= 20, (args, r.stderr)


def test_cli_fuzz_covers_the_commands_that_succeed(sandbox):
    """The vocabulary above can reach exit 0: validate and render of a valid file, schema, list, down."""
    files = fresh_world(sandbox)
    # validate checks the lab's socket paths under LABCTL_HOME, as up does: a short one, as labhome's
    home = Path(tempfile.mkdtemp(prefix="lc", dir="/tmp"))
    sandbox.monkeypatch.setenv("LABCTL_HOME", str(home))
    # render -o ".": the (empty) cwd; `down` with no lab at all is a no-op
    for args in (["validate", "-t", files["@VALID@"]], ["render", "-t", files["@VALID@"], "-o", "."],
                 ["schema"], ["list"], ["down"]):  # fmt: skip
        r = CliRunner().invoke(cli.app, args)
        assert r.exit_code == 0, (args, r.output)
    shutil.rmtree(home)


def test_down_name_cannot_escape_the_labs_home(sandbox):
    fresh_world(sandbox)
    for name in ("..", "../..", ".", "/", "/etc"):
        r = CliRunner().invoke(cli.app, ["down", "--name", name])
        assert r.exit_code == 2 and "not a lab name" in r.output, (name, r.output)
    assert sandbox.escaped == []
