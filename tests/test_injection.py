"""Topology strings cannot inject, channel by channel: YAML (the rendered files), Jinja (labctl's own
render), Ansible variables (`!unsafe`) and the shell (scripts run on netns nodes). Each free-form field
gets each payload; it is either refused by validation (one line per problem, exit 2) or rendered so that
re-parsing every rendered file gives back exactly the original string where the field belongs."""

from __future__ import annotations

import copy
import json
import re
import shlex
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from conftest import ROOT, SEED
from labctl import cli
from labctl.app.lab import Lab
from labctl.errors import TopologyError, UsageError
from labctl.outputs import render
from labctl.plan import layout
from labctl.providers.netns import provider as netns
from labctl.spec import schedule, schema, topology

pytestmark = pytest.mark.unit

PROBLEM = re.compile(r"[^:]+:\d+: \S+: .+")
SEED_DATA = yaml.safe_load(SEED.read_text())
VM_DATA = yaml.safe_load((ROOT / "inventories/vm-cloud/topology.yml").read_text())
MARK = "zzmark"

YAML_PAYLOADS = [
    "a: b", "x\ny: z", "x\n", "---", "--- x", "...", "# c", "a #c", "'q'", '"q"', "q'", 'q"', "{a: 1}", "[1, 2]",
    "&anc", "*anc", "!unsafe x", "!!python/object/apply:os.system ['id']", "| x", "> x", "%YAML 1.1", "? k",
    "- item", "@x", "`x`", "x\\y", "\u2028", "\t", "ü", " lead", "trail ", "",
]  # fmt: skip
JINJA_PAYLOADS = ["{{ 7*7 }}", "{% raw %}", "{%raw%}{{ 7*7 }}{%endraw%}", "{# c #}", "{{ lookup('pipe', 'id') }}"]
SHELL_PAYLOADS = [
    "$(touch /tmp/x)", "`touch /tmp/x`", "a;b", "a b", "a'b", 'a"b', "a|b", "a&b", "a>b", "a<b", "a\nb", "x\n",
    "a$b", "*", "a\\b", "-x", "ü", "a\tb", "a{b}", "a=b", "a/b/../c",
]  # fmt: skip


def _node(d, name):
    return d["nodes"][name]


def _rename_node(d, v):
    d["nodes"] = {(v if k == "k8s-worker-2" else k): n for k, n in d["nodes"].items()}
    d.pop("workloads", None)


def _label_key(d, v):
    _node(d, "k8s-worker-1")["labels"] = {v: "no-1"}
    d["workloads"] = [{"name": "pod-a", "node_selector": {v: "no-1"}}]


def _label_value(d, v):
    _node(d, "k8s-worker-1")["labels"] = {"worker": v}
    d["workloads"] = [{"name": "pod-a", "node_selector": {"worker": v}}]


def _set(*path):
    def setter(d, v):
        x = d
        for p in path[:-1]:
            x = x[p] if isinstance(x, list) else x.setdefault(p, {})
        x[path[-1]] = v

    return setter


# field -> (base topology, setter, a valid value that marks where the field lands)
FIELDS = {
    "name": (SEED_DATA, _set("name"), MARK),
    "kubernetes.version": (SEED_DATA, _set("kubernetes", "version"), "1.33"),
    "calico.version": (SEED_DATA, _set("calico", "version"), "v3.30.6"),
    "defaults.interface": (SEED_DATA, _set("defaults", "interface"), MARK),
    "nodes.X.interface": (SEED_DATA, _set("nodes", "k8s-master", "interface"), MARK),
    "node name": (SEED_DATA, _rename_node, MARK),
    "label key": (SEED_DATA, _label_key, MARK),
    "label value": (SEED_DATA, _label_value, MARK),
    "workload name": (SEED_DATA, _set("workloads", 0, "name"), MARK),
    "defaults.ssh.user": (VM_DATA, _set("defaults", "ssh", "user"), MARK),
    "defaults.ssh.key": (VM_DATA, _set("defaults", "ssh", "key"), MARK),
    "defaults.ssh.jump": (VM_DATA, _set("defaults", "ssh", "jump"), MARK),
    "nodes.X.ssh.user": (VM_DATA, _set("nodes", "k8s-worker-2", "ssh", "user"), MARK),
    "nodes.X.ssh.key": (VM_DATA, _set("nodes", "k8s-worker-2", "ssh", "key"), MARK),
    "nodes.X.ssh.jump": (VM_DATA, _set("nodes", "k8s-worker-2", "ssh", "jump"), MARK),
}
# what reaches the shell scripts on netns nodes (node_dir, node_interface, pod netns/name, node_labels,
# node_address): lab and node names, interfaces, workload names, labels, addresses
SHELL_FIELDS = [
    "name",
    "defaults.interface",
    "nodes.X.interface",
    "node name",
    "label key",
    "label value",
    "workload name",
]


