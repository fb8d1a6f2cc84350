"""etcd's Authenticate, for one user: ``root``, whose password is the
node's ``--token-file`` token (docs/etcd.md, "Auth").

etcd's simple tokens are random strings a member keeps in memory, so a
client authenticates again on each member.  liferaft's token is derived
instead: an HMAC of the ``--token-file`` secret, the same on every node and
across restarts, and it reveals nothing of the secret.  Whoever holds it
may do what the secret allows, everything, as etcd's root may.  Without
``--token-file`` there is no auth, as etcd without ``auth enable``:
Authenticate answers "authentication is not enabled" and calls need no
token.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping

from . import errors
from .calls import Call
from .context import EtcdContext
from .proto import rpc_pb2 as pb

ROOT = "root"
AUTHENTICATE = "/etcdserverpb.Auth/Authenticate"


def derived_token(secret: str) -> str:
    """The token Authenticate hands out for ``secret``."""
    mac = hmac.new(secret.encode(), b"liferaft etcd v3 token", hashlib.sha256).hexdigest()
    return "liferaft." + mac


def _token_of(metadata: Mapping[str, str | bytes]) -> str:
    # etcd reads "token" (its clients' key), else "authorization" (what its
    # gateway forwards the HTTP header as).
    got = metadata.get("token") or metadata.get("authorization") or ""
    return got.decode("latin-1") if isinstance(got, bytes) else got


def check(ctx: EtcdContext, call: Call, metadata: Mapping[str, str | bytes]) -> None:
    """Refuse a call without the token when auth is on (Authenticate is open).

    etcd's answers: no token is "user name is empty" (etcd's check of an
    anonymous user), a token it did not give is "invalid auth token" (its
    clients authenticate again on it)."""
    if ctx.token is None or call.grpc_path == AUTHENTICATE:
        return
    got = _token_of(metadata)
    if not got:
        raise errors.USER_EMPTY
    # A header that is not UTF-8 arrives with surrogates: never raise on it.
    want = derived_token(ctx.token).encode()
    if not hmac.compare_digest(got.encode(errors="surrogatepass"), want):
        raise errors.INVALID_AUTH_TOKEN


def gateway_metadata(ctx: EtcdContext, authorization: str) -> dict[str, str]:
    """The metadata of a gateway call with this ``Authorization`` header:
    etcd's token as it is, or liferaft's native ``Bearer`` secret, which
    stands for it (compared in constant time, as every secret here)."""
    if not authorization:
        return {}
    if ctx.token is not None and hmac.compare_digest(
        authorization.encode(errors="surrogatepass"), ("Bearer " + ctx.token).encode()
    ):
        return {"token": derived_token(ctx.token)}
    return {"token": authorization}


async def authenticate(ctx: EtcdContext, r: pb.AuthenticateRequest) -> pb.AuthenticateResponse:
    if ctx.token is None:
        raise errors.AUTH_NOT_ENABLED
    # An empty name is a failed login too, as in etcd (not "user name is
    # empty", which is its answer to a call without a token).
    ok_name = hmac.compare_digest(r.name.encode(), ROOT.encode())
    ok_password = hmac.compare_digest(r.password.encode(), ctx.token.encode())
    if not (ok_name and ok_password):
        raise errors.AUTH_FAILED
    return pb.AuthenticateResponse(header=ctx.header(), token=derived_token(ctx.token))


CALLS = [
    Call(
        "Auth",
        "Authenticate",
        pb.AuthenticateRequest,
        pb.AuthenticateResponse,
        authenticate,
        ("/v3/auth/authenticate",),
    ),  # fmt: skip
]
