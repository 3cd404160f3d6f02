"""Every error Tiergate reports to a client, as one tree.

    TiergateError                      500 server_error
    ├── InvalidRequest                 400 invalid_request_error
    │   ├── PayloadTooLarge            413 invalid_request_error / payload_too_large
    │   └── ContextLengthExceeded      400 invalid_request_error / context_length_exceeded
    ├── AuthenticationFailed           401 invalid_request_error / invalid_api_key (as OpenAI answers a bad key)
    ├── PermissionDenied               403 permission_error
    ├── ModelNotFound                  404 invalid_request_error / model_not_found
    ├── RateLimited                    429 rate_limit_error / rate_limit_exceeded (carries Retry-After)
    │   ├── QueueFull                  429 rate_limit_error / queue_full
    │   └── BudgetExceeded             429 rate_limit_error / budget_exceeded (a key's frontier budget is spent)
    ├── UpstreamError                  502 upstream_error (a frontier provider failed)
    │   └── UpstreamTimeout            504 upstream_error / timeout
    └── Unavailable                    503 service_unavailable (model not loaded, tier without key, keys not yet
                                           loaded: then with Retry-After)

Each error knows its HTTP status and its OpenAI `type` and `code`; `gateway.errors` renders them in the OpenAI
shape `{"error": {"message", "type", "param", "code"}}`. Code decides by class, never by message text.
"""

from __future__ import annotations

from typing import Any, ClassVar


class TiergateError(Exception):
    status: ClassVar[int] = 500
    type: ClassVar[str] = "server_error"
    default_code: ClassVar[str | None] = None

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code if code is not None else self.default_code

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def headers(self) -> dict[str, str]:
        return {}


class InvalidRequest(TiergateError):
    status = 400
    type = "invalid_request_error"


class PayloadTooLarge(InvalidRequest):
    status = 413
    default_code = "payload_too_large"


class ContextLengthExceeded(InvalidRequest):
    default_code = "context_length_exceeded"


class AuthenticationFailed(TiergateError):
    status = 401
    type = "invalid_request_error"  # OpenAI's own type for a missing or wrong key; clients branch on the 401
    default_code = "invalid_api_key"


class PermissionDenied(TiergateError):
    status = 403
    type = "permission_error"


class ModelNotFound(TiergateError):
    status = 404
    type = "invalid_request_error"
    default_code = "model_not_found"


class RateLimited(TiergateError):
    status = 429
    type = "rate_limit_error"
    default_code = "rate_limit_exceeded"

    def __init__(self, message: str, *, retry_after_s: int = 1, param: str | None = None, code: str | None = None):
        super().__init__(message, param=param, code=code)
        self.retry_after_s = retry_after_s

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after_s)}


class QueueFull(RateLimited):
    default_code = "queue_full"


class BudgetExceeded(RateLimited):
    default_code = "budget_exceeded"


class UpstreamError(TiergateError):
    status = 502
    type = "upstream_error"

    def __init__(
        self,
        message: str,
        *,
        upstream_status: int | None = None,
        retryable: bool = True,
        param: str | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message, param=param, code=code)
        self.upstream_status = upstream_status
        self.retryable = retryable


class UpstreamTimeout(UpstreamError):
    status = 504
    default_code = "timeout"


class Unavailable(TiergateError):
    status = 503
    type = "service_unavailable"
    default_code = "unavailable"

    def __init__(
        self, message: str, *, retry_after_s: int | None = None, param: str | None = None, code: str | None = None
    ) -> None:
        super().__init__(message, param=param, code=code)
        self.retry_after_s = retry_after_s

    def headers(self) -> dict[str, str]:
        return {} if self.retry_after_s is None else {"Retry-After": str(self.retry_after_s)}
