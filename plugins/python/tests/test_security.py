"""TLS, mutual TLS and API keys from the client's side, against a real ``heie serve`` started with
certificates generated here (``cryptography``) and an API key; plus the rule that a token never goes
in plaintext to another machine."""

from __future__ import annotations

import datetime
import ipaddress
import subprocess
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from PIL import Image

from conftest import ServeProcess, serving  # the plugins' shared server helpers
from heie_client import (
    Client, ConnectionFailure, EvaluateOptions, HealthStatus, InsecureTransport, Unauthenticated, Unavailable, connection_failure,
)
from heie_client.cli import main as heie_score
from heie_client.security import is_loopback

KEY = "python-test-key-7f3a"


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _certificate(subject: str, issuer_name: str, issuer_key, public_key, ca: bool, sans=()):  # type: ignore[no-untyped-def]
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(_name(issuer_name))
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(list(sans)), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def _write(path: Path, cert, key=None) -> None:  # type: ignore[no-untyped-def]
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    if key is not None:
        path.with_suffix(".key").write_bytes(
            key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        )


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """ca.pem, server.pem/.key (localhost, 127.0.0.1) and client.pem/.key, signed by the CA."""
    folder = tmp_path_factory.mktemp("pki")
    ca_key = ec.generate_private_key(ec.SECP256R1())
    _write(folder / "ca.pem", _certificate("heie python CA", "heie python CA", ca_key, ca_key.public_key(), ca=True))
    server_key = ec.generate_private_key(ec.SECP256R1())
    sans = (x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1")))
    _write(folder / "server.pem", _certificate("localhost", "heie python CA", ca_key, server_key.public_key(), False, sans), server_key)
    client_key = ec.generate_private_key(ec.SECP256R1())
    _write(folder / "client.pem", _certificate("python client", "heie python CA", ca_key, client_key.public_key(), False), client_key)
    # For the HTTPS server: a certificate for 127.0.0.1 only (https://localhost is then the wrong name).
    ip_key = ec.generate_private_key(ec.SECP256R1())
    ip_only = (x509.IPAddress(ipaddress.ip_address("127.0.0.1")),)
    _write(folder / "server-ip.pem", _certificate("127.0.0.1", "heie python CA", ca_key, ip_key.public_key(), False, ip_only),
           ip_key)
    # Another CA, which signed none of these.
    other_key = ec.generate_private_key(ec.SECP256R1())
    _write(folder / "other-ca.pem", _certificate("another CA", "another CA", other_key, other_key.public_key(), ca=True))
    return folder


@pytest.fixture(scope="module")
def secure_served(pki: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeProcess]:
    """``heie serve`` with TLS, required client certificates and one API key, on gRPC and on HTTPS (``--http``)."""
    log = tmp_path_factory.mktemp("heie-secure") / "serve.log"
    args = ["--addr", "127.0.0.1:0", "--http", "127.0.0.1:0", "--threads", "1", "--max-tokens", "4", "--max-tiles", "1",
            "--shutdown-grace", "1", "--tls-cert", str(pki / "server.pem"), "--tls-key", str(pki / "server.key"),
            "--tls-client-ca", str(pki / "ca.pem"), "--api-key", KEY]
    with serving(args, log) as served:
        assert served.http_address
        yield served
        assert KEY not in log.read_text(errors="replace"), "the key is never logged"


@pytest.fixture(scope="module")
def secure_server(secure_served: ServeProcess) -> str:
    """The gRPC address of ``secure_served``."""
    return secure_served.address


def _mtls(pki: Path, address: str, token=KEY) -> Client:  # type: ignore[no-untyped-def]
    return Client(address, timeout=60, token=token, ca_cert=pki / "ca.pem",
                  client_cert=pki / "client.pem", client_key=pki / "client.key")


def test_a_token_never_goes_in_plaintext_to_another_machine() -> None:
    for remote in ("10.0.0.5:50051", "gpu-box:50051", "[2001:db8::1]:50051", "dns:///judge.example:443"):
        with pytest.raises(InsecureTransport, match="plaintext"):
            Client(remote, token="k")
    for local in ("127.0.0.1:50051", "localhost:1", "[::1]:50051", "unix:/tmp/heie.sock"):
        assert is_loopback(local), local
        Client(local, token="k").close()
    Client("10.0.0.5:50051").close()  # no token, nothing to protect
    Client("10.0.0.5:50051", token="k", tls=True).close()
    with pytest.raises(ValueError, match="client_key"):
        Client("127.0.0.1:1", client_cert=b"-----BEGIN CERTIFICATE-----\n")


def test_mutual_tls_with_the_key_evaluates(pki: Path, secure_server: str) -> None:
    with _mtls(pki, secure_server) as client:
        client.wait_until_serving(30)
        assert client.tls and client.health() is HealthStatus.SERVING
        assert client.info().limits.max_batch >= 1
        pixels = (np.random.default_rng(5).random((24, 32, 3)) * 255).astype(np.uint8)
        result = client.evaluate(pixels, EvaluateOptions(max_tokens_per_section=2))
        assert result.ok and result.score is not None


def test_missing_or_wrong_key_is_unauthenticated_but_health_is_open(pki: Path, secure_server: str) -> None:
    for token in (None, "wrong-key"):
        with _mtls(pki, secure_server, token=token) as client:
            assert client.health() is HealthStatus.SERVING
            with pytest.raises(Unauthenticated):
                client.info()


def test_without_a_client_certificate_or_tls_the_server_is_unreachable(pki: Path, secure_server: str) -> None:
    with Client(secure_server, timeout=10, token=KEY, ca_cert=pki / "ca.pem") as no_cert:
        with pytest.raises(Unavailable):
            no_cert.health()
    with Client(secure_server, timeout=10) as plaintext:
        with pytest.raises(Unavailable):
            plaintext.health()


def test_a_connection_failure_says_what_failed(pki: Path, secure_server: str, heie_server, dead_address: str) -> None:  # type: ignore[no-untyped-def]
    """gRPC answers UNAVAILABLE for all of these; connection_failure tells them apart."""
    cases = [
        (dict(), secure_server, ConnectionFailure.SERVER_SPEAKS_TLS),
        (dict(tls=True), secure_server, ConnectionFailure.CERTIFICATE_NOT_TRUSTED),  # the system's roots
        (dict(ca_cert=pki / "ca.pem"), heie_server.address, ConnectionFailure.SERVER_SPEAKS_PLAINTEXT),
        (dict(ca_cert=pki / "ca.pem"), dead_address, ConnectionFailure.NO_SERVER),
        (dict(), dead_address, ConnectionFailure.NO_SERVER),
    ]
    for options, address, expected in cases:
        with Client(address, timeout=10, **options) as client:  # type: ignore[arg-type]
            with pytest.raises(Unavailable) as caught:
                client.info()
            assert connection_failure(caught.value, client.tls) is expected, (options, caught.value.message)


def test_heie_score_takes_tls_flags_and_the_key_from_the_environment(
    pki: Path, secure_server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "images"
    folder.mkdir()
    Image.new("RGB", (20, 16), "blue").save(folder / "a.png")
    out = tmp_path / "scores.csv"
    flags = [str(folder), "--address", secure_server, "--out", str(out), "--max-tokens", "2",
             "--ca-cert", str(pki / "ca.pem"), "--client-cert", str(pki / "client.pem"),
             "--client-key", str(pki / "client.key")]
    monkeypatch.delenv("HEIE_API_KEY", raising=False)
    assert heie_score(flags) == 2, "no key: the server refuses"
    monkeypatch.setenv("HEIE_API_KEY", KEY)
    assert heie_score(flags) == 0
    rows = out.read_text().splitlines()
    assert rows[0].startswith("file,score") and rows[1].startswith("a.png,")
    assert heie_score([str(folder), "--address", "10.9.8.7:50051", "--token", KEY]) == 2, "plaintext token refused"


# --- The HTTP transport over TLS: `heie serve --http` with --tls-cert serves HTTPS with the gRPC port's certificate.

@pytest.fixture(scope="module")
def https_server(pki: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``heie serve --http`` with TLS (a certificate for 127.0.0.1 only) and an API key, no client certificates:
    the host:port of its HTTPS API."""
    log = tmp_path_factory.mktemp("heie-https") / "serve.log"
    args = ["--addr", "127.0.0.1:0", "--http", "127.0.0.1:0", "--threads", "1", "--max-tokens", "4", "--max-tiles", "1",
            "--shutdown-grace", "1", "--tls-cert", str(pki / "server-ip.pem"), "--tls-key", str(pki / "server-ip.key"),
            "--api-key", KEY]
    with serving(args, log) as served:
        assert served.http_address
        assert "heie: HTTP API and page on https://" in log.read_text(errors="replace")
        yield served.http_address
        assert KEY not in log.read_text(errors="replace"), "the key is never logged"


def test_https_with_the_servers_ca_evaluates(pki: Path, https_server: str) -> None:
    with Client(f"https://{https_server}", timeout=60, token=KEY, ca_cert=pki / "ca.pem") as client:
        assert client.transport == "http" and client.tls
        assert client.health() is HealthStatus.SERVING and client.info().limits.max_batch >= 1
        pixels = (np.random.default_rng(6).random((24, 32, 3)) * 255).astype(np.uint8)
        result = client.evaluate(pixels, EvaluateOptions(max_tokens_per_section=2))
        assert result.ok and result.score is not None and result.summary
    with Client(f"https://{https_server}", timeout=60, ca_cert=pki / "ca.pem") as no_key:
        with pytest.raises(Unauthenticated):  # the server's 401, over TLS
            no_key.info()


def test_https_with_mutual_tls(pki: Path, secure_served: ServeProcess) -> None:
    """The server that requires client certificates wants them on its HTTPS port too."""
    address = f"https://{secure_served.http_address}"
    with _mtls(pki, address) as client:
        assert client.health() is HealthStatus.SERVING
        assert client.evaluate(np.zeros((16, 16, 3), np.uint8), EvaluateOptions(max_tokens_per_section=1)).ok
    with Client(address, timeout=10, token=KEY, ca_cert=pki / "ca.pem") as no_cert:
        with pytest.raises(Unavailable) as caught:
            no_cert.info()
    assert connection_failure(caught.value, True) is ConnectionFailure.TLS_HANDSHAKE, caught.value.message
    assert "client_cert" in caught.value.message, caught.value.message


def test_an_https_connection_failure_says_what_failed(pki: Path, https_server: str, heie_server, dead_address: str) -> None:  # type: ignore[no-untyped-def]
    """The HTTP transport's UNAVAILABLE for each way a TLS connection fails: connection_failure tells them apart as it
    does gRPC's, and the message names the address and what to change."""
    assert heie_server.http_address
    port = https_server.rsplit(":", 1)[1]
    cases = [
        (dict(), f"http://{https_server}", ConnectionFailure.SERVER_SPEAKS_TLS, "use an https:// address"),
        (dict(ca_cert=pki / "other-ca.pem"), f"https://{https_server}", ConnectionFailure.CERTIFICATE_NOT_TRUSTED,
         "the CA certificate that signed the server's --tls-cert"),
        (dict(), f"https://{https_server}", ConnectionFailure.CERTIFICATE_NOT_TRUSTED,  # the system's roots
         "the CA certificate that signed the server's --tls-cert"),
        (dict(ca_cert=pki / "ca.pem"), f"https://localhost:{port}", ConnectionFailure.CERTIFICATE_NAME_MISMATCH,
         "that the server's certificate lists"),
        (dict(ca_cert=pki / "ca.pem"), f"https://{heie_server.http_address}", ConnectionFailure.SERVER_SPEAKS_PLAINTEXT,
         "use an http:// address"),
        (dict(ca_cert=pki / "ca.pem"), f"https://{dead_address}", ConnectionFailure.NO_SERVER, "is `heie serve --http"),
        (dict(), f"http://{dead_address}", ConnectionFailure.NO_SERVER, "is `heie serve --http"),
    ]
    for options, address, expected, says in cases:
        with Client(address, timeout=10, **options) as client:  # type: ignore[arg-type]
            for call in (client.info, lambda: client.evaluate(np.zeros((8, 8, 3), np.uint8))):
                with pytest.raises(Unavailable) as caught:
                    call()
                assert connection_failure(caught.value, client.tls) is expected, (address, options, caught.value.message)
                message = caught.value.message
                assert address.split("://")[1] in message and says in message, (address, message)
