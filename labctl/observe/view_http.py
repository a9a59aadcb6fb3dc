"""`labctl view`'s web server: the standard library's threading HTTP server, read-only.

Safety, as Jupyter does it: loopback unless told otherwise, a random token in the printed URL (kept
in a SameSite=Strict cookie once the page is open), a Host-header check against DNS rebinding, GET
only. No endpoint runs anything a client names: it calls labctl's read functions (view.snapshot,
view.node_detail, view.trace_path) with names checked against the lab's model, and serves the page's
files from a fixed list.

The lab is read in a background thread while a page polls (and for a while after): a request gets the
newest snapshot at once, however long a read of a big lab takes."""

from __future__ import annotations

import hmac
import ipaddress
import json
import secrets
import socket
import sys
import threading
import time
from http import cookies
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from labctl.errors import LabctlError, UsageError
from labctl.live import shellpool
from labctl.observe import view

IDLE = 60.0  # seconds without a poll after which the lab is no longer read
INTERVAL = 1.0  # seconds between the starts of two reads, when a read is quicker than that
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


class Live:
    """The lab's newest snapshot, refreshed by one thread while pages ask for it."""

    def __init__(self, lab, read=view.snapshot, interval: float = INTERVAL, idle: float = IDLE):
        self.lab, self.read, self.interval, self.idle = lab, read, interval, idle
        self.latest: dict | None = None
        self.asked = time.monotonic()
        self.ready = threading.Event()  # a first snapshot exists
        self.wake = threading.Event()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, name="labctl-view-read", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def get(self, wait: float = 60.0) -> dict | None:
        self.asked = time.monotonic()
        self.wake.set()
        self.ready.wait(wait)
        return self.latest

    def _loop(self) -> None:
        while not self.stop.is_set():
            if time.monotonic() - self.asked > self.idle:
                self.wake.clear()
                self.wake.wait()  # nobody looks: read again when a page asks
                continue
            start = time.monotonic()
            try:
                snap = self.read(self.lab)
            except LabctlError as e:  # the lab went away (down), its bridge is gone...: say so, keep the last
                snap = dict(self.latest or {}, error=str(e), time=time.time())
            except Exception as e:  # noqa: BLE001 - a bug must not end the thread; the page shows it
                snap = dict(self.latest or {}, error=f"{e.__class__.__name__}: {e}", time=time.time())
            self.latest = snap
            self.ready.set()
            self.stop.wait(max(0.0, self.interval - (time.monotonic() - start)))


def allowed_hosts(listen: str, port: int) -> set[str]:
    """Host header values this server answers: its loopback names, the listen address, and when it
    listens on every address, this host's names and addresses."""
    names = {"localhost", "127.0.0.1", "[::1]", _host(listen)}
    if ipaddress.ip_address(listen).is_unspecified:
        names |= {socket.gethostname(), socket.getfqdn()}
        try:
            names |= {_host(i[4][0]) for i in socket.getaddrinfo(socket.gethostname(), None)}
        except OSError:
            pass
    return {n.lower() for n in names} | {f"{n.lower()}:{port}" for n in names}


def _host(addr: str) -> str:
    return f"[{addr}]" if ":" in addr else addr


class Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, lab, listen: str = "127.0.0.1", port: int = 0, token: str | None = None, live=None):
        try:
            ipaddress.ip_address(listen)
        except ValueError:
            raise UsageError(f"--listen {listen!r} is not an IP address", "e.g. 127.0.0.1 or 0.0.0.0") from None
        self.address_family = socket.AF_INET6 if ":" in listen else socket.AF_INET
        try:
            super().__init__((listen, port), Handler)
        except OSError as e:
            raise UsageError(
                f"cannot listen on {_host(listen)}:{port}: {e.strerror}", "pick another --port (0: any free one)"
            ) from None
        self.lab = lab
        self.token = token or secrets.token_urlsafe(24)
        self.port = self.server_address[1]
        self.cookie = f"labctl-view-{self.port}"  # cookies are per host, not per port: one per server
        self.hosts = allowed_hosts(listen, self.port)
        self.pool = shellpool.ShellPool(lab.dir) if live is None else None
        self.live = live or Live(lab, read=lambda lab: view.snapshot(lab, self.pool.shell))
        self.trace_lock = threading.Lock()  # one trace at a time: each opens SSH to several nodes
        shown = (
            "127.0.0.1" if listen == "127.0.0.1" else (socket.gethostname() if listen in ("0.0.0.0", "::") else listen)
        )
        self.url = f"http://{_host(shown)}:{self.port}/?token={self.token}"

    def run(self) -> None:
        self.live.start()
        try:
            self.serve_forever(poll_interval=0.25)
        finally:
            self.live.stop.set()
            self.live.wake.set()
            self.server_close()
            if self.pool is not None:
                self.pool.close()


