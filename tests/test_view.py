"""`labctl view` and `labctl graph -f html`: the data the page draws, the server's refusals, and the
page itself in a real browser (Debian's chromium driven by selenium) on the seed lab: nodes with the
article's addresses, BGP sessions turning red after `labctl fail` and green after `up`, a node's
routes, a trace drawn through the tunnel, the exported file opened offline. Screenshots of each state
land in the tests' output directories."""

import http.client
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time

import pytest

from conftest import ROOT, SEED, chromium, lab_model, labctl, real_lab
from labctl.observe import view, view_http
from labctl.plan.model import LabModel

GREEN, RED = "rgb(46,125,50)", "rgb(198,40,40)"


# -- the data (no lab) -------------------------------------------------------------------------------


def _mesh():
    peers = lambda me: [  # noqa: E731
        {"name": o, "address": a, "protocol": f"Mesh_{a.replace('.', '_')}", "type": "mesh"}
        for o, a in (("m", "10.0.0.1"), ("w1", "10.0.0.2"), ("w2", "10.0.0.3"))
        if o != me
    ]
    return lab_model(
        [
            {"name": "m", "role": "control-plane", "address": "10.0.0.1", "peers": peers("m")},
            {"name": "w1", "address": "10.0.0.2", "labels": {"worker": "no-1"}, "peers": peers("w1")},
            {"name": "w2", "address": "10.0.0.3", "peers": peers("w2")},
        ]
    )


def _row(name, peers, reachable=True):
    info = {p: "Established" for p in peers} if isinstance(peers, list) else peers
    ps = [
        {"name": p, "state": "up" if i == "Established" else "start", "info": i, "since": ""} for p, i in info.items()
    ]
    est = sum(1 for i in info.values() if i == "Established") if reachable else None
    row = {"name": name, "role": "worker", "state": "running" if reachable else "unreachable"}
    row |= {"interface": "eth0", "physical_ip": "10.0.0.9/24", "tunnel_device": "vxlan.calico", "tunnel_ip": "x"}
    return row | {"block": "", "labels": {}, "bgp": {"established": est, "expected": 2, "peers": ps}}


@pytest.mark.unit
def test_sessions_take_the_worse_end_and_a_silent_bird_is_down():
    model = _mesh()
    rows = [
        _row("m", ["Mesh_10_0_0_2", "Mesh_10_0_0_3"]),
        _row("w1", {"Mesh_10_0_0_1": "Established", "Mesh_10_0_0_3": "Active Socket: Connection refused"}),
        _row("w2", {}),  # reachable, BIRD down: it lists no session
    ]
    got = {s["id"]: s["state"] for s in view.sessions(model, rows)}
    # m says Established towards w2, but w2's BIRD is down: the session is not up
    assert got == {"m|w1": "Established", "m|w2": "down", "w1|w2": "Active"}
    rows[2] = _row("w2", [], reachable=False)  # unreachable: its end is unknown, the other ends decide
    got = {s["id"]: s["state"] for s in view.sessions(model, rows)}
    assert got == {"m|w1": "Established", "m|w2": "Established", "w1|w2": "Active"}
    rows = [_row(n, [], reachable=False) for n in ("m", "w1", "w2")]
    assert {s["state"] for s in view.sessions(model, rows)} == {"?"}


@pytest.fixture(scope="module")
def racks_model(tmp_path_factory):
    out = tmp_path_factory.mktemp("racks") / "lab"
    labctl("render", "-t", ROOT / "inventories" / "two-racks" / "topology.yml", "-o", out, check=True)
    return LabModel.load(out / "topology-data.json")


