"""Socket concerns both sides share: what an ``OSError`` means in words, and a quiet shutdown.

Shared by the server (reader and writer threads) and the client (network and sender
threads); every function here is safe to call from any thread.  TLS (memory-BIO
wrappers, certificate pins) belongs here too when it comes.
"""

from __future__ import annotations

import socket


def os_reason(exc: OSError) -> str:
    """Why a connection ended, in the words IRC servers and clients use for it."""
    if isinstance(exc, ConnectionResetError):
        return "Connection reset by peer"
    if isinstance(exc, TimeoutError):
        return "Connection timed out"
    return f"Connection error: {exc.strerror or exc}"


def shutdown(sock: socket.socket) -> None:
    """Shut both directions down, ignoring a socket that is already closed or reset.

    A ``shutdown`` from another thread is how a blocked ``recv`` is woken: it returns b"".
    """
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
