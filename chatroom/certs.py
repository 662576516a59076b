"""The server's TLS certificate: load it into a context, describe it, make a self-signed one.

Called by the main thread only: at start, and again on SIGHUP (a reload builds a new
context and swaps it in whole, so a connection being accepted sees the old one or the new
one, never half of each).  The private key is read by OpenSSL and never logged.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import shutil
import ssl
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from chatroom.transport import fingerprint

log = logging.getLogger(__name__)

EXPIRY_WARNING_DAYS = 14
SELF_SIGNED_DAYS = 825  # the longest validity Apple's and Chrome's stores accept for a leaf


_SHORT = {"commonName": "CN", "organizationName": "O", "organizationalUnitName": "OU",
          "countryName": "C", "localityName": "L", "stateOrProvinceName": "ST"}


class CertificateError(Exception):
    """A certificate or key that can't be used, in words an operator can act on."""


@dataclass(frozen=True)
class CertificateInfo:
    subject: str
    not_after: float  # seconds since the epoch
    fingerprint: str  # SHA-256, "AB:CD:..."

    def days_left(self, now: float | None = None) -> float:
        return (self.not_after - (time.time() if now is None else now)) / 86400


def load_context(cert: str, key: str) -> tuple[ssl.SSLContext, CertificateInfo]:
    """A server context (TLS 1.2 or newer, the ssl module's secure defaults) for the pair."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    def no_passphrase() -> bytes:
        # Without this OpenSSL would ask on the terminal, blocking the accepting thread.
        raise CertificateError(f"{key} is encrypted with a passphrase; the server needs "
                               f"it unencrypted (openssl pkey -in {key} -out plain.key)")

    try:
        ctx.load_cert_chain(cert, key, password=no_passphrase)
    except CertificateError:
        raise
    except FileNotFoundError as exc:
        raise CertificateError(f"cannot read {exc.filename}: no such file") from None
    except PermissionError as exc:
        raise CertificateError(f"cannot read {exc.filename}: permission denied") from None
    except ssl.SSLError as exc:
        raise CertificateError(f"{cert} and {key} are not a usable certificate and key "
                               f"({exc.reason or exc})") from None
    return ctx, describe(cert)


def describe(cert: str) -> CertificateInfo:
    """Subject, expiry and fingerprint of the first certificate in the PEM file ``cert``."""
    pem = Path(cert).read_text(encoding="ascii", errors="replace")
    try:
        der = ssl.PEM_cert_to_DER_cert(pem[:pem.index("-----END CERTIFICATE-----") + 25])
    except ValueError:
        raise CertificateError(f"{cert} holds no PEM certificate") from None
    # The ssl module decodes certificates only for a live peer; its test helper reads a
    # file.  If a future Python drops it, the fingerprint (which is what pins use) stays.
    decode = getattr(ssl._ssl, "_test_decode_cert", None)  # type: ignore[attr-defined]
    subject, not_after = "?", float("inf")
    if decode is not None:
        fields = decode(cert)
        subject = ", ".join(f"{_SHORT.get(k, k)}={v}"
                            for rdn in fields.get("subject", ()) for k, v in rdn)
        if "notAfter" in fields:
            not_after = ssl.cert_time_to_seconds(fields["notAfter"])
    return CertificateInfo(subject or "?", not_after, fingerprint(der))


def log_certificate(info: CertificateInfo, what: str = "using") -> None:
    days = info.days_left()
    known = info.not_after != float("inf")
    expiry = time.strftime("%Y-%m-%d", time.gmtime(info.not_after)) if known else "unknown"
    log.info("TLS: %s certificate %s, expires %s, SHA-256 fingerprint %s", what,
             info.subject, expiry, info.fingerprint)
    if days < 0:
        log.warning("TLS: the certificate EXPIRED on %s: clients will refuse it; renew it "
                    "and send SIGHUP", expiry)
    elif days < EXPIRY_WARNING_DAYS:
        log.warning("TLS: the certificate expires in %d days (%s): renew it and send SIGHUP",
                    int(days), expiry)


def ensure_self_signed(data_dir: str, names: list[str]) -> tuple[str, str]:
    """The self-signed pair in ``data_dir``/tls, made with ``openssl`` if not there yet.

    ``names`` are what the certificate is for (server name, host); they go in its
    subjectAltName, IP addresses as IPs.  The key is created readable by its owner only.
    """
    folder = Path(data_dir) / "tls"
    cert, key = folder / "self-signed.crt", folder / "self-signed.key"
    if cert.exists() and key.exists():
        return str(cert), str(key)
    openssl = shutil.which("openssl")
    if openssl is None:
        raise CertificateError(
            "--tls-self-signed needs the openssl command to make a certificate, and it is "
            "not installed: install it (Debian/Ubuntu: apt install openssl; Fedora: dnf "
            "install openssl) or give your own --tls-cert and --tls-key")
    folder.mkdir(parents=True, exist_ok=True)
    sans = []
    for n in dict.fromkeys(names):
        sans.append(f"IP:{n}" if _is_ip(n) else f"DNS:{n}")
    tmp_cert, tmp_key = folder / ".new.crt", folder / ".new.key"
    old_umask = os.umask(0o077)
    try:
        subprocess.run(
            [openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt",
             "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", str(tmp_key),
             "-out", str(tmp_cert), "-days", str(SELF_SIGNED_DAYS),
             "-subj", f"/CN={names[0]}", "-addext", "subjectAltName=" + ",".join(sans)],
            check=True, capture_output=True, timeout=60)
    except (OSError, subprocess.SubprocessError) as exc:
        detail = getattr(exc, "stderr", b"") or b""
        raise CertificateError(f"openssl could not make a certificate: "
                               f"{detail.decode(errors='replace').strip() or exc}") from None
    finally:
        os.umask(old_umask)
    # The key first: a crash between the two renames leaves no certificate, so the next
    # start makes a fresh pair instead of pairing a new key with an old certificate.
    os.replace(tmp_key, key)
    os.replace(tmp_cert, cert)
    log.info("TLS: made a self-signed certificate in %s", folder)
    return str(cert), str(key)


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True
