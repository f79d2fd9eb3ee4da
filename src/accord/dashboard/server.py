"""``fx dashboard``'s web server: the page and its JSON, read only, behind a token.

The standard library's ThreadingHTTPServer, bound to 127.0.0.1 unless told otherwise. Every
request must carry the token printed at start (``?token=`` or ``Authorization: Bearer``,
compared in constant time): without it 401, with a wrong one 403, before anything is read.
Only GET of two paths is served (``/``: the page, ``/api/state``: DashboardView.snapshot);
nothing named by a request is ever opened. ``/favicon.ico``, which a browser asks for with no
token, gets 204 before the check. A refusal is logged at most once per REFUSAL_LOG_SECONDS (the
line counts those held back since), so a local process cannot flood the console. The page runs only its own inline script (a
Content-Security-Policy with a fresh nonce per response) and loads nothing from elsewhere.
"""

from __future__ import annotations

import hmac
import json
import logging
import math
import secrets
import socket
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from accord.aggregator.event_log import Throttle
from accord.dashboard.page import render_page
from accord.dashboard.view import DashboardView
from accord.errors import AccordError

log = logging.getLogger("accord.dashboard")

#: a connection idle this long is closed (a slow client holds one thread, not the server)
SOCKET_TIMEOUT_SECONDS = 10.0
#: at most one refusal line per this many seconds
REFUSAL_LOG_SECONDS = 1.0


def new_token() -> str:
    """A random token for the dashboard's URL (256 bits)."""
    return secrets.token_urlsafe(32)


class DashboardServer:
    """Serves ``view`` on ``host``:``port`` (0: a free port) to requests carrying ``token``."""

    def __init__(self, view: DashboardView, token: str, host: str = "127.0.0.1", port: int = 0) -> None:
        self.view = view
        self.token = token
        handler = type("Handler", (_Handler,), {"dashboard": self})
        try:
            self._httpd = (_Server6 if ":" in host else _Server)((host, port), handler)
        except OSError as exc:
            raise AccordError(
                f"the dashboard cannot listen on {host}:{port}: {exc.strerror}", "choose another --port or --host"
            ) from None
        self.host = host
        self.port = int(self._httpd.server_address[1])
        self._thread: threading.Thread | None = None
        self._refusal_lock = threading.Lock()
        self._refusals = Throttle(REFUSAL_LOG_SECONDS)

    def log_refusal(self, client: str, why: str) -> None:
        """A WARNING line for a refused request, or counted into the next one (one a REFUSAL_LOG_SECONDS)."""
        with self._refusal_lock:
            held = self._refusals.take(time.monotonic())
        if held is None:
            return
        more = f" (and {held} more refused since the last line)" if held else ""
        log.warning("dashboard: refused a request from %s: %s%s", client, why, more)

    @property
    def url(self) -> str:
        """The address to open, with the token."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/?token={self.token}"

    def authorized(self, path: str, authorization: str | None) -> HTTPStatus | None:
        """None if the request carries the token; else 401 (none given) or 403 (a wrong one)."""
        given = list(parse_qs(urlsplit(path).query).get("token", []))
        if authorization and authorization.startswith("Bearer "):
            given.append(authorization[len("Bearer ") :].strip())
        if not given:
            return HTTPStatus.UNAUTHORIZED
        expected = self.token.encode("utf-8")
        if all(hmac.compare_digest(value.encode("utf-8"), expected) for value in given):
            return None
        return HTTPStatus.FORBIDDEN

    def serve_forever(self) -> None:
        """Serve until ``shutdown`` (or KeyboardInterrupt)."""
        self._httpd.serve_forever(poll_interval=0.2)

    def start(self) -> None:
        """Serve on a thread of its own (tests, or next to other work)."""
        self._thread = threading.Thread(target=self.serve_forever, name="accord-dashboard", daemon=True)
        self._thread.start()

    def shutdown(self) -> None:
        """Stop serving and close the socket."""
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join()
        self._httpd.server_close()


class _Server(ThreadingHTTPServer):
    daemon_threads = True


class _Server6(_Server):
    address_family = socket.AF_INET6


class _Handler(BaseHTTPRequestHandler):
    """One request: authorized first, then one of the two GET paths."""

    dashboard: DashboardServer
    timeout = SOCKET_TIMEOUT_SECONDS
    server_version = "accord-dashboard"
    sys_version = ""

    def do_GET(self) -> None:
        if urlsplit(self.path).path == "/favicon.ico":  # a browser's own request, never with the token
            self._send(HTTPStatus.NO_CONTENT, "text/plain; charset=utf-8", b"")
            return
        refused = self.dashboard.authorized(self.path, self.headers.get("Authorization"))
        if refused is not None:
            why = "no token" if refused == HTTPStatus.UNAUTHORIZED else "a wrong token"
            self.dashboard.log_refusal(self.client_address[0], why)
            text = f"{refused.value} {refused.phrase}: {why}; open the URL `fx dashboard` printed, with its token\n"
            self._send(refused, "text/plain; charset=utf-8", text.encode())
            return
        route = urlsplit(self.path).path
        if route == "/":
            nonce = secrets.token_urlsafe(16)
            self._send(HTTPStatus.OK, "text/html; charset=utf-8", render_page(nonce).encode("utf-8"), nonce)
        elif route == "/api/state":
            body = json.dumps(_jsonable(self.dashboard.view.snapshot()), allow_nan=False).encode("utf-8")
            self._send(HTTPStatus.OK, "application/json", body)
        else:
            self._send(
                HTTPStatus.NOT_FOUND, "text/plain; charset=utf-8", b"404 Not Found: the dashboard serves / and /api/state\n"
            )

    def _send(self, status: HTTPStatus, content_type: str, body: bytes, nonce: str | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "no-referrer")
        self.send_header("X-Frame-Options", "DENY")
        scripts = f"'nonce-{nonce}'" if nonce else "'none'"
        self.send_header(
            "Content-Security-Policy",
            f"default-src 'none'; script-src {scripts}; style-src {scripts}; connect-src 'self'; img-src 'self'; "
            "base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
        )
        if status == HTTPStatus.UNAUTHORIZED:
            self.send_header("WWW-Authenticate", 'Bearer realm="accord-dashboard"')
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Nothing per request: a request line holds the token."""


def _jsonable(value: Any) -> Any:
    """``value`` with every float that JSON cannot hold (inf, nan) as None."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value
