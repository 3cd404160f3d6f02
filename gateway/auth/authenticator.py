"""Checking a request's `Authorization: Bearer` key, and turning the key into the router's `Caller`."""

from __future__ import annotations

from gateway.auth.keys import ApiKey
from gateway.auth.store import KeyStore
from router.chat import Caller
from router.errors import AuthenticationFailed, PermissionDenied, Unavailable

_MISSING = (
    "You didn't provide an API key. You need to provide your API key in an Authorization header using Bearer auth "
    "(i.e. Authorization: Bearer YOUR_KEY). Keys are made with `tiergate keys create`."
)
KEYS_NOT_LOADED = (
    "API keys have not been loaded from the ledger database yet (it has been unreachable since start-up), so no key "
    "can be checked; try again shortly."
)
# The presented key is never echoed, not even masked: error bodies end up in client logs.
_INCORRECT = "Incorrect API key provided. Keys are made, listed and revoked with `tiergate keys create|list|revoke`."


class Authenticator:
    """On (`keys` given): every checked request needs an active key, admin routes an admin key. Off: nobody is
    checked and every request is anonymous."""

    def __init__(self, keys: KeyStore | None, *, store_prompts: bool) -> None:
        self.keys = keys
        self.store_prompts = store_prompts
        """`ledger.store_prompts`: prompts are stored for every request when on, else only for keys that ask."""
        self._anonymous = Caller(store_prompts=store_prompts)

    @property
    def enabled(self) -> bool:
        return self.keys is not None

    def authenticate(self, authorization: str | None, *, admin: bool, path: str) -> ApiKey | None:
        """The key behind an `Authorization` header value, or None when auth is off. Raises 401 or 403, and 503
        (`keys_not_loaded`) until the key set has been read once."""
        if self.keys is None:
            return None
        if not self.keys.loaded:
            # No key set was ever read (the database is unreachable since start-up): saying "incorrect key" to a
            # valid key would send its owner hunting for a typo. 503: the gateway, not the key, is the problem.
            raise Unavailable(KEYS_NOT_LOADED, retry_after_s=self.keys.retry_after_s, code="keys_not_loaded")
        if not authorization:
            raise AuthenticationFailed(_MISSING, code="missing_api_key")
        scheme, _, secret = authorization.strip().partition(" ")
        secret = secret.strip()
        if scheme.lower() != "bearer" or not secret:
            raise AuthenticationFailed(_MISSING, code="missing_api_key")
        key = self.keys.find(secret)
        if key is None:
            raise AuthenticationFailed(_INCORRECT)
        if admin and not key.admin:
            raise PermissionDenied(
                f"The API key {key.id} lacks the admin scope that {path} requires.", code="insufficient_scope"
            )
        return key

    def caller(self, key: ApiKey | None) -> Caller:
        if key is None:
            return self._anonymous
        return Caller(key_id=key.id, policy_tags=key.policy_tags, store_prompts=key.store_prompts or self.store_prompts)