class Unsafe(str):
    """An ansible `!unsafe` string."""


class MarkerLoader(yaml.SafeLoader):
    pass


MarkerLoader.add_constructor("!unsafe", lambda loader, node: Unsafe(loader.construct_scalar(node)))


def topo_text(field: str, value) -> str:
    base, setter, _ = FIELDS[field]
    d = copy.deepcopy(base)
    setter(d, value)
    return yaml.safe_dump(d, sort_keys=False, allow_unicode=True)


def try_load(text: str) -> schema.Topology | None:
    try:
        return topology.loads(text, "t.yml")
    except TopologyError as e:
        for line in e.problems:
            assert "\n" not in line and PROBLEM.fullmatch(line), repr(line)
        return None


def validate_cli(path: Path):
    r = CliRunner().invoke(cli.app, ["validate", "-t", str(path)])
    assert r.exception is None or isinstance(r.exception, SystemExit), repr(r.exception)
    assert "Traceback" not in r.output
    return r


def assert_refused(tmp_path: Path, text: str) -> None:
    """Refused in-process and by `labctl validate`: exit 2, one well-formed line per problem."""
    assert try_load(text) is None
    tmp_path.mkdir(parents=True, exist_ok=True)
    f = tmp_path / "t.yml"
    f.write_text(text, encoding="utf-8")
    r = validate_cli(f)
    assert r.exit_code == 2, r.output
    lines = r.stderr.splitlines()
    assert lines and all(PROBLEM.fullmatch(x) for x in lines), r.stderr
    assert r.stdout == ""


HASHED = ("vtep_mac", "node_vtep_mac", "veth")  # derived by hashing names: differ between two renders


def parsed(out: Path) -> dict[str, object]:
    """Every rendered file, parsed (YAML: all documents; JSON; other text as is), lab dir as @LAB@."""
    got: dict[str, object] = {}
    for f in sorted(p for p in out.rglob("*") if p.is_file()):
        rel = str(f.relative_to(out))
        text = f.read_text()
        if f.suffix in (".yml", ".yaml"):
            got[rel] = list(yaml.load_all(text, Loader=MarkerLoader))
        elif f.suffix == ".json":
            got[rel] = json.loads(text)
        elif f.name == "ssh_config":
            got[rel] = ssh_config_words(text)
        else:
            got[rel] = text
    for host in _inventory_hosts(got.get("ansible-inventory.yml")):
        if "ansible_ssh_common_args" in host:
            host["ansible_ssh_common_args"] = ssh_words(host["ansible_ssh_common_args"])
    return normalize(got, str(out))


def ssh_words(arg: str, unsafe: bool = False) -> list:
    """What ssh gets from a quoted argument string (ansible's ssh_common_args, a ProxyCommand): the
    words, a ProxyCommand split once more as its shell would; words with Jinja stay !unsafe."""
    unsafe = unsafe or isinstance(arg, Unsafe)
    out: list = []
    for w in shlex.split(arg):
        if w.startswith("ProxyCommand="):
            out += ["ProxyCommand", *ssh_words(w[len("ProxyCommand=") :], unsafe)]
        else:
            out.append(Unsafe(w) if unsafe and any(m in w for m in ("{{", "{%", "{#")) else w)
    return out


