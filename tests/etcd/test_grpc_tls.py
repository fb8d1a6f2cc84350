"""etcd's gRPC port serves TLS exactly when the client port does, with the
same certificate: etcdctl with the CA talks to it, without it is refused."""

from __future__ import annotations

from pathlib import Path

import trustme

from tests.etcd.etcdctl import Etcdctl
from tests.kv.procs import proc_cluster, wait_for


def test_grpc_uses_the_client_certificate(tmp_path: Path, etcdctl: str) -> None:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    files = {"cert.pem": cert.cert_chain_pems[0], "key.pem": cert.private_key_pem,
             "ca.pem": ca.cert_pem}  # fmt: skip
    for name, pem in files.items():
        pem.write_to_path(str(tmp_path / name))
    tls = ["--client-cert", str(tmp_path / "cert.pem"), "--client-key", str(tmp_path / "key.pem")]
    with proc_cluster(tmp_path / "c", grpc=True, extra=tls) as c:
        c.start_cluster(1, wait=False)
        ep = "https://" + c.nodes["n1"].grpc
        trusted = Etcdctl(etcdctl, [ep])
        wait_for(
            lambda: trusted.run("--cacert", str(tmp_path / "ca.pem"), "put", "t", "v",
                                timeout=10).returncode == 0,
            30, "a put over TLS",
        )  # fmt: skip
        got = trusted.ok("--cacert", str(tmp_path / "ca.pem"), "get", "t")
        assert got.splitlines() == ["t", "v"]
        # Without the CA the certificate is not trusted, and plain text is refused.
        r = trusted.run("--dial-timeout", "2s", "--command-timeout", "3s", "get", "t", timeout=15)
        assert r.returncode != 0 and r.stdout == "", r.stdout
        plain = Etcdctl(etcdctl, [c.nodes["n1"].grpc])
        r = plain.run("--dial-timeout", "2s", "--command-timeout", "3s", "get", "t", timeout=15)
        assert r.returncode != 0 and r.stdout == "", r.stdout
