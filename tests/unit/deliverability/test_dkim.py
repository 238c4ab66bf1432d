"""DKIM keys, DNS records and signing, verified with dkimpy against an in-memory TXT record."""

from __future__ import annotations

import base64
import os
import re
import shutil
import stat
import subprocess
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import dkim
import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from dkim.util import parse_tag_value

from postroom.deliverability.dkim import DkimKey, DkimSigner, generate_key
from postroom.errors import ConfigurationError, InvalidMessageError
from postroom.messages import RenderedEmail
from postroom.providers.mime import build_mime

DOMAIN = "example.com"


@pytest.fixture(scope="module")
def rsa_key() -> DkimKey:
    # Module scope: a 2048-bit key takes ~50-100 ms to generate.
    return generate_key("sel2024")


@pytest.fixture(scope="module")
def ed_key() -> DkimKey:
    return generate_key("ed2024", algorithm="ed25519")


def make_email(**headers: str) -> RenderedEmail:
    return RenderedEmail(
        send_id="S1",
        message_id="<S1@postroom.example>",
        sender="Postroom <noreply@example.com>",
        recipient="user@example.org",
        recipient_name="Zoë Doe",
        subject="Your weekly digest",
        html="<p>Hello Zoë</p>\n",
        text="Hello Zoë\n\nSee you next week.\n",
        date="Mon, 01 Jan 2024 12:00:00 +0000",
        headers=headers,
    )


MARKETING_HEADERS = {
    "Reply-To": "Support <support@example.com>",
    "List-Unsubscribe": "<https://example.com/unsubscribe/tok123>",
    "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
    "X-Campaign": "c-42",
}


def dnsfunc_for(key: DkimKey, domain: str = DOMAIN) -> Callable[..., bytes | None]:
    record = key.dns_value().encode()

    def dnsfunc(name: bytes, timeout: float = 5) -> bytes | None:
        # dkimpy asks for the fully qualified name, with the trailing dot.
        return record if name.decode() == key.dns_name(domain) + "." else None

    return dnsfunc


def signature_tags(message: bytes) -> dict[bytes, bytes]:
    head = message.split(b"\r\n\r\n", 1)[0]
    match = re.match(rb"DKIM-Signature:(.*?)\r\n(?=\S)", head, re.DOTALL)
    assert match, head
    unfolded = re.sub(rb"\r\n[ \t]", b" ", match.group(1))
    tags: dict[bytes, bytes] = parse_tag_value(unfolded)
    return tags


def h_tag(message: bytes) -> list[str]:
    return [name.strip().decode() for name in signature_tags(message)[b"h"].split(b":")]


# --- keys and DNS records ---------------------------------------------------------------------


def test_rsa_key_and_record(rsa_key: DkimKey) -> None:
    assert rsa_key.algorithm == "rsa"
    assert rsa_key.dns_name(DOMAIN) == "sel2024._domainkey.example.com"
    assert rsa_key.dns_name(DOMAIN + ".") == "sel2024._domainkey.example.com"
    value = rsa_key.dns_value()
    assert value.startswith("v=DKIM1; k=rsa; p=")
    tags = parse_tag_value(value.encode())
    public = serialization.load_der_public_key(base64.b64decode(tags[b"p"], validate=True))
    assert isinstance(public, rsa.RSAPublicKey)
    assert public.key_size == 2048
    private = serialization.load_pem_private_key(rsa_key.private_pem, password=None)
    assert isinstance(private, rsa.RSAPrivateKey)
    assert private.public_key().public_numbers() == public.public_numbers()


def test_rsa_key_size_is_configurable() -> None:
    key = generate_key("big", bits=3072)
    public = serialization.load_der_public_key(
        base64.b64decode(parse_tag_value(key.dns_value().encode())[b"p"])
    )
    assert isinstance(public, rsa.RSAPublicKey) and public.key_size == 3072
    with pytest.raises(ValueError, match="at least 1024"):
        generate_key("small", bits=512)


def test_ed25519_key_and_record(ed_key: DkimKey) -> None:
    assert ed_key.algorithm == "ed25519"
    value = ed_key.dns_value()
    assert value.startswith("v=DKIM1; k=ed25519; p=")
    raw = base64.b64decode(parse_tag_value(value.encode())[b"p"], validate=True)
    assert len(raw) == 32  # RFC 8463 §4.2: the bare key, not a SubjectPublicKeyInfo
    private = serialization.load_pem_private_key(ed_key.private_pem, password=None)
    assert isinstance(private, ed25519.Ed25519PrivateKey)
    public = private.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    assert public == raw


