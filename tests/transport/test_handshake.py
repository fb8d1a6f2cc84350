"""Table tests of the handshake's pure decisions (liferaft/transport/handshake.py).

``REFUSALS`` lists every way the listener's one decision,
``check_hello(hello, local)``, refuses a dialer, and the cases it accepts,
both on the HELLO (before any proof: ``proof=None``) and on the PROOF.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac

import msgspec
import pytest

from liferaft.transport import handshake as hs
from liferaft.transport.handshake import Claim, Local

SECRET = b"the-cluster-secret-0123456789"
ND, NL = b"d" * 32, b"l" * 32
LOCAL = Local("n1", "c1", frozenset({"n2", "n3"}), SECRET)


def claim(**kw: object) -> Claim:
    """n2's HELLO to n1 with both nonces; ``proof="good"`` computes the right one."""
    c = Claim(hs.MAGIC, hs.PROTOCOL_VERSION, "c1", "n2", "n1", dialer_nonce=ND, listener_nonce=NL)
    proof = kw.pop("proof", "good")
    c = dataclasses.replace(c, **kw)  # type: ignore[arg-type]
    if proof is None:  # on the HELLO: no nonces or proof yet
        return dataclasses.replace(c, dialer_nonce=b"", listener_nonce=b"")
    if proof == "good":
        proof = hs.prove(SECRET, hs.DIALER, c, "n1")
    return dataclasses.replace(c, proof=proof)  # type: ignore[arg-type]


MTLS = dataclasses.replace(LOCAL, cert_ids=True)

REFUSALS = [
    # (what, claim, local, words in the reason or None to accept)
    # On the HELLO, before the CHALLENGE: everything but the proof.
    ("HELLO: a member", claim(proof=None), LOCAL, None),
    ("HELLO: a caller to anyone", claim(frm="n9", to="", caller=True, proof=None), LOCAL, None),
    ("HELLO: wrong magic", claim(magic="http", proof=None), LOCAL, "not a liferaft handshake"),
    ("HELLO: an old version", claim(version=1, proof=None), LOCAL, "protocol version 1"),
    ("HELLO: another cluster", claim(cluster_id="c2", proof=None), LOCAL, "wrong cluster id"),
    ("HELLO: meant for another node", claim(to="n3", proof=None), LOCAL, "dialed node 'n3'"),
    ("HELLO: an unknown peer", claim(frm="n9", proof=None), LOCAL, "unknown peer 'n9'"),
    (
        "HELLO: this node itself",
        claim(frm="n1", to="", caller=True, proof=None),
        LOCAL,
        "this node",
    ),
    ("HELLO: mTLS, no certificate", claim(proof=None), MTLS, "showed no certificate"),
    ("HELLO: mTLS, the right one", claim(cert=frozenset({"n2"}), proof=None), MTLS, None),
    # On the PROOF: everything again, then the nonces and the proof.
    ("a member with the proof", claim(), LOCAL, None),
    ("a caller with the proof, to anyone", claim(frm="n9", to="", caller=True), LOCAL, None),
    ("a caller naming this node", claim(frm="n9", caller=True), LOCAL, None),
    ("no secret on either side", claim(proof=b""), dataclasses.replace(LOCAL, secret=None), None),
    ("wrong magic", claim(magic="http"), LOCAL, "not a liferaft handshake"),
    (
        "an old version, named with ours",
        claim(version=1),
        LOCAL,
        f"protocol version 1 unsupported (this node speaks version {hs.PROTOCOL_VERSION})",
    ),
    ("another cluster", claim(cluster_id="c2"), LOCAL, "wrong cluster id 'c2'"),
    ("meant for another node", claim(to="n3"), LOCAL, "dialed node 'n3', but this is 'n1'"),
    ("a peer to anyone", claim(to=""), LOCAL, "dialed node ''"),
    ("an unknown peer", claim(frm="n9"), LOCAL, "unknown peer 'n9'"),
    (
        "a caller claiming to be this node (its own proof reflected)",
        claim(frm="n1", to="", caller=True),
        LOCAL,
        "claims to be this node",
    ),
    ("no proof", claim(proof=b""), LOCAL, "no proof of the cluster secret"),
    ("a wrong proof", claim(proof=b"x" * 32), LOCAL, "wrong proof"),
    (
        "a proof made with another secret",
        claim(proof=hs.prove(b"another-secret-entirely", hs.DIALER, claim(), "n1")),
        LOCAL,
        "wrong proof",
    ),
    (
        "the listener's proof reflected",
        claim(proof=hs.prove(SECRET, hs.LISTENER, claim(), "n1")),
        LOCAL,
        "wrong proof",
    ),
    (
        "a proof replayed against a new nonce",
        dataclasses.replace(claim(), listener_nonce=b"m" * 32),
        LOCAL,
        "wrong proof",
    ),
    (
        "a peer's proof reused as a caller's",
        dataclasses.replace(claim(), caller=True),
        LOCAL,
        "wrong proof",
    ),
    (
        "a proof where none is expected",
        claim(),
        dataclasses.replace(LOCAL, secret=None),
        "this node has none",
    ),
    ("a short nonce", claim(dialer_nonce=b"d"), LOCAL, "nonces must be 32 bytes"),
    (
        "mTLS: a certificate naming the id",
        claim(cert=frozenset({"n2", "127.0.0.1"})),
        dataclasses.replace(LOCAL, cert_ids=True),
        None,
    ),
    (
        "mTLS: a certificate naming another id",
        claim(cert=frozenset({"n3"})),
        dataclasses.replace(LOCAL, cert_ids=True),
        "certificate names n3, not 'n2'",
    ),
    (
        "mTLS: no certificate",
        claim(),
        dataclasses.replace(LOCAL, cert_ids=True),
        "showed no certificate",
    ),
    (
        "mTLS: a caller's certificate must name it too",
        claim(frm="n9", to="", caller=True, cert=frozenset({"n2"})),
        dataclasses.replace(LOCAL, cert_ids=True),
        "not 'n9'",
    ),
]


