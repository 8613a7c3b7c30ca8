"""Who may call what: the API keys of inference and of the model repository, checked the same
way for every protocol (HTTP headers or gRPC call metadata, both as lower-case names)."""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from dataclasses import dataclass

from mlserve.errors import Forbidden, MlserveError, Unauthorized


@dataclass(frozen=True, slots=True)
class AccessKeys:
    """The configured keys; each ``refuse_*`` returns the error to answer with, or None."""

    inference: tuple[str, ...]
    admin: tuple[str, ...] = ()
    admin_without_key: bool = False
    """With no admin key: the repository API is open (the server listens on loopback only)."""

    def refuse_inference(self, headers: Mapping[str, str]) -> MlserveError | None:
        """Unauthorized without a key, Forbidden with a wrong one; None without keys at all."""
        if not self.inference:
            return None
        presented = presented_key(headers)
        if not presented:
            return Unauthorized("an API key is required: send 'Authorization: Bearer <key>'")
        return None if matches(presented, self.inference) else Forbidden("the API key is not valid")

    def refuse_admin(self, headers: Mapping[str, str]) -> MlserveError | None:
        """The repository API changes what is served: the admin key only (an inference key is
        refused), or nothing at all on a loopback-only server without an admin key."""
        if not self.admin:
            if self.admin_without_key:
                return None
            return Forbidden(
                "the model repository API is off: set MLSERVE_ADMIN_API_KEY to use it "
                "(it is open without one only on a server listening on loopback)"
            )
        presented = presented_key(headers)
        if not presented:
            return Unauthorized("the admin API key is required: send 'Authorization: Bearer <key>'")
        if matches(presented, self.admin):
            return None
        return Forbidden("this key may not change what is served: that takes the admin API key")


def presented_key(headers: Mapping[str, str]) -> str | None:
    """The key a request presents, in X-API-Key or as a bearer token."""
    presented = headers.get("x-api-key")
    authorization = headers.get("authorization", "")
    if presented is None and authorization[:7].lower() == "bearer ":
        presented = authorization[7:].strip()
    return presented or None


def matches(presented: str, keys: tuple[str, ...]) -> bool:
    """Compare with every key, always, so timing says nothing about which one nearly matched."""
    candidate = presented.encode()
    matched = False
    for key in keys:
        matched |= hmac.compare_digest(candidate, key.encode())
    return matched