class Handler(BaseHTTPRequestHandler):
    server: Server
    server_version = "labctl-view"
    sys_version = ""

    def log_message(self, format, *args):  # noqa: A002 - the base class's name
        pass  # every request would be a line, and its URL carries the token: refusals are logged instead

    def _send(self, code: int, body: bytes, ctype: str, extra: dict | None = None) -> None:
        self.send_response(code)
        headers = {"Content-Type": ctype, "Content-Length": str(len(body)), "Cache-Control": "no-store"}
        headers |= {"X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"}
        headers |= {"Content-Security-Policy": CSP, "X-Frame-Options": "DENY"} | (extra or {})
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, data, code: int = 200) -> None:
        self._send(code, json.dumps(data).encode(), "application/json")

    def _refuse(self, code: int, why: str) -> None:
        sys.stderr.write(
            f"labctl view: refused {self.command} {urlsplit(self.path).path} from {self.client_address[0]}: {why}\n"
        )
        self._json({"error": why}, code)

    def _token_ok(self, query: dict) -> tuple[bool, bool]:
        """(the request carries the token, it came in the URL)."""
        want = self.server.token.encode()
        given = query.get("token", [""])[0]
        if given and hmac.compare_digest(given.encode(), want):
            return True, True
        jar = cookies.SimpleCookie()
        try:
            jar.load(self.headers.get("Cookie", ""))
        except cookies.CookieError:
            return False, False
        c = jar.get(self.server.cookie)
        return bool(c and hmac.compare_digest(c.value.encode(), want)), False

    def do_GET(self):  # noqa: N802 - http.server's name
        url = urlsplit(self.path)
        host = (self.headers.get("Host") or "").lower()
        if host not in self.server.hosts:
            return self._refuse(403, f"Host {host or '(none)'} is not this server (DNS rebinding?)")
        query = parse_qs(url.query)
        ok, in_url = self._token_ok(query)
        if not ok:
            return self._refuse(403, "no valid token: open the URL `labctl view` printed")
        try:
            self._route(url.path, query, in_url)
        except UsageError as e:
            self._json({"error": str(e)}, 400)
        except LabctlError as e:
            self._json({"error": str(e)}, 502)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def do_HEAD(self):  # noqa: N802
        # the page and its files only: a HEAD of /api/trace would run a trace for nothing
        if urlsplit(self.path).path.startswith("/api/"):
            return self._not_allowed()
        return self.do_GET()

    def _route(self, path: str, query: dict, in_url: bool) -> None:
        one = lambda k: (query.get(k) or [""])[0]  # noqa: E731
        if path == "/":
            extra = {}
            if in_url:
                extra["Set-Cookie"] = f"{self.server.cookie}={self.server.token}; Path=/; HttpOnly; SameSite=Strict"
            return self._send(200, view.page().encode(), "text/html; charset=utf-8", extra)
        if path.startswith("/static/") and path[len("/static/") :] in view.ASSETS:
            name = path[len("/static/") :]
            return self._send(200, (view.STATIC / name).read_bytes(), view.ASSETS[name] + "; charset=utf-8")
        if path == "/api/state":
            snap = self.server.live.get()
            return self._json(snap) if snap is not None else self._json({"error": "the lab was not read yet"}, 503)
        if path == "/api/node":
            return self._json(view.node_detail(self.server.lab, one("name")))
        if path == "/api/trace":
            if not self.server.trace_lock.acquire(timeout=60):
                return self._json({"error": "another trace is running"}, 503)
            try:
                return self._json(view.trace_path(self.server.lab, one("src"), one("dst")))
            finally:
                self.server.trace_lock.release()
        self._json({"error": "not found"}, 404)

    def _not_allowed(self):
        self._json({"error": "read-only: GET only"}, 405)

    do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _not_allowed
