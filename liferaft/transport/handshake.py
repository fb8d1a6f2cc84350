"""The peer-port handshake's decisions, as pure functions (no I/O, no clock).

:mod:`.greeting` reads and writes the handshake frames; every decision
about them is made here, so each rule is table-tested on its own
(tests/transport/test_handshake.py).  The listener's whole decision is one
function, :func:`check_hello`; the dialer's is :func:`check_welcome`.

The exchange (docs/transport.md, "Handshake")::

    dialer -> listener  HELLO or CALLER [magic, version, cluster, from, to]
    listener -> dialer  CHALLENGE [node_id, listener_nonce]
    dialer -> listener  PROOF [dialer_nonce, dialer_proof]
    listener -> dialer  WELCOME [version, cluster, node_id, listener_proof]
                        or REFUSE [reason], then close

With a cluster secret, each side proves that it holds it with an
HMAC-SHA256 over the :func:`transcript` of this very exchange: both fresh
nonces (so an old proof cannot be replayed), the cluster id, both node ids,
whether it is a caller connection, and a label naming the side that proves
(so a listener's proof cannot be reflected back to it as a dialer's).
Without a secret both proofs are empty, and the connection is not
authenticated (loopback clusters, tests, or mutual TLS alone).

With mutual TLS, the certificate a side presented must name the node id it
claims (its common name, or a DNS or URI subject alternative name), so that
holding *a* certificate from the cluster's CA is not enough to speak as any
member.

Each side also says its cluster *epoch* (docs/transport.md, "Epochs"): 0
for a cluster made with ``--initial-cluster``, one more after each
``--force-new-cluster``.  A peer of a lower epoch than the listener's is of
a history the cluster left behind (an old member back with its old data):
instead of WELCOME it is told REMOVED [epoch, reason, proof], proven like a
WELCOME (:func:`prove_removed`), and it stops (:func:`stale_dialer`,
:func:`check_removed`).  A listener that meets a proven peer of a higher
epoch is the stale one itself (:func:`stale_listener`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
from collections.abc import Callable, Collection, Mapping
from typing import Any

import msgspec

__all__ = [
    "DIALER",
    "LISTENER",
    "MAGIC",
    "NONCE_SIZE",
    "PROOF_SIZE",
    "PROTOCOL_VERSION",
    "Claim",
    "Local",
    "cert_names",
    "check",
    "check_hello",
    "check_removed",
    "check_welcome",
    "prove",
    "prove_removed",
    "stale_dialer",
    "stale_listener",
    "transcript",
]

# Version 2 added the CHALLENGE/PROOF exchange and the proof in WELCOME.
PROTOCOL_VERSION = 2
MAGIC = "liferaft"
NONCE_SIZE = 32
PROOF_SIZE = 32  # HMAC-SHA256
# Which side a proof is from; part of what is MACed, so proofs of one side
# are worthless as proofs of the other (no reflection).
DIALER = "liferaft dialer proof"
LISTENER = "liferaft listener proof"
# A listener's proof in REMOVED: never valid as a WELCOME's, nor the reverse.
REMOVED = "liferaft removed proof"


@dataclasses.dataclass(frozen=True)
class Local:
    """What the listening node knows and requires."""

    node_id: str
    cluster_id: str
    # The peer table: ids a HELLO (a peer connection) may come from.
    members: Collection[str]
    # The cluster secret, or None: no proof required (nor accepted).
    secret: bytes | None = None
    # Mutual TLS is on: the dialer's certificate must name the id it claims.
    cert_ids: bool = False
    # This node's cluster epoch; None: not known yet (an empty node joining,
    # which learns it from the first proven member it meets, and judges nobody).
    epoch: int | None = 0


@dataclasses.dataclass(frozen=True)
class Claim:
    """What a dialer said and showed: its HELLO or CALLER, its TLS
    certificate, and (after the CHALLENGE) both nonces and its proof."""

    magic: str
    version: int
    cluster_id: str
    frm: str
    to: str
    caller: bool = False
    # Names in the dialer's verified certificate (see cert_names); None: none shown.
    cert: frozenset[str] | None = None
    dialer_nonce: bytes = b""
    listener_nonce: bytes = b""
    # The dialer's proof from its PROOF frame (b"": none); None before the
    # dialer answered the CHALLENGE (see check_hello).
    proof: bytes | None = None
    # The dialer's cluster epoch (0 when its HELLO says none: every build
    # before epochs, and every node of a cluster never forced).
    epoch: int = 0


def transcript(
    label: str,
    cluster_id: str,
    caller: bool,
    frm: str,
    to: str,
    listener_id: str,
    dialer_nonce: bytes,
    listener_nonce: bytes,
) -> bytes:
    """The bytes a proof is the HMAC of: a msgpack array of ``label``, the
    protocol version and everything both sides agreed on in this exchange."""
    return msgspec.msgpack.encode(
        [
            label,
            PROTOCOL_VERSION,
            cluster_id,
            "caller" if caller else "peer",
            frm,
            to,
            listener_id,
            dialer_nonce,
            listener_nonce,
        ]
    )


def prove(secret: bytes, label: str, claim: Claim, listener_id: str) -> bytes:
    """The proof that side ``label`` holds ``secret``, for this exchange."""
    data = transcript(
        label,
        claim.cluster_id,
        claim.caller,
        claim.frm,
        claim.to,
        listener_id,
        claim.dialer_nonce,
        claim.listener_nonce,
    )
    return hmac.new(secret, data, hashlib.sha256).digest()


def _verify(secret: bytes, label: str, claim: Claim, listener_id: str, proof: bytes) -> bool:
    return hmac.compare_digest(prove(secret, label, claim, listener_id), proof)


def prove_removed(secret: bytes, claim: Claim, listener_id: str, listener_epoch: int) -> bytes:
    """The listener's proof in a REMOVED: the :func:`transcript` of this
    exchange under the label :data:`REMOVED`, with both epochs, so that it
    says "I, a holder of the secret, am of epoch E and saw you claim e",
    fresh for this connection."""
    base = prove(secret, REMOVED, claim, listener_id)
    data = msgspec.msgpack.encode([base, claim.epoch, listener_epoch])
    return hmac.new(secret, data, hashlib.sha256).digest()


def stale_dialer(claim: Claim, local: Local) -> bool:
    """The listener's verdict that a peer dialer is of an older history
    than its own (answer REMOVED, not WELCOME).  Caller connections are not
    judged: an empty node asks to join on one before it knows the epoch."""
    return not claim.caller and local.epoch is not None and claim.epoch < local.epoch


def stale_listener(claim: Claim, local: Local) -> bool:
    """True if a peer dialer is of a newer history than this listener: once
    it proved the secret, this node is the one left behind."""
    return not claim.caller and local.epoch is not None and claim.epoch > local.epoch


def cert_names(peercert: Mapping[str, Any] | None) -> frozenset[str] | None:
    """The names a certificate (``SSLSocket.getpeercert()``'s dict) binds:
    its common names and its DNS and URI subject alternative names.  None if
    no verified certificate was presented."""
    if not peercert:
        return None
    names: set[str] = set()
    for rdn in peercert.get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                names.add(str(value))
    for kind, value in peercert.get("subjectAltName", ()):
        if kind in ("DNS", "URI"):
            names.add(str(value))
    return frozenset(names)


def _cert_refusal(cert: frozenset[str] | None, node_id: str, who: str) -> str | None:
    if cert is None:
        return f"{who} showed no certificate, and mutual TLS needs one naming {node_id!r}"
    if node_id not in cert:
        shown = ", ".join(sorted(cert)) or "nothing"
        return f"{who}'s certificate names {shown}, not {node_id!r}"
    return None


def check_hello(hello: Claim, local: Local) -> str | None:
    """Why the dialer is refused, or None to go on: the listener's whole
    authentication decision (docs/architecture.md, "Trust model").

    It is asked twice per handshake.  On the HELLO (or CALLER), before the
    dialer has answered the CHALLENGE (``hello.proof is None``), it makes
    every check that needs no proof: None means "send the CHALLENGE".  With
    the dialer's PROOF in ``hello`` (``proof`` is bytes, ``b""`` for "no
    proof"), it makes them all again (the peer table may have changed) and
    then checks the nonces and the proof: None means "WELCOME".

    Magic and version come first, so a dialer of another version is told so
    (naming both versions) and never misread.  A peer connection must come
    from a member; a caller connection (``call_address``: a node asking to
    join) may come from any id but this node's own, and may leave ``to``
    empty.
    """
    if hello.magic != MAGIC:
        return "not a liferaft handshake"
    if hello.version != PROTOCOL_VERSION:
        return (
            f"protocol version {hello.version} unsupported "
            f"(this node speaks version {PROTOCOL_VERSION})"
        )
    if hello.cluster_id != local.cluster_id:
        return f"wrong cluster id {hello.cluster_id!r} (this node is in {local.cluster_id!r})"
    if hello.frm == local.node_id:
        # Never a real dialer (a node neither peers with nor calls itself),
        # but an attacker's reflection: the proof this node makes when it
        # calls out with ``to=""`` is valid for its own listener's CHALLENGE.
        return f"the dialer claims to be this node, {local.node_id!r}"
    if hello.to != local.node_id and not (hello.caller and hello.to == ""):
        return f"dialed node {hello.to!r}, but this is {local.node_id!r}"
    if not hello.caller and hello.frm not in local.members and not stale_dialer(hello, local):
        # An older peer is judged by its history, not the peer table: the
        # force dropped the old members from it.  A newer one must be in
        # the table: its claim stops this node for good, and a certificate
        # of the cluster's CA naming a non-member (mutual TLS alone) or any
        # id on an open peer port must not be enough for that.
        return f"unknown peer {hello.frm!r}"
    if local.cert_ids:
        reason = _cert_refusal(hello.cert, hello.frm, "the dialer")
        if reason is not None:
            return reason
    if hello.proof is None:
        return None  # the CHALLENGE comes next; the proof is checked on its answer
    if len(hello.dialer_nonce) != NONCE_SIZE or len(hello.listener_nonce) != NONCE_SIZE:
        return f"nonces must be {NONCE_SIZE} bytes"
    if local.secret is None:
        if hello.proof:
            return "the dialer proves a cluster secret, but this node has none"
        return None
    if not hello.proof:
        return "no proof of the cluster secret (the dialer has no peer secret)"
    if not _verify(local.secret, DIALER, hello, local.node_id, hello.proof):
        return "wrong proof of the cluster secret"
    return None


def check(claim: Claim, local: Local) -> str | None:
    """Deprecated alias (one release) of :func:`check_hello` with the proof
    stage: a claim without a proof is checked as one that proves nothing."""
    if claim.proof is None:
        claim = dataclasses.replace(claim, proof=b"")
    return check_hello(claim, local)


def check_welcome(
    claim: Claim,
    listener_id: str,
    welcome_version: int,
    welcome_cluster: str,
    welcome_id: str,
    proof: bytes,
    secret: bytes | None,
    listener_cert: frozenset[str] | None = None,
    cert_ids: bool = False,
) -> str | None:
    """The dialer's side: why the WELCOME to ``claim`` (what this node sent)
    is not from the node it meant, or None.

    ``listener_id`` is the id the CHALLENGE named; the WELCOME must repeat
    it, and a peer connection must have reached the node it dialed.
    """
    if welcome_version != PROTOCOL_VERSION:
        return (
            f"peer speaks protocol version {welcome_version} "
            f"(this node speaks version {PROTOCOL_VERSION})"
        )
    if welcome_cluster != claim.cluster_id:
        return f"peer is in cluster {welcome_cluster!r}, this node in {claim.cluster_id!r}"
    if welcome_id != listener_id:
        return f"peer said it is {listener_id!r}, then {welcome_id!r}"
    if claim.to and welcome_id != claim.to:
        return f"peer is node {welcome_id!r}, expected {claim.to!r}"
    return _listener_refusal(
        welcome_id, listener_cert, cert_ids, secret, proof,
        lambda key: prove(key, LISTENER, claim, welcome_id),
    )  # fmt: skip


def _listener_refusal(
    listener_id: str,
    listener_cert: frozenset[str] | None,
    cert_ids: bool,
    secret: bytes | None,
    proof: bytes,
    expected: Callable[[bytes], bytes],
) -> str | None:
    """What a WELCOME and a REMOVED both check last: the listener's
    certificate (mutual TLS) and its proof, ``expected(secret)``."""
    if cert_ids:
        reason = _cert_refusal(listener_cert, listener_id, "the listener")
        if reason is not None:
            return reason
    if secret is None:
        if proof:
            return "the listener proves a cluster secret, but this node has none"
        return None
    if not proof:
        return "the listener did not prove the cluster secret (it has no peer secret)"
    if not hmac.compare_digest(expected(secret), proof):
        return "the listener's proof of the cluster secret is wrong"
    return None


def check_removed(
    claim: Claim,
    listener_id: str,
    listener_epoch: int,
    proof: bytes,
    secret: bytes | None,
    listener_cert: frozenset[str] | None = None,
    cert_ids: bool = False,
) -> str | None:
    """The dialer's side of a REMOVED: why it does not prove that this node
    (which sent ``claim``) is of an older history, or None if it does.  It
    must come from the node dialed, of a higher epoch than ``claim`` said,
    with the listener's proof of the secret over both epochs (and with mutual
    TLS, a certificate naming it): a stranger cannot stop a member."""
    if listener_epoch <= claim.epoch:
        return f"REMOVED from epoch {listener_epoch}, not above this node's {claim.epoch}"
    if claim.to and listener_id != claim.to:
        return f"REMOVED from node {listener_id!r}, expected {claim.to!r}"
    return _listener_refusal(
        listener_id, listener_cert, cert_ids, secret, proof,
        lambda key: prove_removed(key, claim, listener_id, listener_epoch),
    )  # fmt: skip
