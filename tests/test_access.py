"""Node access (labctl/live/access.py): derived once from the topology, rendered the same way for every
path (inventory, ssh_config, ssh argv, paramiko), and the provider boundary it reads."""

import shlex
import socket
import subprocess
from pathlib import Path

import pytest
import yaml

from conftest import ROOT, lab_model
from labctl import providers
from labctl.errors import LabctlError, UsageError
from labctl.live import access
from labctl.outputs import render
from labctl.plan import layout, names
from labctl.spec import providers as registry
from labctl.spec import schedule, schema, topology

pytestmark = pytest.mark.unit

VM = """
name: acc
provider: vm
network: {lan: 10.12.0.0/16}
defaults:
  ssh: {user: ubuntu, port: 2222, key: ~/.ssh/lab, jump: bastion.example.net}
nodes:
  cp: {role: control-plane, address: 10.12.22.1}
  w1: {role: worker, address: 10.12.22.2, ssh: {user: debian, key: ~/.ssh/w1}}
  w2: {role: worker, address: 10.12.22.3, ssh: {jump: ops@jump.example.net:2200}}
  w3: {role: worker, address: 10.12.22.4, ssh: {user: root, jump: null}}
"""


def reach(text: str, tmp_path: Path) -> dict:
    t = topology.loads(text)
    ctx = render.context(schedule.plan(t), layout.LabDir(tmp_path / "lab"))
    return ctx["access"]


def test_defaults_only(tmp_path):
    a = reach(VM, tmp_path)["cp"]
    assert (a.user, a.port, a.key, a.become, a.bridge) == ("ubuntu", 2222, "~/.ssh/lab", True, None)
    # a jump without a user: the node's user and key log into it
    assert a.jump == access.Jump("ubuntu", "bastion.example.net", 22, "~/.ssh/lab")


def test_node_block_is_merged_over_defaults_field_by_field(tmp_path):
    r = reach(VM, tmp_path)
    w1 = r["w1"]
    assert (w1.user, w1.port, w1.key) == ("debian", 2222, "~/.ssh/w1")  # port from defaults
    assert w1.jump == access.Jump("debian", "bastion.example.net", 22, "~/.ssh/w1")  # jump kept, as the node
    w2 = r["w2"]
    assert (w2.user, w2.port, w2.key) == ("ubuntu", 2222, "~/.ssh/lab")
    assert w2.jump == access.Jump("ops", "jump.example.net", 2200, "~/.ssh/lab")  # user and port as written
    w3 = r["w3"]
    assert w3.jump is None and w3.user == "root" and not w3.become  # `jump: null` turns the default off


def test_netns_nodes_use_the_lab_key_and_the_lab_bridge(tmp_path):
    t = topology.load(ROOT / "inventories/seed/topology.yml")
    lab = layout.LabDir(tmp_path / "lab")
    r = render.context(schedule.plan(t), lab)["access"]
    for a in r.values():
        assert a == access.Access("root", 22, str(lab.ssh_key), None, False, names.bridge("lc", "seed"))
    assert r["k8s-master"].bridge.startswith("br-lc")


def test_every_path_renders_the_same_access(tmp_path):
    a = reach(VM, tmp_path)["w2"]
    cfg = tmp_path / "ssh_config"
    argv = a.ssh_argv(cfg, "10.12.22.3")
    assert argv[:3] == ["ssh", "-F", str(cfg)] and argv[-1] == "10.12.22.3"
    assert argv[argv.index("-l") + 1] == "ubuntu" and argv[argv.index("-p") + 1] == "2222"
    assert argv[argv.index("-i") + 1] == "~/.ssh/lab"
    proxy = shlex.split(argv[argv.index("-o") + 1].removeprefix("ProxyCommand="))
    assert proxy == [
        "ssh",
        "-F",
        str(cfg),
        "-o",
        "ProxyCommand=none",
        "-l",
        "ops",
        "-p",
        "2200",
        "-i",
        "~/.ssh/lab",
    ] + [
        "-W",
        "%h:%p",
        "jump.example.net",
    ]
    inv = a.ansible_vars(cfg)
    assert inv["ansible_user"] == "ubuntu" and inv["ansible_port"] == 2222 and inv["ansible_become"] is True
    words = shlex.split(inv["ansible_ssh_common_args"])
    assert words[0] == "-o" and shlex.split(words[1].removeprefix("ProxyCommand=")) == proxy
    opts = dict(a.ssh_options(cfg))
    assert opts["User"] == "ubuntu" and opts["Port"] == "2222" and shlex.split(opts["ProxyCommand"]) == proxy
    kw = a.connect_kwargs("10.12.22.3", 3.0)
    assert (kw["hostname"], kw["port"], kw["username"]) == ("10.12.22.3", 2222, "ubuntu")
    assert kw["key_filename"] == str(Path("~/.ssh/lab").expanduser()) and kw["look_for_keys"] is False
    jk = a.jump_kwargs(3.0)
    assert (jk["hostname"], jk["port"], jk["username"], jk["key_filename"]) == (
        "jump.example.net",
        2200,
        "ops",
        kw["key_filename"],
    )


