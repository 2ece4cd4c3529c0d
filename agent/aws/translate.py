"""The one place where botocore exceptions become agent errors."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, TypeVar

from agent import errors

T = TypeVar("T")

_THROTTLING = {
    "ThrottlingException",
    "Throttling",
    "TooManyRequestsException",
    "RequestLimitExceeded",
    "ServiceQuotaExceededException",  # concurrent-job quotas clear by themselves
    "ResourceLimitExceeded",  # SageMaker's concurrent compilation jobs, likewise
}
_UNAVAILABLE = {"InternalServerException", "ServiceUnavailableException", "InternalFailure"}
_CREDENTIALS = {"ExpiredTokenException", "ExpiredToken", "RequestExpired"}
_BY_CODE: dict[str, type[errors.AgentError]] = {
    "AccessDeniedException": errors.AccessDeniedError,
    "UnrecognizedClientException": errors.AccessDeniedError,
    "ResourceNotFoundException": errors.NotFoundError,
    "ConflictException": errors.ConflictError,
    "ValidationException": errors.InvalidRequestError,
    # SageMaker's own codes for the same cases.
    "ResourceInUse": errors.ConflictError,
    "ResourceNotFound": errors.NotFoundError,
}


def translate(exc: Exception, operation: str) -> errors.AgentError:
    """Map a botocore/boto3 exception to the agent's error tree."""
    from botocore import exceptions as bx

    if isinstance(exc, bx.ClientError):
        error = exc.response.get("Error", {})
        metadata = exc.response.get("ResponseMetadata", {})
        code = str(error.get("Code", "Unknown"))
        # The request id is what AWS support asks for: it goes into the message, so every
        # log line and status event that reports the error carries it.
        request_id = str(metadata.get("RequestId") or "") or None
        message = f"{operation}: {error.get('Message') or code}"
        if request_id:
            message += f" (RequestId: {request_id})"
        status = int(metadata.get("HTTPStatusCode") or 0)
        kind: type[errors.AgentError]
        if code in _THROTTLING or status == 429:
            kind = errors.ThrottledError
        elif code in _UNAVAILABLE or status >= 500:
            kind = errors.ServiceUnavailableError
        elif code in _CREDENTIALS:
            kind = errors.TransientError
        else:
            kind = _BY_CODE.get(code, errors.TerminalError)
        if kind is errors.ThrottledError:
            return errors.ThrottledError(
                message, code=code, request_id=request_id, retry_after=retry_after(exc.response)
            )
        return kind(message, code=code, request_id=request_id)
    if isinstance(exc, (bx.NoCredentialsError, bx.PartialCredentialsError, bx.CredentialRetrievalError)):
        # Under Greengrass the token exchange service may not be up yet: retry.
        return errors.TransientError(f"{operation}: credentials unavailable: {exc}")
    if isinstance(exc, (bx.EndpointConnectionError, bx.ConnectionError, bx.HTTPClientError)):
        return errors.ServiceUnavailableError(f"{operation}: {exc}")
    if isinstance(exc, bx.ParamValidationError):
        return errors.InvalidRequestError(f"{operation}: {exc}")
    if isinstance(exc, bx.BotoCoreError):
        return errors.ServiceUnavailableError(f"{operation}: {exc}")
    return errors.TerminalError(f"{operation}: unexpected {type(exc).__name__}: {exc}")


#: Where a throttled answer says how long to wait: the modelled members (Lookout for
#: Vision ``RetryAfterSeconds``, Greengrass ``retryAfterSeconds``, both bound to the
#: header) and the HTTP header itself.
_RETRY_AFTER_MEMBERS = ("RetryAfterSeconds", "retryAfterSeconds")


def retry_after(response: Mapping[str, Any]) -> float | None:
    """The seconds a throttled ``response`` asks the caller to wait, or None when it does
    not say (or says it in a form we do not read, e.g. an HTTP date). The longest of the
    places that say it wins."""
    metadata = response.get("ResponseMetadata") or {}
    headers = {str(k).lower(): v for k, v in (metadata.get("HTTPHeaders") or {}).items()}
    error = response.get("Error") or {}
    found = [headers.get("retry-after")]
    found += [response.get(name) for name in _RETRY_AFTER_MEMBERS]
    found += [error.get(name) for name in _RETRY_AFTER_MEMBERS]
    seconds = [value for value in map(_seconds, found) if value is not None]
    return max(seconds) if seconds else None


def _seconds(value: Any) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        seconds = float(str(value).strip())
    except ValueError:
        return None
    return seconds if math.isfinite(seconds) and seconds >= 0 else None


@contextmanager
def aws_call(operation: str) -> Iterator[None]:
    """Run a boto3 call, re-raising library exceptions as agent errors (``from exc``)."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        yield
    except (ClientError, BotoCoreError) as exc:
        raise translate(exc, operation) from exc


def call(operation: str, fn: Callable[[], T]) -> T:
    with aws_call(operation):
        return fn()