def test_from_pem_rebuilds_the_record(rsa_key: DkimKey, ed_key: DkimKey) -> None:
    assert DkimKey.from_pem("sel2024", rsa_key.private_pem) == rsa_key
    assert DkimKey.from_pem("ed2024", ed_key.private_pem).dns_value() == ed_key.dns_value()


def test_unknown_algorithm_and_bad_selector() -> None:
    with pytest.raises(ValueError, match="rsa or ed25519"):
        generate_key("s", algorithm="dsa")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError):
        generate_key("bad selector")


def test_write_is_private_and_refuses_overwrite(tmp_path: Path, rsa_key: DkimKey) -> None:
    path = tmp_path / "dkim.pem"
    rsa_key.write(path)
    assert path.read_bytes() == rsa_key.private_pem
    assert stat.S_IMODE(path.stat().st_mode) == 0o600

    other = generate_key("sel2024", bits=1024)
    with pytest.raises(FileExistsError, match="refusing to overwrite"):
        other.write(path)
    assert path.read_bytes() == rsa_key.private_pem


def test_write_overwrite_when_asked(tmp_path: Path, rsa_key: DkimKey) -> None:
    path = tmp_path / "dkim.pem"
    path.write_bytes(b"old")
    path.chmod(0o644)
    rsa_key.write(path, overwrite=True)
    assert path.read_bytes() == rsa_key.private_pem
    # A replaced file must not inherit the old, wider mode.
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sorted(os.listdir(tmp_path)) == ["dkim.pem"]  # no temporary file left behind


def test_write_ignores_a_permissive_umask(tmp_path: Path, ed_key: DkimKey) -> None:
    old = os.umask(0)
    try:
        ed_key.write(tmp_path / "k.pem")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "k.pem").stat().st_mode) == 0o600


# --- signer construction ----------------------------------------------------------------------


def one_line_error(excinfo: pytest.ExceptionInfo[ConfigurationError], setting: str) -> None:
    message = str(excinfo.value)
    assert message.startswith(setting + ":"), message
    assert "\n" not in message


def test_signer_rejects_a_non_key(rsa_key: DkimKey) -> None:
    with pytest.raises(ConfigurationError) as excinfo:
        DkimSigner("s", DOMAIN, b"-----BEGIN PRIVATE KEY-----\nnope\n-----END PRIVATE KEY-----\n")
    one_line_error(excinfo, "POSTROOM_DKIM_PRIVATE_KEY_FILE")
    public_pem = serialization.load_pem_private_key(rsa_key.private_pem, None).public_key()
    pem = public_pem.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    with pytest.raises(ConfigurationError) as excinfo:
        DkimSigner("s", DOMAIN, pem)
    one_line_error(excinfo, "POSTROOM_DKIM_PRIVATE_KEY_FILE")


def test_signer_rejects_encrypted_and_unsupported_keys(rsa_key: DkimKey) -> None:
    private = serialization.load_pem_private_key(rsa_key.private_pem, None)
    encrypted = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"pw"),
    )
    with pytest.raises(ConfigurationError) as excinfo:
        DkimSigner("s", DOMAIN, encrypted)
    one_line_error(excinfo, "POSTROOM_DKIM_PRIVATE_KEY_FILE")
    ec_pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    with pytest.raises(ConfigurationError, match="RSA and Ed25519") as excinfo:
        DkimSigner("s", DOMAIN, ec_pem)
    one_line_error(excinfo, "POSTROOM_DKIM_PRIVATE_KEY_FILE")


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl CLI not installed")
def test_signer_rejects_short_rsa_keys() -> None:
    # cryptography refuses to generate keys under 1024 bits, but happily loads them.
    pem = subprocess.run(
        ["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:512"],
        capture_output=True,
        check=True,
    ).stdout
    with pytest.raises(ConfigurationError, match="512 bits") as excinfo:
        DkimSigner("s", DOMAIN, pem)
    one_line_error(excinfo, "POSTROOM_DKIM_PRIVATE_KEY_FILE")


@pytest.mark.parametrize(
    "domain", ["", "localhost", "exa mple.com", "-bad.example.com", "a..b", "x" * 64 + ".com"]
)
def test_signer_rejects_bad_domains(rsa_key: DkimKey, domain: str) -> None:
    with pytest.raises(ConfigurationError) as excinfo:
        DkimSigner("s", domain, rsa_key.private_pem)
    one_line_error(excinfo, "POSTROOM_DKIM_DOMAIN")


@pytest.mark.parametrize("selector", ["", "a b", "sel_1", "-x"])
def test_signer_rejects_bad_selectors(rsa_key: DkimKey, selector: str) -> None:
    with pytest.raises(ConfigurationError) as excinfo:
        DkimSigner(selector, DOMAIN, rsa_key.private_pem)
    one_line_error(excinfo, "POSTROOM_DKIM_SELECTOR")