def ssh_config_words(text: str) -> list:
    """ssh_config as ssh reads it: each line's words (quoted values unquoted), comments dropped."""
    lines = text.split("\n")  # as ssh reads it: \u2028 and the like are no line ends
    return [shlex.split(line) for line in lines if line.strip() and not line.lstrip().startswith("#")]


def _inventory_hosts(docs):
    for doc in docs or []:
        for group in (doc or {}).get("all", {}).get("children", {}).values():
            yield from ((group or {}).get("hosts") or {}).values()


def normalize(x, root: str, key=None):
    if isinstance(x, dict):
        return {normalize(k, root): ("@HASH@" if k in HASHED else normalize(v, root, k)) for k, v in x.items()}
    if isinstance(x, list):
        return [normalize(v, root) for v in x]
    if isinstance(x, Unsafe):
        return Unsafe(x.replace(root, "@LAB@"))
    if isinstance(x, str):
        return x.replace(root, "@LAB@")
    return x


def substitute(x, old: str, new: str, ansible: bool):
    """The marker render with the marker replaced by the payload: what the payload render must equal.
    In ansible's inventory a string that now holds Jinja must also have become !unsafe."""
    if isinstance(x, dict):
        return {substitute(k, old, new, ansible): substitute(v, old, new, ansible) for k, v in x.items()}
    if isinstance(x, list):
        return [substitute(v, old, new, ansible) for v in x]
    if isinstance(x, str):
        s = x.replace(old, new)
        jinja = ansible and any(m in s for m in ("{{", "{%", "{#"))
        return Unsafe(s) if isinstance(x, Unsafe) or jinja else s
    return x


def same(a, b) -> bool:
    """Equal, with the same types all the way down (so a !unsafe string only equals a !unsafe one)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return a == b


def render_files(t: schema.Topology, out: Path, source: Path | None = None) -> dict:
    render.render(schedule.plan(t), layout.LabDir(out), source)
    return parsed(out)


_MARKER_RENDERS: dict[str, dict] = {}


def marker_render(field: str, out: Path) -> dict:
    """The render with the field's marker value: the same for every payload, so made once per field."""
    if field not in _MARKER_RENDERS:
        _MARKER_RENDERS[field] = render_files(try_load(topo_text(field, FIELDS[field][2])), out)
    return copy.deepcopy(_MARKER_RENDERS[field])


def check_field(tmp_path: Path, field: str, payload: str) -> bool:
    """Refused, or rendered exactly like the marker with the payload in its place. True if accepted."""
    t = try_load(topo_text(field, payload))
    if t is None:
        assert_refused(tmp_path, topo_text(field, payload))
        return False
    mark = FIELDS[field][2]
    want = marker_render(field, tmp_path / "mark")
    got = render_files(t, tmp_path / "payload")
    expect = {rel: substitute(v, mark, payload, rel == "ansible-inventory.yml") for rel, v in want.items()}
    assert list(got) == list(expect), "a rendered file appeared or vanished"
    for rel in got:
        if isinstance(got[rel], list):
            assert len(got[rel]) == len(expect[rel]), f"{rel}: extra YAML documents"
        assert same(got[rel], expect[rel]), f"{field}={payload!r}: {rel} differs\n{got[rel]}\n{expect[rel]}"
    inv = json.dumps(got["ansible-inventory.yml"])
    assert json.dumps(payload)[1:-1] in inv, "the payload is not in the inventory"
    return True


def test_markers_render_where_the_fields_belong(tmp_path):
    """Sanity for the channel tests: every marker value is valid and shows up in the rendered files."""
    for field, (_, _, mark) in FIELDS.items():
        t = try_load(topo_text(field, mark))
        assert t is not None, field
        got = render_files(t, tmp_path / field.replace(" ", "_"))
        assert mark in json.dumps(got), field