@pytest.mark.parametrize(("what", "c", "local", "words"), REFUSALS, ids=[r[0] for r in REFUSALS])
def test_check_hello(what: str, c: Claim, local: Local, words: str | None) -> None:
    reason = hs.check_hello(c, local)
    if words is None:
        assert reason is None, reason
    else:
        assert reason is not None and words in reason, reason


def test_check_hello_checks_the_proof_once_the_dialer_answered() -> None:
    """On the HELLO (``proof is None``) the proof is not due yet; an answer
    with no proof (``b""``) is refused, never taken for "not due"."""
    hello = claim(proof=None)
    assert hs.check_hello(hello, LOCAL) is None
    answered = dataclasses.replace(hello, dialer_nonce=ND, listener_nonce=NL, proof=b"")
    reason = hs.check_hello(answered, LOCAL)
    assert reason is not None and "no proof" in reason


def test_check_is_a_deprecated_alias_that_wants_the_proof() -> None:
    """The old name (kept one release) made every check, the proof included."""
    assert hs.check(claim(), LOCAL) is None
    reason = hs.check(
        dataclasses.replace(claim(proof=None), dialer_nonce=ND, listener_nonce=NL), LOCAL
    )
    assert reason is not None and "no proof" in reason


def test_the_proof_is_hmac_sha256_of_the_documented_transcript() -> None:
    """Pins the wire format: another implementation can compute it from docs/transport.md."""
    c = claim(frm="n9", to="", caller=True)
    data = msgspec.msgpack.encode(
        ["liferaft dialer proof", hs.PROTOCOL_VERSION, "c1", "caller", "n9", "", "n1", ND, NL]
    )
    assert c.proof == hmac.new(SECRET, data, hashlib.sha256).digest()


WELCOME_OK = ("n1", hs.PROTOCOL_VERSION, "c1", "n1")


def listener_proof(c: Claim, secret: bytes = SECRET, node: str = "n1") -> bytes:
    return hs.prove(secret, hs.LISTENER, c, node)


@pytest.mark.parametrize(
    ("what", "args", "words"),
    [
        ("the node it dialed, with the proof", (*WELCOME_OK, "good", SECRET), None),
        ("no secret on either side", (*WELCOME_OK, b"", None), None),
        ("another version", ("n1", 3, "c1", "n1", "good", SECRET), "protocol version 3"),
        ("another cluster", ("n1", hs.PROTOCOL_VERSION, "c9", "n1", "good", SECRET), "'c9'"),
        ("changed its id", ("n1", hs.PROTOCOL_VERSION, "c1", "n3", "good", SECRET), "then 'n3'"),
        ("another node", ("n3", hs.PROTOCOL_VERSION, "c1", "n3", "good", SECRET), "expected 'n1'"),
        ("no proof", (*WELCOME_OK, b"", SECRET), "did not prove"),
        ("the dialer's proof reflected", (*WELCOME_OK, "reflected", SECRET), "is wrong"),
        ("a proof where none is expected", (*WELCOME_OK, "good", None), "has none"),
    ],
)
def test_check_welcome(what: str, args: tuple, words: str | None) -> None:  # type: ignore[type-arg]
    c = claim()
    challenge_id, version, cluster, node, proof, secret = args
    if proof == "good":
        proof = listener_proof(c, node=node)
    elif proof == "reflected":
        proof = c.proof
    reason = hs.check_welcome(c, challenge_id, version, cluster, node, proof, secret)
    if words is None:
        assert reason is None, reason
    else:
        assert reason is not None and words in reason, reason


def test_check_welcome_with_mtls_needs_the_listeners_certificate_to_name_it() -> None:
    c = claim()
    p = listener_proof(c)
    assert hs.check_welcome(c, *WELCOME_OK[:3], "n1", p, SECRET, frozenset({"n1"}), True) is None
    bad = hs.check_welcome(c, *WELCOME_OK[:3], "n1", p, SECRET, frozenset({"n2"}), True)
    assert bad is not None and "names n2, not 'n1'" in bad


def test_cert_names() -> None:
    peercert = {
        "subject": ((("organizationName", "x"),), (("commonName", "n1"),)),
        "subjectAltName": (("DNS", "n1.example"), ("IP Address", "127.0.0.1"), ("URI", "n1u")),
    }
    assert hs.cert_names(peercert) == frozenset({"n1", "n1.example", "n1u"})
    assert hs.cert_names(None) is None and hs.cert_names({}) is None