@pytest.mark.unit
def test_build_groups_nodes_by_network_with_the_router_between(racks_model):
    m = racks_model
    rows = [_row(n.name, [p.protocol for p in n.peers]) for n in m.speakers]
    d = view.build(m, rows)
    assert [(n["id"], n["lan"]) for n in d["networks"]] == [("rack-a", "10.12.1.0/24"), ("rack-b", "10.12.2.0/24")]
    on = {n["name"]: n["networks"] for n in d["nodes"]}
    assert on == {
        "k8s-master": ["rack-a"],
        "k8s-worker-1": ["rack-a"],
        "k8s-worker-2": ["rack-b"],
        "core": ["rack-a", "rack-b"],
    }
    # ToR sessions, each once, typed as such whichever end describes it
    assert sorted((s["a"], s["b"], s["type"], s["state"]) for s in d["sessions"]) == [
        ("core", n, "tor", "Established") for n in ("k8s-master", "k8s-worker-1", "k8s-worker-2")
    ]
    assert {p["name"]: p["node"] for p in d["pods"]} == {
        "pod-a": "k8s-worker-1",
        "pod-b": "k8s-worker-2",
        "pod-m": "k8s-master",
    }


@pytest.mark.unit
def test_route_reflectors_are_marked(tmp_path):
    out = tmp_path / "lab"
    labctl("render", "-t", ROOT / "inventories" / "route-reflectors" / "topology.yml", "-o", out, check=True)
    m = LabModel.load(out / "topology-data.json")
    d = view.build(m, [_row(n.name, [p.protocol for p in n.peers]) for n in m.nodes])
    assert {n["name"] for n in d["nodes"] if n["route_reflector"]} == set(m.calico.route_reflectors)
    assert {s["type"] for s in d["sessions"]} == {"rr"}


@pytest.mark.unit
@pytest.mark.parametrize(
    "route, by",
    [
        (
            {"dst": "192.168.2.0/24", "gateway": "192.168.2.1", "dev": "vxlan.calico", "protocol": "bird"},
            "BIRD (learned over BGP)",
        ),
        ({"type": "blackhole", "dst": "192.168.1.0/24", "protocol": "bird"}, "BIRD (own block)"),
        ({"dst": "192.168.2.0/24", "dev": "vxlan.calico", "protocol": 80}, "Felix (proto 80)"),
        ({"dst": "10.12.0.0/16", "dev": "ens192", "protocol": "kernel"}, "kernel (directly connected)"),
        ({"dst": "192.168.1.2", "dev": "cali0123456789a"}, "Calico (the local pod's /32)"),
        ({"dst": "default", "gateway": "10.12.255.254", "dev": "ens192"}, "static (boot)"),
    ],
)
def test_who_programmed_a_route(route, by):
    assert view.programmed_by(route) == by


@pytest.mark.unit
def test_exported_page_is_self_contained_and_data_cannot_break_out():
    model = _mesh()
    evil = "</script><script>alert(1)</script><!--"
    rows = [_row("m", []) | {"labels": {"x": evil}}, _row("w1", []), _row("w2", [])]
    html = view.page(view.build(model, rows) | {"time": 0, "took": 0})
    assert "alert(1)" in html and evil not in html  # only as JSON escapes
    assert not re.search(r"""(src|href)=["']?(https?:|//|static/)""", html), "the file must need nothing else"
    assert "cytoscape" in html and "The Cytoscape Consortium" in html
    data = re.search(r'<script type="application/json" id="labctl-data">(.*?)</script>', html, re.S)[1]
    assert json.loads(data)["nodes"][0]["labels"] == {"x": evil}
    # served: the same page, its assets by URL, no data inline
    served = view.page()
    assert 'src="static/cytoscape.min.js"' in served and "labctl-data" not in served


@pytest.mark.unit
def test_the_wheel_list_of_assets_exists():
    for name in [*view.ASSETS, "view.html", "cytoscape.LICENSE"]:
        assert (view.STATIC / name).is_file(), name


# -- the server's refusals (a stub lab: nothing is read) ------------------------------------------------


class _StubLab:
    name = "x"

    def model(self):
        return _mesh()


class _StubLive:
    def __init__(self, snap):
        self.snap, self.stop, self.wake = snap, threading.Event(), threading.Event()

    def start(self):
        pass

    def get(self):
        return self.snap


@pytest.fixture
def stub_server():
    srv = view_http.Server(_StubLab(), "127.0.0.1", 0, token="tok-123", live=_StubLive({"nodes": ["ok"]}))
    t = threading.Thread(target=srv.run, daemon=True)
    t.start()
    yield srv
    srv.shutdown()
    t.join(5)


