"""Every error the agent raises on purpose, as one tree.

::

    AgentError
    ├── ConfigurationError        refuse to start (exit code 2); names field and rule
    ├── TransientError            retry later with back-off; the rollout goes on
    │   ├── ThrottledError        the service said slow down: back off harder
    │   ├── ServiceUnavailableError  5xx, timeouts, dropped connections
    │   ├── TransportError        MQTT/IPC not connected or no acknowledgement
    │   ├── StateStorageError     the ledger cannot be written (disk full, I/O error)
    │   └── LedgerCorruptError    the ledger file is damaged (moved aside, replaced)
    └── TerminalError             report and stop this rollout (a later one may work)
        ├── UnsupportedPlatformError  hardware the packaging service cannot target
        ├── NoTrainedModelError       nothing to package
        ├── NotFoundError             a project, model, job or thing does not exist
        ├── AccessDeniedError         IAM/token exchange role lacks a permission
        ├── ConflictError             the cloud holds something that contradicts us
        ├── InvalidRequestError       the service rejected our input (ValidationException)
        ├── PackagingFailedError      the packaging job ended FAILED
        └── DeploymentFailedError     the deployment failed or rolled back

Adapters (``agent.aws``, ``agent.reporting``) translate boto3/awscrt exceptions into
this tree with ``raise ... from exc``; nothing else catches library exceptions.
"""

from __future__ import annotations


class AgentError(Exception):
    """Base of every error the agent raises on purpose."""

    #: Short, stable name used in status events (``error.type``).
    kind = "AgentError"

    def __init__(
        self, message: str, *, code: str | None = None, request_id: str | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        #: The service's error code, when the error came from AWS.
        self.code = code
        #: The AWS request id of the failed call (``x-amzn-RequestId``), when there was one.
        self.request_id = request_id

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        cls.kind = cls.__name__


class ConfigurationError(AgentError):
    """The configuration is invalid: the agent refuses to start."""

    def __init__(self, message: str, *, problems: list[str] | None = None) -> None:
        super().__init__(message)
        self.problems = problems or [message]


class TransientError(AgentError):
    """Worth retrying after a back-off; the rollout stays where it is."""


class ThrottledError(TransientError):
    """The service throttled us (ThrottlingException / 429)."""

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        request_id: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, code=code, request_id=request_id)
        #: Seconds the service asked us to wait (``Retry-After``), when it said.
        self.retry_after = retry_after


class ServiceUnavailableError(TransientError):
    """5xx, timeout or dropped connection."""


class TransportError(TransientError):
    """The MQTT or IPC transport could not deliver or was not acknowledged."""


class TerminalError(AgentError):
    """This rollout cannot go on; report it and wait for a change."""


class UnsupportedPlatformError(TerminalError):
    """The hardware is not a Lookout for Vision packaging target."""

    def __init__(self, found: str, supported: str) -> None:
        super().__init__(f"unsupported platform: found {found}; supported: {supported}")
        self.found = found
        self.supported = supported


class NoTrainedModelError(TerminalError):
    """The project has no model version that can be packaged."""


class NotFoundError(TerminalError):
    """A resource does not exist (ResourceNotFoundException)."""


class AccessDeniedError(TerminalError):
    """The role lacks a permission (AccessDeniedException)."""


class ConflictError(TerminalError):
    """The cloud holds a resource that contradicts the request (ConflictException)."""


class InvalidRequestError(TerminalError):
    """The service rejected the request (ValidationException)."""


class PackagingFailedError(TerminalError):
    """The model packaging job ended FAILED."""


class DeploymentFailedError(TerminalError):
    """The deployment failed, was canceled or rolled back."""


class StateStorageError(TransientError):
    """The ledger cannot be written (disk full, I/O error): degrade and retry."""


class LedgerCorruptError(TransientError):
    """The ledger's database file is damaged; it is moved aside, a new one started and
    the step retried (the cloud side is adopted again)."""
