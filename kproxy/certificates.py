"""The serving certificate, reloaded when cert-manager or the kubelet replaces it.

Certificates in Kubernetes are short-lived and rotated from outside: cert-manager
renews a Secret, and the kubelet swaps the Secret volume's ``..data`` symlink to a new
directory; other setups replace the files in place. ``ServingCertificate`` notices
either by polling ``stat`` of both files (following symlinks, so a swapped ``..data``
shows as a new inode) and serves the new pair to new handshakes, without a restart and
without touching connections already established.

How the swap is made safe: each pair is loaded into a fresh ``SSLContext``, which
fails if the key does not match the certificate, and only a pair that loaded is put in
use. The context handed to the server never changes; its SNI callback (called for
every handshake, with or without a server name) points the handshake at the context in
use. Loading again into one shared context would be simpler, but OpenSSL installs the
certificate before it checks the key, so a half-written pair (new certificate, old
key) would leave that context unable to complete any handshake until the next change.
A pair that does not load keeps the previous one in use and logs a WARNING; it is
retried when either file changes again.
"""

from __future__ import annotations

import asyncio
import logging
import os
import ssl
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

from cryptography import x509

from kproxy.errors import ConfigError

logger = logging.getLogger(__name__)

POLL_INTERVAL: Final = 10.0
# TLS 1.2 suites with forward secrecy and AEAD only; TLS 1.3 suites are all sound.
TLS12_CIPHERS: Final = "ECDHE+AESGCM:ECDHE+CHACHA20"

Fingerprint = tuple[tuple[int, int, int, int], ...]


@dataclass(frozen=True, slots=True)
class LoadedPair:
    """A certificate and key that loaded together, and facts to report about them."""

    context: ssl.SSLContext
    serial: int
    not_after: float
    fingerprint: Fingerprint


class ServingCertificate:
    """An ``SSLContext`` for the server whose certificate follows the files.

    Raises ``ConfigError`` when the files cannot be loaded at start. ``start`` begins
    polling in a named background task; ``close`` ends it.
    """

    def __init__(
        self,
        cert_file: Path,
        key_file: Path,
        *,
        min_version: ssl.TLSVersion = ssl.TLSVersion.TLSv1_2,
        poll_interval: float = POLL_INTERVAL,
    ) -> None:
        self.cert_file = Path(cert_file)
        self.key_file = Path(key_file)
        self.min_version = min_version
        self.poll_interval = poll_interval
        try:
            self.current = self._load()
        except (OSError, ssl.SSLError, ValueError) as exc:
            raise ConfigError.single(
                str(self.cert_file),
                f"cannot load the serving certificate and key: {_describe(exc)}",
                field="serving.tls",
            ) from exc
        self._failed: Fingerprint | None = None
        self._task: asyncio.Task[None] | None = None
        self.context = server_context(min_version)
        self.context.load_cert_chain(self.cert_file, self.key_file, _no_password)
        self.context.sni_callback = self._select

    @property
    def not_after(self) -> float:
        """When the certificate in use expires, in seconds since the epoch."""
        return self.current.not_after

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(
                self._poll(), name="kproxy-serving-certificate-reload"
            )

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is None:
            return
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            if not task.cancelled():
                raise

    def reload_if_changed(self) -> bool:
        """Put a changed pair in use; return whether the pair in use changed."""
        fingerprint = self._fingerprint()
        if fingerprint in (self.current.fingerprint, self._failed):
            return False
        try:
            loaded = self._load(fingerprint)
        except (OSError, ssl.SSLError, ValueError) as exc:
            self._failed = fingerprint
            logger.warning(
                "serving certificate %s was not reloaded, the previous one stays in "
                "use: %s",
                self.cert_file,
                _describe(exc),
            )
            return False
        self.current = loaded
        self._failed = None
        logger.info(
            "serving certificate reloaded from %s: serial %x, expires %s",
            self.cert_file,
            loaded.serial,
            _utc(loaded.not_after),
        )
        return True

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self.poll_interval)
            try:
                self.reload_if_changed()
            except Exception:
                logger.exception("checking the serving certificate failed")

    def _select(
        self, connection: ssl.SSLObject, server_name: str | None, _: ssl.SSLContext
    ) -> None:
        connection.context = self.current.context

    def _fingerprint(self) -> Fingerprint:
        try:
            stats = [os.stat(path) for path in (self.cert_file, self.key_file)]
        except OSError:
            # Gone for a moment during a swap: compare as changed and retry later.
            return ()
        return tuple((s.st_dev, s.st_ino, s.st_size, s.st_mtime_ns) for s in stats)

    def _load(self, fingerprint: Fingerprint | None = None) -> LoadedPair:
        # The fingerprint is taken before reading: if the files change while they
        # are read, the next poll sees a new fingerprint and loads them again.
        fingerprint = self._fingerprint() if fingerprint is None else fingerprint
        certificate = x509.load_pem_x509_certificate(self.cert_file.read_bytes())
        context = server_context(self.min_version)
        context.load_cert_chain(self.cert_file, self.key_file, _no_password)
        return LoadedPair(
            context=context,
            serial=certificate.serial_number,
            not_after=certificate.not_valid_after_utc.timestamp(),
            fingerprint=fingerprint,
        )


def server_context(min_version: ssl.TLSVersion) -> ssl.SSLContext:
    """A server context with kproxy's TLS settings and no certificate yet."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = max(min_version, ssl.TLSVersion.TLSv1_2)
    context.set_ciphers(TLS12_CIPHERS)
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE
    context.options |= ssl.OP_NO_RENEGOTIATION
    # kproxy speaks HTTP/1.1 only; saying so lets clients skip trying HTTP/2.
    context.set_alpn_protocols(["http/1.1"])
    return context


def _no_password() -> bytes:
    # Without a callback OpenSSL would prompt on the terminal for an encrypted key.
    raise ValueError("the private key is encrypted; kproxy needs an unencrypted key")


def _describe(exc: Exception) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.filename or ''}: {exc.strerror}".lstrip(": ")
    return str(exc) or type(exc).__name__


def _utc(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="seconds")