def _get(port, path, host=None, method="GET", headers=None):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    c.putrequest(method, path, skip_host=True)
    host = f"127.0.0.1:{port}" if host is None else host
    if host:  # "": no Host header at all
        c.putheader("Host", host)
    for k, v in (headers or {}).items():
        c.putheader(k, v)
    c.endheaders()
    r = c.getresponse()
    body = r.read()
    c.close()
    return r.status, dict(r.getheaders()), body


@pytest.mark.unit
def test_server_wants_the_token_and_its_own_host(stub_server):
    port = stub_server.port
    assert stub_server.url == f"http://127.0.0.1:{port}/?token=tok-123"
    assert _get(port, "/api/state")[0] == 403
    assert _get(port, "/api/state?token=wrong")[0] == 403
    assert _get(port, "/?token=tok-12")[0] == 403
    status, _, body = _get(port, "/api/state?token=tok-123")
    assert status == 200 and json.loads(body) == {"nodes": ["ok"]}
    # DNS rebinding: a page of evil.example whose name now points at 127.0.0.1 sends its own Host
    for host in ("evil.example", f"evil.example:{port}", f"127.0.0.1.evil.example:{port}", ""):
        assert _get(port, "/api/state?token=tok-123", host=host)[0] == 403, host
    for host in (f"localhost:{port}", "localhost", f"[::1]:{port}"):
        assert _get(port, "/api/state?token=tok-123", host=host)[0] == 200, host
    # the page sets the token as a cookie for the page's own requests
    status, headers, body = _get(port, "/?token=tok-123")
    assert status == 200 and b"static/view.js" in body
    cookie = headers["Set-Cookie"]
    assert cookie.startswith(f"labctl-view-{port}=tok-123;") and "HttpOnly" in cookie and "SameSite=Strict" in cookie
    assert "script-src 'self'" in headers["Content-Security-Policy"] and headers["Cache-Control"] == "no-store"
    assert _get(port, "/static/view.js", headers={"Cookie": f"labctl-view-{port}=tok-123"})[0] == 200
    assert _get(port, "/static/view.js", headers={"Cookie": f"labctl-view-{port}=nope"})[0] == 403


@pytest.mark.unit
def test_server_serves_only_its_files_and_only_reads(stub_server):
    port = stub_server.port
    for path in ("/static/../view_http.py", "/static/view.py", "/static/%2e%2e/view.py", "/etc/passwd", "/api/exec"):
        assert _get(port, path + "?token=tok-123")[0] == 404, path
    for method in ("POST", "PUT", "DELETE", "HEAD"):
        assert _get(port, "/api/state?token=tok-123", method=method)[0] == 405
    assert _get(port, "/static/view.css?token=tok-123", method="HEAD")[0] == 200
    # node and trace endpoints take names of the lab's model, nothing else reaches a node
    for path in (
        "/api/node?name=$(reboot)",
        "/api/node?name=",
        "/api/trace?src=m&dst=;reboot",
        "/api/trace?src=m&dst=m",
    ):
        status, _, body = _get(port, path + "&token=tok-123")
        assert status == 400, (path, body)


@pytest.mark.unit
def test_live_reads_while_polled_and_keeps_the_last_snapshot_on_error():
    calls = []

    def read(lab):
        calls.append(time.monotonic())
        if len(calls) == 2:
            raise view_http.LabctlError("bridge gone")
        return {"n": len(calls), "time": 0}

    live = view_http.Live(None, read=read, interval=0.05, idle=0.3)
    live.start()
    try:
        assert live.get()["n"] == 1
        deadline = time.monotonic() + 5
        while len(calls) < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert len(calls) >= 3
        time.sleep(0.5)  # nobody polls: reading stops
        idle = len(calls)
        time.sleep(0.3)
        assert len(calls) == idle
        assert live.get()["n"] >= 3  # a poll wakes it again
    finally:
        live.stop.set()
        live.wake.set()


