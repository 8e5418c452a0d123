"""Requests that change a run must carry the Ray cluster's auth token, checked by Ray itself."""

from __future__ import annotations

from http import HTTPStatus

from services.control.http_api import Refusal


def ray_token_authorize(header: str) -> Refusal | None:
    """Let through `Authorization: Bearer <token>` with the token this Ray cluster uses."""
    # Ray's own check (private API): the token loader and the constant-time comparison are
    # the ones Ray's dashboard uses, so both accept exactly the same tokens.
    from ray._private.authentication import authentication_utils as ray_auth

    if not header:
        return Refusal(
            HTTPStatus.UNAUTHORIZED,
            "missing 'Authorization: Bearer TOKEN': changes need the Ray cluster's auth token "
            "(`ray get-auth-token` prints it)",
        )
    if not ray_auth.is_token_auth_enabled():
        return Refusal(
            HTTPStatus.FORBIDDEN,
            "token auth is off on this Ray cluster, so changes over HTTP are refused; "
            "use `troupe scale` on a cluster node",
        )
    if not header.startswith("Bearer ") or not ray_auth.validate_request_token(header):
        return Refusal(HTTPStatus.FORBIDDEN, "the bearer token is not this Ray cluster's token")
    return None
