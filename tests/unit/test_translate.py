"""The one place botocore exceptions become agent errors: each class of answer lands in
the right branch of the error tree, with the operation and the RequestId in the message
and the library exception kept as the cause."""

from __future__ import annotations

from typing import Any

import pytest
from botocore import exceptions as bx

from agent import errors
from agent.aws.translate import call, translate


def client_error(code: str, status: int, request_id: str | None = "req-1") -> bx.ClientError:
    response: dict[str, Any] = {
        "Error": {"Code": code, "Message": f"{code} happened"},
        "ResponseMetadata": {"HTTPStatusCode": status, **({"RequestId": request_id} if request_id else {})},
    }
    return bx.ClientError(response, "StartModelPackagingJob")


@pytest.mark.parametrize(
    ("code", "status", "kind"),
    [
        ("ThrottlingException", 400, errors.ThrottledError),
        ("ServiceQuotaExceededException", 402, errors.ThrottledError),
        ("AnythingElse", 429, errors.ThrottledError),
        ("InternalServerException", 500, errors.ServiceUnavailableError),
        ("SomethingNew", 503, errors.ServiceUnavailableError),
        ("ExpiredTokenException", 400, errors.TransientError),
        ("AccessDeniedException", 403, errors.AccessDeniedError),
        ("UnrecognizedClientException", 403, errors.AccessDeniedError),
        ("ResourceNotFoundException", 404, errors.NotFoundError),
        ("ConflictException", 409, errors.ConflictError),
        ("ValidationException", 400, errors.InvalidRequestError),
        ("SomethingNew", 400, errors.TerminalError),
    ],
)
def test_client_errors_map_by_code_then_status(code: str, status: int, kind: type[errors.AgentError]) -> None:
    """Throttling and 429 are ThrottledError, 5xx unavailable, expired credentials
    transient, the known 4xx codes their own class, any other 4xx terminal."""
    error = translate(client_error(code, status), "StartModelPackagingJob")
    assert type(error) is kind
    assert error.code == code
    assert error.message == f"StartModelPackagingJob: {code} happened (RequestId: req-1)"


def test_a_client_error_without_request_id_says_nothing_about_one() -> None:
    error = translate(client_error("ConflictException", 409, request_id=None), "CreateDeployment")
    assert error.message == "CreateDeployment: ConflictException happened"


@pytest.mark.parametrize(
    ("exc", "kind"),
    [
        (bx.NoCredentialsError(), errors.TransientError),
        (bx.EndpointConnectionError(endpoint_url="http://127.0.0.1:9"), errors.ServiceUnavailableError),
        (bx.ParamValidationError(report="JobName is too long"), errors.InvalidRequestError),
        (bx.ReadTimeoutError(endpoint_url="http://127.0.0.1:9"), errors.ServiceUnavailableError),
        (ValueError("odd"), errors.TerminalError),
    ],
)
def test_library_errors_without_an_answer(exc: Exception, kind: type[errors.AgentError]) -> None:
    """No credentials yet (the token exchange starting) is retried, a connection problem
    is unavailable, a request botocore refuses is invalid, anything else terminal."""
    error = translate(exc, "ListModels")
    assert type(error) is kind and error.message.startswith("ListModels: ")


def test_call_raises_the_agent_error_from_the_library_one() -> None:
    """``call`` keeps the botocore exception as the cause (``raise ... from exc``)."""
    original = client_error("ResourceNotFoundException", 404)

    def fails() -> None:
        raise original

    with pytest.raises(errors.NotFoundError) as raised:
        call("DescribeModelPackagingJob", fails)
    assert raised.value.__cause__ is original
    assert call("ListModels", lambda: 7) == 7


def throttled(headers: dict[str, str] | None = None, **members: Any) -> bx.ClientError:
    error = client_error("ThrottlingException", 429)
    error.response["ResponseMetadata"]["HTTPHeaders"] = headers or {}
    error.response.update(members)
    return error


@pytest.mark.parametrize(
    ("exc", "seconds"),
    [
        (throttled({"retry-after": "7"}), 7.0),
        (throttled({"Retry-After": "2.5"}), 2.5),
        (throttled(RetryAfterSeconds=4), 4.0),  # Lookout for Vision's member
        (throttled(retryAfterSeconds=9), 9.0),  # Greengrass's member
        (throttled({"retry-after": "3"}, RetryAfterSeconds=5), 5.0),
        (throttled(), None),
        (throttled({"retry-after": "Wed, 21 Oct 2026 07:28:00 GMT"}), None),
        (throttled({"retry-after": "-1"}), None),
        (throttled({"retry-after": "inf"}), None),
    ],
)
def test_a_throttle_carries_the_services_retry_after(exc: bx.ClientError, seconds: float | None) -> None:
    """The Retry-After header or the modelled RetryAfterSeconds / retryAfterSeconds
    member (the longest when several say it) becomes ThrottledError.retry_after; an
    answer that does not say it in seconds leaves it None."""
    error = translate(exc, "ListModels")
    assert isinstance(error, errors.ThrottledError)
    assert error.retry_after == seconds
