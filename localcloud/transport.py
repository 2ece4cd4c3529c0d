"""In-process botocore transport: a ``before-send`` hook that answers from a World.

botocore still signs, serializes, parses and retries exactly as over HTTP; only the
socket is skipped. Used by simulations and benchmarks with many agents in one process.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

from botocore.awsrequest import AWSResponse
from botocore.exceptions import ConnectionClosedError

from localcloud.http import DropConnection, Headers, Request
from localcloud.world import INTERNAL_ENDPOINT, TEST_CREDENTIALS, Scope, World

__all__ = ["TEST_CREDENTIALS", "attach", "make_handler", "world_client"]


class _Body(io.BytesIO):
    """A response body botocore can both ``stream()`` and ``read()`` (streaming outputs)."""

    def stream(self, **_: Any) -> Iterator[bytes]:
        yield self.getvalue()


def _body_bytes(body: Any) -> bytes:
    if body is None:
        return b""
    if isinstance(body, bytes):
        return body
    if isinstance(body, str):
        return body.encode()
    if hasattr(body, "read"):
        position = body.tell() if hasattr(body, "tell") else None
        data = body.read()
        if position is not None and hasattr(body, "seek"):
            body.seek(position)
        return data if isinstance(data, bytes) else str(data).encode()
    return bytes(body)


def make_handler(world: World | Scope, *, internal: bool = False) -> Any:
    """Return a botocore ``before-send`` handler that serves requests from ``world``."""

    def before_send(request: Any, **_: Any) -> AWSResponse:
        url = urlsplit(request.url)
        wire = Request(
            method=request.method,
            path=url.path or "/",
            query=parse_qs(url.query, keep_blank_values=True),
            headers=Headers({k: (v.decode() if isinstance(v, bytes) else v) for k, v in request.headers.items()}),
            body=_body_bytes(request.body),
        )
        try:
            answer = world.dispatch(wire, internal=internal)
        except DropConnection as exc:
            raise ConnectionClosedError(endpoint_url=request.url) from exc
        return AWSResponse(request.url, answer.status, answer.headers, _Body(answer.body))

    return before_send


def attach(client: Any, world: World | Scope, *, internal: bool = False) -> Any:
    """Route every request of a boto3/botocore ``client`` to ``world`` in-process."""
    client.meta.events.register_first("before-send", make_handler(world, internal=internal))
    return client


def world_client(
    world: World | Scope,
    service: str,
    *,
    internal: bool = False,
    botocore_session: Any = None,
    **client_kwargs: Any,
) -> Any:
    """A boto3 client for ``service`` answered in-process by ``world``.

    It signs for the region and with credentials of ``world`` (a World: its home account
    and region; a Scope: that account and region).
    """
    import boto3

    session = boto3.Session(
        botocore_session=botocore_session,
        region_name=world.region,
        **world.client_credentials(),
    )
    kwargs: dict[str, Any] = {"endpoint_url": INTERNAL_ENDPOINT}
    if service == "s3":
        from botocore.config import Config

        kwargs["config"] = Config(s3={"addressing_style": "path"})
    kwargs.update(client_kwargs)
    return attach(session.client(service, **kwargs), world, internal=internal)
