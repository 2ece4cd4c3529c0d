"""Wire-level types shared by the emulators: request, response, service error, router.

Every emulator is a pure function of (state, Request) -> Response, so the same code
serves the HTTP front end (``localcloud.server``) and the in-process botocore
transport (``localcloud.transport``) used by simulations with thousands of agents.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote


class Headers(dict[str, str]):
    """Case-insensitive header mapping (keys stored lower-case)."""

    def __init__(self, items: Mapping[str, str] | None = None) -> None:
        super().__init__()
        for key, value in (items or {}).items():
            self[key] = value

    def __setitem__(self, key: str, value: str) -> None:
        super().__setitem__(key.lower(), value)

    def __getitem__(self, key: str) -> str:
        return super().__getitem__(key.lower())

    def get(self, key: str, default: Any = None) -> Any:
        return super().get(key.lower(), default)

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and super().__contains__(key.lower())


@dataclass
class Request:
    """One HTTP request as an emulator sees it. ``path`` is still percent-encoded."""

    method: str
    path: str
    query: dict[str, list[str]] = field(default_factory=dict)
    headers: Headers = field(default_factory=Headers)
    body: bytes = b""

    def query_value(self, name: str) -> str | None:
        values = self.query.get(name)
        return values[-1] if values else None


@dataclass
class Response:
    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def json(cls, status: int, payload: Any, headers: Mapping[str, str] | None = None) -> Response:
        merged = {"Content-Type": "application/json"}
        merged.update(headers or {})
        return cls(status, json.dumps(payload, separators=(",", ":")).encode(), merged)


class ServiceError(Exception):
    """An AWS error response: HTTP status, error code (``__type``) and message."""

    def __init__(
        self,
        code: str,
        message: str,
        status: int = 400,
        *,
        headers: Mapping[str, str] | None = None,
        **fields: Any,
    ) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.status = status
        #: Members the model binds to headers (e.g. ``Retry-After``); the rest is the body.
        self.headers = dict(headers or {})
        self.fields = fields

    def to_response(self) -> Response:
        body = {"__type": self.code, "message": self.message, "Message": self.message}
        body.update(self.fields)
        return Response.json(self.status, body, {"x-amzn-ErrorType": self.code, **self.headers})


class DropConnection(Exception):
    """Raised by fault injection: the server closes the connection without answering."""


Handler = Callable[[Request, dict[str, str]], Response]


@dataclass
class Route:
    method: str
    template: str
    operation: str
    handler: Handler
    regex: re.Pattern[str]


class Router:
    """Maps (method, path template) to an operation name and handler.

    Templates use ``{name}`` for one path segment, like the service models' requestUri.
    """

    def __init__(self) -> None:
        self.routes: list[Route] = []

    def add(self, method: str, template: str, operation: str, handler: Handler) -> None:
        pattern = re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", re.escape(template))
        self.routes.append(Route(method, template, operation, handler, re.compile(f"^{pattern}$")))

    def match(self, request: Request) -> tuple[Route, dict[str, str]] | None:
        """Return the route and its unquoted path parameters, or None if nothing matches.

        A path that matches with another method is still None: AWS answers unknown
        operations the same way.
        """
        path = request.path.rstrip("/") or "/"
        for route in self.routes:
            if route.method != request.method:
                continue
            found = route.regex.match(path)
            if found:
                return route, {k: unquote(v) for k, v in found.groupdict().items()}
        return None


def parse_json_body(request: Request, *, allow_empty: bool = True) -> dict[str, Any]:
    """Decode a JSON object body or raise ValidationException (never a 500)."""
    if not request.body.strip():
        if allow_empty:
            return {}
        raise ServiceError("ValidationException", "Request body is required")
    try:
        payload = json.loads(request.body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ServiceError("ValidationException", f"Request body is not valid JSON: {exc}") from exc
    if not isinstance(payload, dict):
        raise ServiceError("ValidationException", "Request body must be a JSON object")
    return payload