@pytest.mark.parametrize("field", FIELDS)
def test_yaml_channel(tmp_path, field):
    accepted = [p for i, p in enumerate(YAML_PAYLOADS) if check_field(tmp_path / str(i), field, p)]
    if field.endswith("ssh.key"):
        # a key path is free-form: all of these are valid file names (but the newline ones)
        assert len(accepted) >= len(YAML_PAYLOADS) - 3, accepted
    elif field == "label value":
        assert accepted == [""]  # an empty label value is valid in Kubernetes
    else:
        assert accepted == [], f"{field} accepted {accepted}"


@pytest.mark.parametrize("field", FIELDS)
def test_jinja_channel(tmp_path, field):
    """labctl renders with Jinja; a topology value is data to it, never template source."""
    for i, p in enumerate(JINJA_PAYLOADS):
        if check_field(tmp_path / str(i), field, p):
            # check_field proved every file equal to the marker render with the literal in its place;
            # here the literal itself, byte for byte, as ansible must be handed it
            text = (tmp_path / str(i) / "payload" / "ansible-inventory.yml").read_text()
            assert f"!unsafe {json.dumps(p)}" in text


def walk_inventory_strings(inv):
    if isinstance(inv, dict):
        for k, v in inv.items():
            yield k
            yield from walk_inventory_strings(v)
    elif isinstance(inv, list):
        for v in inv:
            yield from walk_inventory_strings(v)
    elif isinstance(inv, str):
        yield inv


def assert_ansible_safe(inventory: Path) -> int:
    """Every value with Jinja markers in the inventory carries !unsafe; returns how many there are."""
    inv = yaml.load(inventory.read_text(), Loader=MarkerLoader)
    n = 0
    for s in walk_inventory_strings(inv):
        if any(m in s for m in ("{{", "{%", "{#")):
            assert isinstance(s, Unsafe), f"{s!r} would be templated by ansible"
            n += 1
    # !unsafe is the only tag beyond plain YAML: without it the inventory is plain safe YAML
    if n:
        with pytest.raises(yaml.constructor.ConstructorError):
            yaml.safe_load(inventory.read_text())
    else:
        yaml.safe_load(inventory.read_text())
    return n


def test_ansible_variables_channel(tmp_path):
    """Jinja in any accepted field (the vm provider's key paths) reaches ansible only as !unsafe, and so
    does a lab directory with Jinja in its name."""
    marked = 0
    for field in FIELDS:
        for i, p in enumerate(JINJA_PAYLOADS):
            t = try_load(topo_text(field, p))
            if t is None:
                continue
            out = tmp_path / f"{field.replace(' ', '_')}-{i}"
            render.render(schedule.plan(t), layout.LabDir(out), None)
            marked += assert_ansible_safe(out / "ansible-inventory.yml")
    assert marked > 0  # the key paths did get through, and were marked
    for i, p in enumerate(JINJA_PAYLOADS):
        out = tmp_path / f"labdir-{i}" / p.replace("/", "_")
        t = topology.load(SEED)
        render.render(schedule.plan(t), layout.LabDir(out), None)
        assert assert_ansible_safe(out / "ansible-inventory.yml") >= 3  # lab_dir, node_dir, key file...
        inv = yaml.load((out / "ansible-inventory.yml").read_text(), Loader=MarkerLoader)
        assert inv["all"]["vars"]["lab_dir"] == str(out)


@pytest.mark.parametrize("field", SHELL_FIELDS)
def test_shell_channel_fields_are_restricted(tmp_path, field):
    for i, p in enumerate(SHELL_PAYLOADS):
        assert_refused(tmp_path / str(i), topo_text(field, p))


def test_shell_channel_addresses_are_ipv4_only(tmp_path):
    for i, p in enumerate(["10.12.22.1; id", "10.12.22.1 ", "10.12.22.1\n", "$(id)", "10.12.22.1/16", "::1"]):
        d = copy.deepcopy(SEED_DATA)
        d["nodes"]["k8s-master"]["address"] = p
        assert_refused(tmp_path / str(i), yaml.safe_dump(d, sort_keys=False))