def test_signer_normalises_names(rsa_key: DkimKey) -> None:
    signer = DkimSigner("Sel2024", "Example.COM.", rsa_key.private_pem)
    assert (signer.selector, signer.domain) == ("sel2024", "example.com")
    assert DkimSigner("s", "bücher.example", rsa_key.private_pem).domain == (
        "xn--bcher-kva.example"
    )


def test_signer_from_file(tmp_path: Path, rsa_key: DkimKey) -> None:
    with pytest.raises(ConfigurationError) as excinfo:
        DkimSigner.from_file("s", DOMAIN, tmp_path / "missing.pem")
    one_line_error(excinfo, "POSTROOM_DKIM_PRIVATE_KEY_FILE")
    rsa_key.write(tmp_path / "k.pem")
    signer = DkimSigner.from_file("sel2024", DOMAIN, tmp_path / "k.pem")
    assert signer.key.dns_value() == rsa_key.dns_value()


# --- signing ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def rsa_signer(rsa_key: DkimKey) -> DkimSigner:
    return DkimSigner(rsa_key.selector, DOMAIN, rsa_key.private_pem)


def test_signature_tags(rsa_signer: DkimSigner) -> None:
    signed = rsa_signer.sign(build_mime(make_email()), timestamp=1_700_000_000)
    assert signed.startswith(b"DKIM-Signature: ")
    tags = signature_tags(signed)
    assert tags[b"v"] == b"1"
    assert tags[b"a"] == b"rsa-sha256"
    assert tags[b"c"] == b"relaxed/relaxed"
    assert tags[b"d"] == b"example.com"
    assert tags[b"s"] == b"sel2024"
    assert tags[b"t"] == b"1700000000"
    # From is signed once more than it occurs, so a second From added in transit breaks it.
    assert h_tag(signed) == [
        "from",
        "to",
        "subject",
        "date",
        "message-id",
        "mime-version",
        "content-type",
        "from",
    ]
    head = signed.split(b"\r\n\r\n", 1)[0]
    assert all(len(line) <= 78 for line in head.split(b"\r\n"))


def test_marketing_headers_are_signed(rsa_signer: DkimSigner, rsa_key: DkimKey) -> None:
    signed = rsa_signer.sign(build_mime(make_email(**MARKETING_HEADERS)))
    names = h_tag(signed)
    # RFC 8058 §4: both one-click fields must be covered by the signature.
    assert "list-unsubscribe" in names and "list-unsubscribe-post" in names
    assert "reply-to" in names
    assert "x-campaign" not in names  # not ours to vouch for
    assert dkim.verify(signed, dnsfunc=dnsfunc_for(rsa_key))


def test_only_present_headers_are_listed(rsa_signer: DkimSigner) -> None:
    message = b"From: a@example.com\r\nSubject: hi\r\n\r\nbody\r\n"
    assert h_tag(rsa_signer.sign(message)) == ["from", "subject", "from"]
    # Content-Transfer-Encoding at the top level (a single-part message) is signed too.
    single = b"From: a@example.com\r\nContent-Transfer-Encoding: 7bit\r\n\r\nx\r\n"
    assert "content-transfer-encoding" in h_tag(rsa_signer.sign(single))


def test_signed_mail_verifies(rsa_signer: DkimSigner, rsa_key: DkimKey) -> None:
    message = build_mime(make_email(**MARKETING_HEADERS))
    signed = rsa_signer.sign(message)
    assert signed.endswith(message)  # the header is prepended, nothing else changes
    assert dkim.verify(signed, dnsfunc=dnsfunc_for(rsa_key))


def test_wrong_dns_key_fails(rsa_signer: DkimSigner) -> None:
    signed = rsa_signer.sign(build_mime(make_email()))
    other = generate_key("sel2024", bits=1024)
    assert not dkim.verify(signed, dnsfunc=dnsfunc_for(other))


def flip_one_byte(data: bytes, old: bytes, new: bytes) -> bytes:
    assert len(old) == len(new) and data.count(old) == 1, old
    return data.replace(old, new)


def test_one_byte_change_of_the_body_fails(rsa_signer: DkimSigner, rsa_key: DkimKey) -> None:
    signed = rsa_signer.sign(build_mime(make_email()))
    tampered = flip_one_byte(signed, b"See you next week.", b"See you next weak.")
    assert not dkim.verify(tampered, dnsfunc=dnsfunc_for(rsa_key))