def test_lab_data_round_trip_and_older_labs(tmp_path):
    for a in reach(VM, tmp_path).values():
        assert access.Access.from_data(a.to_data()) == a
    # a lab rendered before labctl/live/access.py: {user, port, key, jump} with the jump as written
    old = access.Access.from_data({"user": "debian", "port": 22, "key": "~/.ssh/k", "jump": "bastion"})
    assert old.jump == access.Jump("debian", "bastion", 22, "~/.ssh/k") and old.become


def test_ssh_config_values_are_quoted_as_ssh_splits_them():
    assert access._cfg_quote("~/.ssh/id") == "~/.ssh/id"
    for v in ("a b", 'q"', "x\\y", "#c", ""):
        assert shlex.split(access._cfg_quote(v)) == [v]


def test_vm_cloud_sample_inventory_gives_every_node_its_bastion(tmp_path):
    """The shipped sample: k8s-worker-2 sets only user and key, and must keep the bastion."""
    out = tmp_path / "lab"
    src = ROOT / "inventories/vm-cloud/topology.yml"
    render.render(schedule.plan(topology.load(src)), layout.LabDir(out), src)
    inv = yaml.safe_load((out / "ansible-inventory.yml").read_text())
    hosts = inv["all"]["children"]["kube_control_plane"]["hosts"] | inv["all"]["children"]["kube_node"]["hosts"]
    want = {
        "k8s-master": ("ubuntu", "~/.ssh/lab_ed25519"),
        "k8s-worker-1": ("ubuntu", "~/.ssh/lab_ed25519"),
        "k8s-worker-2": ("debian", "~/.ssh/w2"),
    }
    assert set(hosts) == set(want)
    for name, (user, key) in want.items():
        h = hosts[name]
        assert (h["ansible_user"], h["ansible_ssh_private_key_file"]) == (user, key)
        o, proxy = shlex.split(h["ansible_ssh_common_args"])
        cmd = shlex.split(proxy.removeprefix("ProxyCommand="))
        assert o == "-o" and cmd[-1] == "bastion.example.net", name
        # the jump is written `ubuntu@bastion...`: that user, with the node's own key
        assert cmd[cmd.index("-l") + 1] == "ubuntu" and cmd[cmd.index("-i") + 1] == key, name
        assert cmd[cmd.index("-F") + 1] == str(out / "ssh" / "ssh_config")


def test_the_jump_hop_really_uses_that_user_and_key(tmp_path):
    """What OpenSSH itself makes of the rendered ssh_config (`ssh -G` prints it, connecting nowhere)."""
    out = tmp_path / "lab"
    src = ROOT / "inventories/vm-cloud/topology.yml"
    render.render(schedule.plan(topology.load(src)), layout.LabDir(out), src)
    cfg = out / "ssh" / "ssh_config"
    g = subprocess.run(["ssh", "-G", "-F", str(cfg), "10.12.22.3"], capture_output=True, text=True, check=True)
    opts = dict(line.split(" ", 1) for line in g.stdout.splitlines() if " " in line)
    assert opts["user"] == "debian" and opts["identityfile"] == "~/.ssh/w2"
    assert "-l ubuntu" in opts["proxycommand"] and "-i ~/.ssh/w2" in opts["proxycommand"]
    assert "proxyjump" not in opts or opts["proxyjump"] == "none"


def test_unknown_provider_lists_the_registry():
    with pytest.raises(LabctlError) as e:
        topology.loads(VM.replace("provider: vm", "provider: kvm"))
    assert "'kvm' is not one of the providers: netns, vm" in str(e.value.problems)
    with pytest.raises(UsageError, match="unknown provider"):
        providers.get("kvm")
    assert schema.Topology.model_json_schema()["properties"]["provider"]["enum"] == list(registry.REGISTRY)


def test_no_template_or_role_compares_a_provider_name():
    """Templates and roles branch on what the provider decides (its traits in the render context), never
    on its name; labctl's Python is checked by tests/test_architecture.py (AST)."""
    g = subprocess.run(
        ["grep", "-rn", r"provider ==\|provider !=", "templates", "playbooks"], cwd=ROOT, capture_output=True, text=True
    )
    assert g.stdout == ""


