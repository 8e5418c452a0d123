"""The control and metrics HTTP API of a cluster's runs (`troupe serve`).

    GET  /status[?run=RUN]   JSON: every run's status, or one run's
    GET  /metrics            Prometheus text format, one sample per run and figure
    POST /scale              JSON {"run": RUN, "actors": N}; needs `Authorization: Bearer TOKEN`
                             with the Ray cluster's auth token (401 without, 403 if wrong)

It binds 127.0.0.1 unless told otherwise: reach it through an SSH tunnel. Reads need no token
(like Ray's own metrics port); anything that changes a run does.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol
from urllib.parse import parse_qs, urlsplit

from services.control.prometheus import exposition
from services.control.run_control import RunNotFound, ScaleError, check_actor_count

log = logging.getLogger(__name__)

MAX_BODY = 64 * 1024
REQUEST_TIMEOUT_S = 10.0
"""A client that sends nothing for this long mid-request is dropped (slowloris)."""
MAX_CONNECTIONS = 64
"""Connections served at once; more are answered 503 and closed, never given a thread."""
LOOPBACK_HOSTS = {"localhost", "127.0.0.1", "::1"}


class Runs(Protocol):
    """What the API serves; `RayRuns` in `services/control/registry.py` is the real one."""

    def statuses(self) -> list[dict[str, Any]]: ...

    def status(self, run: str) -> dict[str, Any]: ...

    def scale(self, run: str, actors: int) -> dict[str, Any]: ...


Authorize = Callable[[str], "Refusal | None"]
"""Checks an Authorization header; None lets the request through."""


@dataclass(frozen=True)
class Refusal:
    status: HTTPStatus
    message: str


class ApiError(Exception):
    def __init__(self, status: HTTPStatus, message: str) -> None:
        super().__init__(message)
        self.status = status


def make_server(runs: Runs, authorize: Authorize, host: str, port: int) -> ThreadingHTTPServer:
    """An HTTP server (not yet serving) on host:port; port 0 picks a free one."""

    loopback = host in LOOPBACK_HOSTS

    class Handler(BaseHTTPRequestHandler):
        server_version = "troupe"
        timeout = REQUEST_TIMEOUT_S  # on the socket: every read and write of a request

        def do_GET(self) -> None:
            self._answer(self._get)

        def do_POST(self) -> None:
            self._answer(self._post)

        def _check_host(self) -> None:
            """On loopback, only requests addressed to loopback: a web page whose DNS name
            rebinds to 127.0.0.1 sends its own name in Host, and is refused."""
            header = self.headers.get("Host")
            if not loopback or header is None:  # browsers, the rebinding risk, always send it
                return
            name = urlsplit(f"//{header}").hostname or ""
            if name not in LOOPBACK_HOSTS:
                raise ApiError(
                    HTTPStatus.MISDIRECTED_REQUEST,
                    "this server answers requests for localhost only (Host header)",
                )

        def _get(self) -> tuple[HTTPStatus, str, str]:
            url = urlsplit(self.path)
            if url.path == "/status":
                query = parse_qs(url.query)
                if "run" in query:
                    return _json(runs.status(query["run"][0]))
                return _json({"runs": runs.statuses()})
            if url.path == "/metrics":
                return HTTPStatus.OK, exposition(runs.statuses()), "text/plain; version=0.0.4"
            if url.path == "/scale":
                raise ApiError(HTTPStatus.METHOD_NOT_ALLOWED, "use POST /scale")
            raise ApiError(HTTPStatus.NOT_FOUND, f"no such path {url.path}; see /status")

        def _post(self) -> tuple[HTTPStatus, str, str]:
            path = urlsplit(self.path).path
            if path != "/scale":
                raise ApiError(HTTPStatus.NOT_FOUND, f"no such path {path}; POST /scale")
            refusal = authorize(self.headers.get("Authorization", ""))
            if refusal is not None:
                raise ApiError(refusal.status, refusal.message)
            body = self._json_body()
            run, actors = body.get("run"), body.get("actors")
            if not isinstance(run, str) or not run:
                raise ApiError(HTTPStatus.BAD_REQUEST, 'body needs "run": the run id or name')
            try:
                check_actor_count(actors)
            except ScaleError as err:
                raise ApiError(HTTPStatus.BAD_REQUEST, str(err)) from None
            return _json(runs.scale(run, actors))

        def _json_body(self) -> dict[str, Any]:
            try:
                length = int(self.headers.get("Content-Length", "0"))
            except ValueError:
                raise ApiError(HTTPStatus.BAD_REQUEST, "bad Content-Length") from None
            if length < 0:
                raise ApiError(HTTPStatus.BAD_REQUEST, "bad Content-Length")
            if length > MAX_BODY:
                raise ApiError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "body over 64 KiB")
            try:
                raw = self.rfile.read(length)
            except TimeoutError:
                raise ApiError(HTTPStatus.REQUEST_TIMEOUT, "the body did not arrive") from None
            try:
                body = json.loads(raw or b"null")
            except RecursionError:
                raise ApiError(HTTPStatus.BAD_REQUEST, "body nests too deep") from None
            except (UnicodeDecodeError, ValueError) as err:  # huge integers raise ValueError
                raise ApiError(HTTPStatus.BAD_REQUEST, f"body is not JSON: {err}") from None
            if not isinstance(body, dict):
                raise ApiError(
                    HTTPStatus.BAD_REQUEST, 'body must be a JSON object: {"run": ..., "actors": N}'
                )
            return body

        def _answer(self, handler: Callable[[], tuple[HTTPStatus, str, str]]) -> None:
            try:
                self._check_host()
                status, text, content_type = handler()
            except ApiError as err:
                status, text, content_type = _error(err.status, str(err))
            except RunNotFound as err:
                status, text, content_type = _error(HTTPStatus.NOT_FOUND, str(err))
            except ScaleError as err:  # the run has ended meanwhile, say
                status, text, content_type = _error(HTTPStatus.CONFLICT, str(err))
            except Exception as err:  # a Ray call failed: answer, keep serving
                log.exception("request %s %s failed", self.command, self.path)
                status, text, content_type = _error(HTTPStatus.SERVICE_UNAVAILABLE, str(err))
            payload = text.encode()
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(payload)))
            if status == HTTPStatus.UNAUTHORIZED:
                self.send_header("WWW-Authenticate", 'Bearer realm="troupe"')
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: Any) -> None:
            # The request line is the client's: escape what could forge or hide log lines.
            log.info("%s %s", self.address_string(), _printable(format % args))

    server = _BoundedServer((host, port), Handler)
    server.daemon_threads = True
    return server


class _BoundedServer(ThreadingHTTPServer):
    """A thread per connection, at most `MAX_CONNECTIONS` at once."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._slots = threading.BoundedSemaphore(MAX_CONNECTIONS)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            with contextlib.suppress(OSError):  # the client may be gone already
                request.sendall(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n"
                                b"Connection: close\r\n\r\n")  # fmt: skip
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()


def _printable(text: str) -> str:
    return "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in text)


def _json(value: Any) -> tuple[HTTPStatus, str, str]:
    return HTTPStatus.OK, json.dumps(value, indent=1) + "\n", "application/json"


def _error(status: HTTPStatus, message: str) -> tuple[HTTPStatus, str, str]:
    return status, json.dumps({"error": message}) + "\n", "application/json"