@pytest.mark.parametrize(
    ("old", "new"),
    [
        (b"Subject: Your weekly digest", b"Subject: Your weekly digesT"),
        (b"List-Unsubscribe: <https://example.com/", b"List-Unsubscribe: <https://examplf.com/"),
        (b"List-Unsubscribe=One-Click", b"List-Unsubscribe=One-Clicc"),
    ],
)
def test_one_byte_change_of_a_signed_header_fails(
    rsa_signer: DkimSigner, rsa_key: DkimKey, old: bytes, new: bytes
) -> None:
    signed = rsa_signer.sign(build_mime(make_email(**MARKETING_HEADERS)))
    assert not dkim.verify(flip_one_byte(signed, old, new), dnsfunc=dnsfunc_for(rsa_key))


def test_relaxed_canonicalization_tolerates_refolding(
    rsa_signer: DkimSigner, rsa_key: DkimKey
) -> None:
    signed = rsa_signer.sign(build_mime(make_email(**MARKETING_HEADERS)))
    dnsfunc = dnsfunc_for(rsa_key)
    # What relaying MTAs do: re-space and re-fold headers, add trace fields, pad line ends.
    refolded = signed.replace(b"Subject: Your weekly", b"Subject:   Your\r\n\tweekly")
    assert dkim.verify(refolded, dnsfunc=dnsfunc)
    assert dkim.verify(b"Received: from relay\r\n" + signed, dnsfunc=dnsfunc)
    assert dkim.verify(signed.replace(b"X-Campaign: c-42", b"X-Campaign: c-43"), dnsfunc=dnsfunc)
    # ...but a second From above the signed one is caught by oversigning.
    assert not dkim.verify(b"From: evil@example.net\r\n" + signed, dnsfunc=dnsfunc)


def test_lf_message_keeps_lf(rsa_signer: DkimSigner, rsa_key: DkimKey) -> None:
    message = b"From: a@example.com\nSubject: hi\n\nbody\n"
    signed = rsa_signer.sign(message)
    assert b"\r" not in signed
    assert dkim.verify(signed, dnsfunc=dnsfunc_for(rsa_key))


def test_unparseable_message_is_invalid(rsa_signer: DkimSigner) -> None:
    with pytest.raises(InvalidMessageError, match="DKIM"):
        rsa_signer.sign(b"not a header line\r\n\r\nbody")


def nacl_shim() -> types.SimpleNamespace:
    """Just enough of PyNaCl, on top of cryptography, for dkimpy to verify Ed25519.

    dkimpy needs PyNaCl for Ed25519 and the project does not depend on it; the shim is
    verification-only, so the check of our signer still runs dkimpy's own hashing.
    """

    class BadSignatureError(Exception):
        pass

    class VerifyKey:
        def __init__(self, encoded: bytes, encoder: Any = None) -> None:
            self._key = ed25519.Ed25519PublicKey.from_public_bytes(base64.b64decode(encoded))

        def verify(self, data: bytes, signature: bytes) -> bytes:
            try:
                self._key.verify(signature, data)
            except InvalidSignature:
                raise BadSignatureError from None
            return data

    return types.SimpleNamespace(
        signing=types.SimpleNamespace(VerifyKey=VerifyKey),
        encoding=types.SimpleNamespace(Base64Encoder=object),
        exceptions=types.SimpleNamespace(
            BadSignatureError=BadSignatureError, ValueError=ValueError
        ),
    )


def test_ed25519_signature_verifies(monkeypatch: pytest.MonkeyPatch, ed_key: DkimKey) -> None:
    if not hasattr(dkim, "nacl"):
        monkeypatch.setattr(dkim, "nacl", nacl_shim(), raising=False)
    signer = DkimSigner(ed_key.selector, DOMAIN, ed_key.private_pem)
    signed = signer.sign(build_mime(make_email(**MARKETING_HEADERS)))
    assert signature_tags(signed)[b"a"] == b"ed25519-sha256"
    dnsfunc = dnsfunc_for(ed_key)
    assert dkim.verify(signed, dnsfunc=dnsfunc)
    assert not dkim.verify(
        flip_one_byte(signed, b"See you next week.", b"See you next weak."), dnsfunc=dnsfunc
    )
    assert not dkim.verify(
        flip_one_byte(signed, b"Subject: Your weekly digest", b"Subject: Your weekly digesT"),
        dnsfunc=dnsfunc,
    )


def test_private_key_stays_out_of_repr(rsa_key: DkimKey, rsa_signer: DkimSigner) -> None:
    assert b"PRIVATE" in rsa_key.private_pem
    assert "PRIVATE" not in repr(rsa_key)
    assert "PRIVATE" not in repr(rsa_signer.key)