def test_route_check_refuses_before_any_connection(monkeypatch, tmp_path):
    """A bridge that does not exist: NodeShell raises the one-line error and never opens a socket."""
    from labctl.live import nodes

    opened = []
    monkeypatch.setattr(socket, "create_connection", lambda *a, **k: opened.append(a))
    monkeypatch.setattr(socket.socket, "connect", lambda self, *a: opened.append(a))
    node = {"name": "n1", "address": "10.57.22.1", "role": "worker", "interface": "eth0", "block": "192.168.0.0/24"}
    node["ssh"] = access.Access("root", 22, "/nonexistent", bridge="br-lcnone0").to_data()
    with pytest.raises(access.RouteError, match=r"^lab bridge br-lcnone0 is gone: run labctl down / up$"):
        nodes.NodeShell(layout.LabDir(tmp_path), node)
    assert opened == []


def test_route_check_passes_through_the_bridge(monkeypatch):
    def fake_run(argv, **kw):
        out = '[{"dst":"10.57.22.1","dev":"br-lcabc123"}]' if argv[:3] == ["ip", "-j", "route"] else ""
        return subprocess.CompletedProcess(argv, 0, out, "")

    monkeypatch.setattr(access.subprocess, "run", fake_run)
    access.Access("root", 22, "k", bridge="br-lcabc123").check_route("10.57.22.1")
    with pytest.raises(access.RouteError, match="goes via br-lcabc123, not the lab bridge br-lcother"):
        access.Access("root", 22, "k", bridge="br-lcother").check_route("10.57.22.1")


def test_trace_to_an_outside_address_is_refused_before_connecting(monkeypatch):
    from labctl.observe import trace

    class Lab:
        name = "acc"
        dir = None

        def model(self):
            pod = {"name": "pod-a", "ip": "192.168.0.2", "veth": "cali1", "netns": "lc-acc.n1.pod-a"}
            node = {"name": "n1", "address": "10.57.22.1", "tunnel_ip": "192.168.0.1", "pods": [pod]}
            return lab_model([node | {"block": "192.168.0.0/24"}], name="acc")

    monkeypatch.setattr(trace.live, "NodeShell", lambda *a, **k: pytest.fail("connected"))
    for dst in ("8.8.8.8", "10.57.22.99", "192.168.9.9"):
        with pytest.raises(UsageError, match="is not an address of lab acc"):
            trace.trace(Lab(), "pod-a", dst)


def test_no_banner_is_one_error_and_no_traceback(tmp_path):
    """A port that accepts and never speaks SSH (a hung sshd): NodeShell raises one line, and
    paramiko's transport thread logs nothing to stderr ("Error reading SSH protocol banner").
    In a child process: pytest's own log capture would hide what a user sees."""
    import sys

    (tmp_path / "ssh").mkdir()
    (tmp_path / "ssh" / "known_hosts").touch()
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    script = f"""
import time
from pathlib import Path
from labctl.live import access
from labctl.plan import layout
from labctl.live import nodes
from labctl.errors import LabctlError
node = {{"name": "n1", "address": "127.0.0.1", "role": "worker", "interface": "eth0", "block": "192.168.0.0/24"}}
node["ssh"] = access.Access("root", {srv.getsockname()[1]}, "/nonexistent").to_data()
try:
    nodes.NodeShell(layout.LabDir(Path({str(tmp_path)!r})), node, timeout=0.5)
except LabctlError as e:
    print(e)
time.sleep(0.5)  # the transport thread logs after connect() gave up
"""
    try:
        p = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=30, cwd=ROOT)
    finally:
        srv.close()
    assert p.stdout.startswith("ssh n1 (127.0.0.1): SSHException: "), p.stdout + p.stderr
    assert p.stderr == ""


def test_lab_keys_made_once_and_pinned_for_every_host(tmp_path):
    """providers/base.make_lab_keys, shared by netns and qemu: the lab key and a host key per node or
    router, known_hosts pinning each host's address, private files 0600; a second run keeps the keys."""
    from types import SimpleNamespace

    from labctl.providers.base import make_lab_keys

    d = layout.LabDir(tmp_path / "lab")
    # a node or router of the model: what make_lab_keys reads of it is its name and address
    hosts = [SimpleNamespace(name="a", address="10.0.0.1"), SimpleNamespace(name="core", address="10.0.1.254")]
    make_lab_keys(d, "lk", hosts)
    lines = d.known_hosts.read_text().splitlines()
    assert [x.split()[:2] for x in lines] == [["10.0.0.1", "ssh-ed25519"], ["10.0.1.254", "ssh-ed25519"]]
    for f in (d.ssh_key, d.known_hosts, d.node_dir("a") / "ssh_host_ed25519_key"):
        assert f.stat().st_mode & 0o777 == 0o600, f
    assert "labctl-lk" in Path(str(d.ssh_key) + ".pub").read_text()
    before = d.ssh_key.read_text()
    make_lab_keys(d, "lk", hosts, each=lambda fn, xs: [fn(x) for x in xs])
    assert d.ssh_key.read_text() == before and d.known_hosts.read_text().splitlines() == lines