SHELL_SAFE = re.compile(r"[A-Za-z0-9_./:-]+")


@pytest.mark.parametrize("name", ["seed", "vxlan-4node"])
def test_shell_facing_inventory_values_need_no_quoting(tmp_path, name):
    """What the netns roles put into shell scripts unquoted is made of [A-Za-z0-9_./:-] only."""
    out = tmp_path / "lab"
    render.render(schedule.plan(topology.load(ROOT / f"inventories/{name}/topology.yml")), layout.LabDir(out), None)
    inv = yaml.load((out / "ansible-inventory.yml").read_text(), Loader=MarkerLoader)
    assert SHELL_SAFE.fullmatch(inv["all"]["vars"]["lab_dir"])
    assert SHELL_SAFE.fullmatch(inv["all"]["vars"]["calico_tunnel_device"] or "none")
    hosts = {}
    for group in ("kube_control_plane", "kube_node"):
        hosts |= inv["all"]["children"][group]["hosts"]
    assert hosts
    for host, hv in hosts.items():
        assert SHELL_SAFE.fullmatch(host)
        for k in ("node_name", "node_address", "node_interface", "node_tunnel_ip", "node_vtep_mac", "node_dir",
                  "node_bird_socket"):  # fmt: skip
            assert hv[k] is None or SHELL_SAFE.fullmatch(str(hv[k])), (host, k, hv[k])
        for pod in hv["node_pods"]:
            for k in ("name", "ip", "veth", "netns"):
                assert SHELL_SAFE.fullmatch(pod[k]), (host, pod)
        for k, v in hv["node_labels"].items():
            assert SHELL_SAFE.fullmatch(k) and (v == "" or SHELL_SAFE.fullmatch(v))


UNSAFE_HOMES = ["a b", "it's", 'say"x', "$(touch x)", "`id`", "a;b", "{{ 7*7 }}", "tab\there", "nl\nx", "ü"]


@pytest.mark.parametrize("home", UNSAFE_HOMES)
def test_labctl_home_with_shell_characters_is_refused(tmp_path, monkeypatch, home):
    """The lab dir goes unquoted into node shell scripts: preflight refuses it in one line, before
    it checks or creates anything on the host."""

    def never(*a, **k):
        raise AssertionError("preflight went on past an unsafe lab dir")

    monkeypatch.setattr(netns.sh, "run", never)
    monkeypatch.setattr(netns, "link_exists", never)
    monkeypatch.setenv("LABCTL_HOME", str(tmp_path / home))
    t = topology.load(SEED)
    lab = Lab(layout.lab_dir(t.name))
    plan = schedule.plan(t)
    model = render.build(plan, lab.dir)
    with pytest.raises(UsageError) as err:
        netns.NetnsProvider(lab).preflight(model)
    assert err.value.exit_code == 2
    text = str(err.value)  # the path is quoted with repr(): one line even for a newline in it
    assert "\n" not in text and "LABCTL_HOME" in text
    assert not (tmp_path / home).exists()


@pytest.mark.parametrize("out", ['say"x', "back\\slash", "nl\nx"])
def test_render_refuses_a_lab_dir_bird_cannot_quote(tmp_path, out):
    r = CliRunner().invoke(cli.app, ["render", "-t", str(SEED), "-o", str(tmp_path / out)])
    assert r.exit_code == 2, r.output
    assert "Traceback" not in r.output and len(r.stderr.splitlines()) == 1, r.stderr


def test_render_into_a_file_is_one_line_error(tmp_path):
    (tmp_path / "f").write_text("")
    for out in ("f", "f/sub"):
        r = CliRunner().invoke(cli.app, ["render", "-t", str(SEED), "-o", str(tmp_path / out)])
        # bad input, exit 2 (issue 19: `render -o /dev/null` exited 1)
        assert r.exit_code == 2 and isinstance(r.exception, SystemExit), r.output
        assert len(r.stderr.splitlines()) == 1 and f"{tmp_path / 'f'} is not a directory" in r.stderr