@pytest.mark.unit
def test_listen_must_be_an_address():
    from labctl.errors import UsageError

    with pytest.raises(UsageError, match="not an IP address"):
        view_http.Server(_StubLab(), "localhost; rm", 0, live=_StubLive({}))


# -- the seed lab in a real browser ------------------------------------------------------------------


@pytest.fixture(scope="module")
def seed(tmp_path_factory):
    with real_lab(SEED) as r:
        yield r


@pytest.fixture(scope="module")
def served(seed):
    env = {"LABCTL_HOME": str(seed.home)}
    p = subprocess.Popen(
        [sys.executable, "-m", "labctl", "view"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=dict(os.environ, **env, NO_COLOR="1"),
    )
    try:
        url = p.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:") and "?token=" in url, (
            p.stderr.read() if p.poll() is not None else url
        )
        yield p, url
    finally:
        if p.poll() is None:
            p.send_signal(signal.SIGINT)
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


@pytest.fixture(scope="module")
def browser():
    with chromium() as d:
        yield d


def wait_for(d, script: str, timeout: float = 15.0):
    """The first truthy value of a JS expression, polled; fails with the last value."""
    deadline, v = time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        v = d.execute_script(f"return {script}")
        if v:
            return v
        time.sleep(0.1)
    raise AssertionError(f"{script} stayed {v!r} for {timeout} s")


SESSIONS_JS = """window.labview.cy().edges('.bgp').map(e => [e.data('source').slice(2), e.data('target').slice(2),
  e.data('state'), e.style('line-color').replace(/ /g, '')]).sort()"""


def nodes_table(d) -> dict:
    rows = d.execute_script(
        "return [...document.querySelectorAll('#nodes tbody tr')].map(r => [...r.cells].map(c => c.textContent))"
    )
    return {r[0]: r[1:] for r in rows}


@pytest.mark.netns
def test_page_shows_the_seed_lab(served, browser, tmp_path):
    _, url = served
    browser.get(url)
    wait_for(browser, "window.labview && window.labview.drawn")
    t = nodes_table(browser)
    assert t == {
        "k8s-master": ["control-plane", "10.12.22.1/16", "vxlan.calico", "192.168.0.1", "-", "2/2"],
        "k8s-worker-1": ["worker", "10.12.22.2/16", "vxlan.calico", "192.168.1.1", "worker=no-1", "2/2"],
        "k8s-worker-2": ["worker", "10.12.22.3/16", "vxlan.calico", "192.168.2.1", "worker=no-2", "2/2"],
    }
    labels = browser.execute_script("return window.labview.cy().nodes('.node').map(n => n.data('label'))")
    for addr, tunnel in (
        ("10.12.22.1/16", "192.168.0.1"),
        ("10.12.22.2/16", "192.168.1.1"),
        ("10.12.22.3/16", "192.168.2.1"),
    ):
        assert any(addr in x and tunnel in x for x in labels), labels
    assert any("worker=no-1" in x for x in labels)
    pods = browser.execute_script("return window.labview.cy().nodes('.pod').map(n => n.id()).sort()")
    assert pods == ["p:pod-a", "p:pod-b"]
    assert browser.execute_script(f"return {SESSIONS_JS}") == [
        ["k8s-master", "k8s-worker-1", "Established", GREEN],
        ["k8s-master", "k8s-worker-2", "Established", GREEN],
        ["k8s-worker-1", "k8s-worker-2", "Established", GREEN],
    ]
    assert "3/3 sessions Established" in browser.find_element("id", "status").text
    browser.save_screenshot(tmp_path / "view-seed.png")


@pytest.mark.netns
def test_click_a_node_shows_its_routes_sessions_and_labels(served, browser, tmp_path):
    browser.execute_script("window.labview.cy().getElementById('n:k8s-worker-1').emit('tap')")
    wait_for(browser, "document.querySelector('#detail table') !== null")
    detail = browser.find_element("id", "detail").text
    assert "worker=no-1" in detail
    assert "192.168.2.0/24 via 192.168.2.1 dev vxlan.calico proto bird" in detail
    assert "BIRD (learned over BGP)" in detail and "BIRD (own block)" in detail
    assert "kernel (directly connected)" in detail and "Calico (the local pod's /32)" in detail
    assert "Mesh_10_12_22_3" in detail and "k8s-worker-2 10.12.22.3" in detail  # the session, its peer
    browser.save_screenshot(tmp_path / "view-node.png")


