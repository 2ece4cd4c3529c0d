"""HTTP front end of the world: every AWS service on one loopback endpoint, plus admin.

Requests are routed by their SigV4 credential scope (see ``World.dispatch``). Admin
endpoints (unsigned, JSON) live under ``/_localcloud/`` for out-of-process control:

    GET  /_localcloud/health                      -> {"ok": true}
    GET  /_localcloud/calls                       -> counts per service:operation
    POST /_localcloud/models   {project, status?, version?}        add a model version
    POST /_localcloud/faults   {service, operation, kind, times?, probability?, latencySeconds?}
    POST /_localcloud/quota    {service, rate}    (rate null removes it)
    POST /_localcloud/packaging {seconds, runningAfterSeconds?}    packaging duration
    POST /_localcloud/fail-jobs {project?, times?, message?}
    POST /_localcloud/advance  {seconds}          (virtual clock only)
    POST /_localcloud/sagemaker/model-packages {group, approval?, framework?, frameworkVersion?,
                                                dataInputConfig?, status?}  register a version
    POST /_localcloud/sagemaker/approval {group, version, approval}
    POST /_localcloud/sagemaker/role {name?}      a Neo execution role -> {arn}
    POST /_localcloud/sagemaker/compilation {seconds, startingSeconds?, maxActiveJobs?}
    POST /_localcloud/sagemaker/fail-jobs {times?, reason?, namePrefix?}
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from localcloud.clock import VirtualClock
from localcloud.http import DropConnection, Headers, Request, Response
from localcloud.sagemaker import admin as sagemaker_admin
from localcloud.world import World


class WorldServer:
    """Serves ``world`` on http://127.0.0.1:PORT in a background thread."""

    def __init__(self, world: World, port: int = 0) -> None:
        self.world = world
        handler = type("Handler", (_Handler,), {"world": world})
        self._httpd = ThreadingHTTPServer(("127.0.0.1", port), handler)
        self._httpd.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> WorldServer:
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="world-http", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> WorldServer:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()


class _Handler(BaseHTTPRequestHandler):
    world: World
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        return

    def _serve(self) -> None:
        url = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        if url.path.startswith("/_localcloud/"):
            self._send(_admin(self.world, self.command, url.path, body))
            return
        request = Request(
            method=self.command,
            path=url.path,
            query=parse_qs(url.query, keep_blank_values=True),
            headers=Headers(dict(self.headers.items())),
            body=body,
        )
        try:
            response = self.world.dispatch(request)
        except DropConnection:
            self.close_connection = True
            return
        self._send(response)

    def _send(self, response: Response) -> None:
        self.send_response(response.status)
        for key, value in response.headers.items():
            if key.lower() not in ("content-length", "connection", "transfer-encoding"):
                self.send_header(key, value)
        self.send_header("Content-Length", str(len(response.body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(response.body)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = _serve


def _admin(world: World, method: str, path: str, body: bytes) -> Response:
    try:
        data = json.loads(body) if body.strip() else {}
        if not isinstance(data, dict):
            raise ValueError("body must be a JSON object")
        action = path.removeprefix("/_localcloud/")
        if method == "GET" and action == "health":
            return Response.json(200, {"ok": True, "now": world.clock.now()})
        if method == "GET" and action == "calls":
            return Response.json(200, dict(world.calls.counts()))
        if method != "POST":
            return Response.json(404, {"error": f"no admin endpoint {method} {path}"})
        if action.startswith("sagemaker/"):
            return sagemaker_admin(world.sagemaker, action.removeprefix("sagemaker/"), data)
        l4v = world.lookoutvision
        if action == "models":
            version = l4v.add_model(
                data["project"], data.get("status", "TRAINED"), version=data.get("version")
            )
            return Response.json(200, {"version": version})
        if action == "faults":
            world.faults.inject(
                data["service"], data.get("operation", "*"), data["kind"],
                times=data.get("times"), probability=data.get("probability"),
                latency_seconds=float(data.get("latencySeconds", 0.0)),
            )
            return Response.json(200, {})
        if action == "quota":
            world.faults.set_quota(data["service"], data.get("rate"))
            return Response.json(200, {})
        if action == "packaging":
            l4v.packaging_seconds = float(data["seconds"])
            if "runningAfterSeconds" in data:
                l4v.running_after_seconds = float(data["runningAfterSeconds"])
            return Response.json(200, {})
        if action == "fail-jobs":
            l4v.fail_jobs(data.get("project"), times=int(data.get("times", 1)),
                          message=data.get("message", "Injected packaging failure"))
            return Response.json(200, {})
        if action == "advance":
            if not isinstance(world.clock, VirtualClock):
                return Response.json(409, {"error": "the world's clock is not virtual"})
            world.clock.advance(float(data["seconds"]))
            world.tick()
            return Response.json(200, {"now": world.clock.now()})
        return Response.json(404, {"error": f"no admin endpoint {method} {path}"})
    except (KeyError, TypeError, ValueError) as exc:
        return Response.json(400, {"error": f"{type(exc).__name__}: {exc}"})
