"""Entra ID credentials through msal against a loopback identity provider over TLS.

The client assertions msal signs are taken off the wire, decoded and checked: their headers
(``x5t#S256``, ``x5c``), their claims, and their signature against the certificate.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

from kafkapipe.auth import credentials as credmod
from kafkapipe.auth.credentials import credential_from_config
from kafkapipe.config import CredentialConfig
from kafkapipe.errors import ConfigError
from tests.integration.fake_entra import FakeEntra, decode_jwt

STORAGE = "https://storage.azure.com/.default"
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


@pytest.fixture
def entra(tmp_path, monkeypatch) -> Iterator[FakeEntra]:
    server = FakeEntra(tmp_path / "entra-tls")
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(server.ca_path))
    yield server
    server.close()


def make_spn_certificate(path: Path, *, with_certificate: bool = True) -> x509.Certificate:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kafkapipe-spn")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=30))
        .sign(key, hashes.SHA256())
    )
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
    )
    if with_certificate:
        pem += cert.public_bytes(serialization.Encoding.PEM)
    path.write_bytes(pem)
    return cert


def b64url_bytes(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def x5c_der(entry: str) -> bytes:
    return base64.b64decode("".join(entry.split()))


def test_certificate_assertion_carries_sha256_thumbprint_and_certificate(entra, tmp_path):
    cert = make_spn_certificate(tmp_path / "spn.pem")
    config = CredentialConfig(
        kind="service_principal",
        tenant_id="tenant-a",
        client_id="app-a",
        certificate_file=str(tmp_path / "spn.pem"),
        authority_host=entra.url,
    )
    credential = credential_from_config(config, "storage.azure.credential")
    assert credential.get_token(STORAGE).token == "entra-token"

    (form,) = entra.posts()
    assert form["_path"] == "/tenant-a/oauth2/v2.0/token"
    assert form["grant_type"] == "client_credentials" and form["client_assertion_type"] == ASSERTION_TYPE
    assert "client_secret" not in form
    header, claims, signing_input, signature = decode_jwt(form["client_assertion"])
    der = cert.public_bytes(serialization.Encoding.DER)
    assert b64url_bytes(header["x5t#S256"]) == hashlib.sha256(der).digest()
    assert "x5t" not in header, "no SHA-1 thumbprint when the certificate gives a SHA-256 one"
    assert [x5c_der(e) for e in header["x5c"]] == [der]
    assert header["alg"] == "PS256"
    assert claims["aud"] == entra.token_endpoint("tenant-a")
    assert claims["iss"] == claims["sub"] == "app-a"
    # Signed by the key of that very certificate (raises InvalidSignature otherwise).
    cert.public_key().verify(
        signature,
        signing_input,
        padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=padding.PSS.DIGEST_LENGTH),
        hashes.SHA256(),
    )


def test_legacy_sha1_thumbprint_still_sends_the_certificate_when_present(entra, tmp_path):
    cert = make_spn_certificate(tmp_path / "spn.pem")
    sha1 = cert.fingerprint(hashes.SHA1()).hex().upper()
    config = CredentialConfig(
        kind="service_principal",
        tenant_id="tenant-b",
        client_id="app-b",
        certificate_file=str(tmp_path / "spn.pem"),
        certificate_thumbprint=":".join(sha1[i : i + 2] for i in range(0, len(sha1), 2)),
        authority_host=entra.url,
    )
    credential_from_config(config, "kafka.oauth.credential").get_token(STORAGE)
    header, _, _, _ = decode_jwt(entra.posts()[-1]["client_assertion"])
    assert b64url_bytes(header["x5t"]) == bytes.fromhex(sha1)
    assert [x5c_der(e) for e in header["x5c"]] == [cert.public_bytes(serialization.Encoding.DER)]


def test_key_only_file_with_thumbprint_sends_no_certificate(entra, tmp_path):
    cert = make_spn_certificate(tmp_path / "key-only.pem", with_certificate=False)
    config = CredentialConfig(
        kind="service_principal",
        tenant_id="tenant-c",
        client_id="app-c",
        certificate_file=str(tmp_path / "key-only.pem"),
        certificate_thumbprint=cert.fingerprint(hashes.SHA1()).hex(),
        authority_host=entra.url,
    )
    credential_from_config(config, "x").get_token(STORAGE)
    header, _, _, _ = decode_jwt(entra.posts()[-1]["client_assertion"])
    assert "x5c" not in header and "x5t" in header


def test_an_msal_too_old_for_sha256_thumbprints_is_refused_at_start(tmp_path, monkeypatch):
    make_spn_certificate(tmp_path / "spn.pem")
    monkeypatch.setattr(credmod, "msal_version", lambda: (1, 34))
    config = CredentialConfig(
        kind="service_principal", tenant_id="t", client_id="c", certificate_file=str(tmp_path / "spn.pem")
    )
    with pytest.raises(ConfigError, match=r"storage\.azure\.credential\.certificate_file: needs msal >= 1\.35"):
        credential_from_config(config, "storage.azure.credential")


def test_installed_msal_meets_the_floor():
    assert credmod.msal_version() >= credmod.MSAL_FOR_CERTIFICATES


# ------------------------------------------------------------------------ workload identity
@pytest.fixture
def aks_env(monkeypatch):
    for name in ("AZURE_TENANT_ID", "AZURE_CLIENT_ID", "AZURE_FEDERATED_TOKEN_FILE", "AZURE_AUTHORITY_HOST"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_workload_identity_sends_the_token_file_as_it_is_now(entra, tmp_path, aks_env):
    token_file = tmp_path / "azure-identity-token"
    token_file.write_text("eyJhbGciOiJSUzI1NiJ9.first-projection.sig\n")
    # What the AKS webhook injects into the pod.
    aks_env.setenv("AZURE_TENANT_ID", "tenant-aks")
    aks_env.setenv("AZURE_CLIENT_ID", "app-aks")
    aks_env.setenv("AZURE_FEDERATED_TOKEN_FILE", str(token_file))
    aks_env.setenv("AZURE_AUTHORITY_HOST", entra.url + "/")
    credential = credential_from_config(CredentialConfig(kind="workload_identity"), "kafka.oauth.credential")
    assert credential.get_token(STORAGE).token == "entra-token"

    first = entra.posts()[-1]
    assert first["_path"] == "/tenant-aks/oauth2/v2.0/token"
    assert first["client_id"] == "app-aks" and first["client_assertion_type"] == ASSERTION_TYPE
    assert first["client_assertion"] == "eyJhbGciOiJSUzI1NiJ9.first-projection.sig"
    assert "client_secret" not in first

    token_file.write_text("eyJhbGciOiJSUzI1NiJ9.rotated-projection.sig\n")  # kubelet rotates it
    credential.get_token("https://claims-events.servicebus.windows.net/.default")
    assert entra.posts()[-1]["client_assertion"] == "eyJhbGciOiJSUzI1NiJ9.rotated-projection.sig"


def test_workload_identity_configuration_wins_over_the_environment(entra, tmp_path, aks_env):
    token_file = tmp_path / "token"
    token_file.write_text("configured-assertion")
    aks_env.setenv("AZURE_TENANT_ID", "tenant-from-env")
    aks_env.setenv("AZURE_CLIENT_ID", "app-from-env")
    aks_env.setenv("AZURE_FEDERATED_TOKEN_FILE", str(tmp_path / "absent"))
    aks_env.setenv("AZURE_AUTHORITY_HOST", "https://login.microsoftonline.invalid")
    config = CredentialConfig(
        kind="workload_identity",
        tenant_id="tenant-cfg",
        client_id="app-cfg",
        federated_token_file=str(token_file),
        authority_host=entra.url,
    )
    credential_from_config(config, "storage.azure.credential").get_token(STORAGE)
    post = entra.posts()[-1]
    assert post["_path"] == "/tenant-cfg/oauth2/v2.0/token" and post["client_id"] == "app-cfg"
    assert post["client_assertion"] == "configured-assertion"


def test_workload_identity_token_file_vanishing_is_an_auth_error_naming_the_key(entra, tmp_path, aks_env):
    from kafkapipe.errors import AuthError

    token_file = tmp_path / "token"
    token_file.write_text("assertion")
    config = CredentialConfig(
        kind="workload_identity", tenant_id="t", client_id="c", federated_token_file=str(token_file),
        authority_host=entra.url,
    )  # fmt: skip
    credential = credential_from_config(config, "storage.azure.credential")
    token_file.unlink()
    with pytest.raises(AuthError, match=r"storage\.azure\.credential\.federated_token_file: file .* does not exist"):
        credential.get_token(STORAGE)
    assert entra.posts() == [], "nothing is sent without an assertion"