@pytest.mark.netns
def test_trace_between_two_pods_is_drawn_through_the_tunnel(served, browser, tmp_path):
    browser.execute_script("window.labview.cy().getElementById('p:pod-a').emit('tap')")
    browser.execute_script("window.labview.cy().getElementById('p:pod-b').emit('tap')")
    wait_for(browser, "document.getElementById('trace-result')", timeout=30)
    segs = browser.execute_script(
        "return window.labview.cy().edges('.trace').map(e => [e.data('source'), e.data('target'), e.data('how')])"
    )
    assert [s[:2] for s in segs] == [
        ["p:pod-a", "n:k8s-worker-1"],
        ["n:k8s-worker-1", "n:k8s-worker-2"],
        ["n:k8s-worker-2", "p:pod-b"],
    ]
    assert segs[0][2].startswith("native, veth cali") and segs[2][2].startswith("native, veth cali")
    tunnel = segs[1][2]
    assert "encapsulated: VXLAN tunnel vxlan.calico VNI 4096" in tunnel and "10.12.22.2 → 10.12.22.3" in tunnel
    result = browser.find_element("id", "trace-result").text
    assert result.startswith("reached pod-b; ping ok"), result
    hops = browser.execute_script("return [...document.querySelectorAll('#trace li')].map(l => l.dataset.kind)")
    assert hops == ["pod", "veth", "route", "encap", "lan", "decap", "route", "deliver"]
    browser.save_screenshot(tmp_path / "view-trace.png")


@pytest.mark.netns
def test_failed_bird_turns_its_sessions_red_and_up_green_without_reload(served, seed, browser, tmp_path):
    browser.execute_script("window.notReloaded = true")
    labctl("fail", "k8s-worker-2", "bird", home=seed.home, check=True)
    start = time.monotonic()
    wait_for(browser, f"{SESSIONS_JS}.filter(s => s[2] !== 'Established').length === 2", timeout=10)
    took = time.monotonic() - start
    got = browser.execute_script(f"return {SESSIONS_JS}")
    assert got[0] == ["k8s-master", "k8s-worker-1", "Established", GREEN]
    assert [(s[:2], s[3]) for s in got[1:]] == [
        (["k8s-master", "k8s-worker-2"], RED),
        (["k8s-worker-1", "k8s-worker-2"], RED),
    ]
    assert browser.execute_script("return window.notReloaded") is True
    assert nodes_table(browser)["k8s-worker-2"][-1] == "0/2"
    browser.save_screenshot(tmp_path / "view-bird-failed.png")
    print(f"sessions shown down {took:.1f} s after `labctl fail`")
    labctl("up", home=seed.home, check=True)  # repairs the fault
    wait_for(browser, f"{SESSIONS_JS}.every(s => s[2] === 'Established' && s[3] === '{GREEN}')", timeout=20)
    assert browser.execute_script("return window.notReloaded") is True
    browser.save_screenshot(tmp_path / "view-repaired.png")


@pytest.mark.netns
def test_refused_without_token_or_with_a_foreign_host(served):
    _, url = served
    port = int(url.split(":")[2].split("/")[0])
    token = url.split("token=")[1]
    assert _get(port, "/api/state")[0] == 403
    assert _get(port, "/")[0] == 403
    assert _get(port, f"/api/state?token={token}", host=f"attacker.example:{port}")[0] == 403
    status, _, body = _get(port, f"/api/state?token={token}")
    assert status == 200 and [n["name"] for n in json.loads(body)["nodes"]] == [
        "k8s-master",
        "k8s-worker-1",
        "k8s-worker-2",
    ]


