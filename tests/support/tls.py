"""Certificates made by the tests with the openssl command line, and small TLS clients.

One private CA signs two server certificates (serials 1001 and 1002, for rotation) and a
client certificate (mutual TLS); a key of another pair and a file that is not PEM make
the bad cases. All of it lives in a temporary folder of the test session.
"""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
from dataclasses import dataclass
from pathlib import Path

SERVER_EXT = "subjectAltName=IP:127.0.0.1,DNS:localhost\n"


@dataclass(frozen=True)
class PKI:
    folder: Path
    ca: Path  # the CA certificate clients trust
    cert: Path  # server certificate, serial 1001
    key: Path
    cert2: Path  # another server certificate of the same name, serial 1002
    key2: Path
    client_cert: Path  # signed by the CA, for --cert-reqs 2
    client_key: Path
    not_pem: Path

    def client_context(self, *, with_client_cert: bool = False) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.ca))
        if with_client_cert:
            context.load_cert_chain(str(self.client_cert), str(self.client_key))
        return context

    def use(self, which: int, folder: Path) -> tuple[Path, Path]:
        """Copy server pair 1 or 2 to folder/cert.pem and folder/key.pem (what a deploy
        that rotates certificates in place does); returns the two paths."""
        cert, key = (self.cert, self.key) if which == 1 else (self.cert2, self.key2)
        shutil.copyfile(cert, folder / "cert.pem")
        shutil.copyfile(key, folder / "key.pem")
        return folder / "cert.pem", folder / "key.pem"


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def _keypair_request(name: str, cn: str, cwd: Path) -> None:
    _openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={cn}", cwd=cwd)


def _sign(name: str, serial: int, cwd: Path, ext: str | None) -> None:
    args = ["x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-set_serial", str(serial), "-days", "2", "-out", f"{name}.pem"]
    if ext:
        (cwd / f"{name}.ext").write_text(ext)
        args += ["-extfile", f"{name}.ext"]
    _openssl(*args, cwd=cwd)


def make_pki(folder: Path) -> PKI:
    _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
             "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
             "-subj", "/CN=polycorn test CA", cwd=folder)
    for name, serial, cn, ext in (("server1", 1001, "localhost", SERVER_EXT),
                                  ("server2", 1002, "localhost", SERVER_EXT),
                                  ("client", 2001, "test client", None)):
        _keypair_request(name, cn, folder)
        _sign(name, serial, folder, ext)
    (folder / "not-pem.pem").write_text("this is not a certificate\n")
    return PKI(folder, folder / "ca.pem", folder / "server1.pem", folder / "server1.key",
               folder / "server2.pem", folder / "server2.key", folder / "client.pem",
               folder / "client.key", folder / "not-pem.pem")


def serial_of(port: int, context: ssl.SSLContext) -> int:
    """The serial number of the certificate the server presents now."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, \
            context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
        return int(tls.getpeercert()["serialNumber"], 16)


def tls_exchange(port: int, context: ssl.SSLContext, data: bytes, *, prefix: bytes = b"",
                 timeout: float = 5.0) -> bytes:
    """One connection: `prefix` (a PROXY header) and the ClientHello in the same send,
    then `data` over TLS; everything read until the server closes.

    ssl.MemoryBIO so that the header and the handshake's first bytes reach the server in
    one segment, as from HAProxy: the server must not lose what it read with the header.
    """
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_hostname="127.0.0.1")
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        first = True
        while True:
            try:
                tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                sock.sendall((prefix if first else b"") + outgoing.read())
                first = False
                chunk = sock.recv(65536)
                if not chunk:
                    raise ConnectionError("closed during the handshake") from None
                incoming.write(chunk)
        tls.write(data)
        sock.sendall(outgoing.read())
        out = b""
        while True:
            try:
                data = tls.read(65536)
                if not data:  # the server's close_notify
                    break
                out += data
                continue
            except ssl.SSLWantReadError:
                pass
            except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                break
            try:
                chunk = sock.recv(65536)
            except (TimeoutError, ConnectionResetError):
                break
            if not chunk:
                break
            incoming.write(chunk)
            if outgoing.pending:  # TLS 1.3 may answer session tickets: nothing to send back
                sock.sendall(outgoing.read())
    return out


class HalfClosingTLS:
    """A TLS client socket (sendall, recv, shutdown, close) whose shutdown(SHUT_WR) is TLS's
    own half-close: close_notify, then the TCP FIN, while the answer can still be read.

    ssl.SSLSocket cannot do that (its shutdown() drops the TLS session), and a bare TCP FIN
    under TLS is a truncation that OpenSSL 3 treats as a broken session, so the corpus's
    "the client ended its request early" cases need this to mean the same over TLS.
    """

    def __init__(self, port: int, context: ssl.SSLContext, timeout: float = 10.0) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.incoming, self.outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.tls = context.wrap_bio(self.incoming, self.outgoing, server_hostname="127.0.0.1")
        while True:
            try:
                self.tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                self._flush()
                if not self._pull():
                    raise ConnectionError("closed during the handshake") from None
        self._flush()

    def _flush(self) -> None:
        if self.outgoing.pending:
            self.sock.sendall(self.outgoing.read())

    def _pull(self) -> bool:
        chunk = self.sock.recv(65536)
        if not chunk:
            self.incoming.write_eof()
            return False
        self.incoming.write(chunk)
        return True

    def sendall(self, data: bytes) -> None:
        self.tls.write(data)
        self._flush()

    def recv(self, size: int) -> bytes:
        while True:
            try:
                return self.tls.read(size)
            except ssl.SSLWantReadError:
                if not self._pull():
                    return b""
            except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                return b""

    def shutdown(self, how: int) -> None:
        try:
            self.tls.unwrap()  # writes our close_notify; the peer's is not awaited
        except ssl.SSLWantReadError:
            pass
        self._flush()
        self.sock.shutdown(how)

    def settimeout(self, timeout: float | None) -> None:
        self.sock.settimeout(timeout)

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> HalfClosingTLS:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