@pytest.mark.netns
def test_graph_html_opens_offline_with_the_same_nodes(seed, browser, tmp_path):
    p = labctl("graph", "-f", "html", home=seed.home, check=True)
    page = tmp_path / "lab.html"
    page.write_text(p.stdout)
    browser.get(page.as_uri())
    wait_for(browser, "window.labview && window.labview.drawn")
    assert browser.execute_script("return performance.getEntriesByType('resource').length") == 0  # nothing fetched
    t = nodes_table(browser)
    assert [(k, v[1], v[3]) for k, v in t.items()] == [
        ("k8s-master", "10.12.22.1/16", "192.168.0.1"),
        ("k8s-worker-1", "10.12.22.2/16", "192.168.1.1"),
        ("k8s-worker-2", "10.12.22.3/16", "192.168.2.1"),
    ]
    assert "exported" in browser.find_element("id", "status").text
    # a node's detail from the file itself: its labels and sessions; routes need the live server
    browser.execute_script("window.labview.cy().getElementById('n:k8s-worker-1').emit('tap')")
    detail = browser.find_element("id", "detail").text
    assert "worker=no-1" in detail and "Mesh_10_12_22_1" in detail and "labctl view" in detail
    browser.save_screenshot(tmp_path / "view-export.png")


@pytest.mark.netns
def test_ctrl_c_ends_the_server_with_130(served):
    p, url = served
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=15)
    assert p.returncode == 130, err
    assert "labctl: interrupted" in err and "Traceback" not in err
    assert "token=" not in err  # requests are not logged: their URL carries the token


@pytest.mark.unit
def test_pool_keeps_a_connection_and_replaces_a_broken_one(monkeypatch):
    from labctl.errors import LabctlError
    from labctl.live import shellpool

    made = []

    class FakeShell:
        def __init__(self, lab_dir, node):
            self.node, self.jump, self.closed, self.broken = node, None, False, False
            self.client = self
            made.append(self)

        def get_transport(self):
            return self

        def is_active(self):
            return not self.closed

        def run(self, command, timeout=30.0):
            assert timeout <= 5.0  # a kept connection never waits NodeShell's 30 s
            if self.broken:
                raise EOFError("connection lost")
            return 0, f"{command} on {self.node.name}", ""

        def close(self):
            self.closed = True

    monkeypatch.setattr(shellpool, "NodeShell", FakeShell)
    node = _mesh().nodes[0]
    pool = shellpool.ShellPool("lab")
    for _ in range(3):
        with pool.shell(node) as s:
            assert s.run("x")[1] == "x on m"
    assert len(made) == 1  # one connection, kept
    made[0].broken = True  # sshd went away under a kept connection: one new connection, the read succeeds
    with pool.shell(node) as s:
        assert s.run("y")[1] == "y on m"
    assert len(made) == 2 and made[0].closed
    made[1].closed = True  # a dead transport is not reused
    with pool.shell(node) as s:
        s.run("z")
    assert len(made) == 3
    made[2].broken = True
    monkeypatch.setattr(FakeShell, "run", lambda self, c, timeout=30.0: (_ for _ in ()).throw(OSError("no route")))
    with pytest.raises(LabctlError, match=r"ssh m \(10.0.0.1\): OSError: no route"), pool.shell(node) as s:
        s.run("w")  # the kept one fails, the new one too: the node is unreachable
    assert len(made) == 4 and all(x.closed for x in made) and pool.idle == {}
    pool.close()


@pytest.mark.unit
def test_a_taken_port_is_bad_input_and_any_address_answers_to_this_hosts_names():
    import socket

    from labctl.errors import UsageError

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        with pytest.raises(UsageError, match="Address already in use") as e:
            view_http.Server(_StubLab(), "127.0.0.1", s.getsockname()[1], live=_StubLive({}))
        assert e.value.exit_code == 2
    hosts = view_http.allowed_hosts("0.0.0.0", 8000)
    assert {socket.gethostname().lower(), f"{socket.gethostname().lower()}:8000", "localhost:8000"} <= hosts
    assert "evil.example:8000" not in hosts
    assert view_http.allowed_hosts("::1", 8000) >= {"[::1]:8000", "localhost:8000"}
