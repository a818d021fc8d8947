"""Where a control plane listens, and its socket: a private Unix socket, or TCP (RELIABILITY F6).

``unix:PATH`` is created with mode 0600 (under a umask, so it is never open to others) inside a
directory only its owner can enter: created 0700 when missing, refused when it exists and is
open to others. A stale socket of a dead server is replaced; one a server still answers on is
refused. ``http://HOST:PORT`` binds TCP; ``serve`` accepts it only for an app with a token.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import socket
import stat
from typing import TYPE_CHECKING

import anyio

from ._errors import ConnectionLost

if TYPE_CHECKING:
    from anyio.abc import ByteStream

__all__ = ("Address", "bind_socket", "default_unix_path", "is_loopback", "open_stream", "parse_address")


class Address:
    """Where a control plane listens: ``unix:PATH`` or ``http://HOST:PORT``."""

    __slots__ = ("host", "path", "port")

    def __init__(self, *, path: str | None = None, host: str | None = None, port: int | None = None) -> None:
        self.path = path
        self.host = host
        self.port = port

    @property
    def is_unix(self) -> bool:
        """True for a Unix socket."""
        return self.path is not None

    def __str__(self) -> str:
        if self.path is not None:
            return f"unix:{self.path}"
        host = f"[{self.host}]" if self.host and ":" in self.host else self.host
        return f"http://{host}:{self.port}"


def parse_address(text: str) -> Address:
    """``unix:PATH`` or ``http://HOST:PORT`` (``PORT`` 0 picks a free port when serving).

    Raises:
        ValueError: anything else (the message says what is accepted).
    """
    if text.startswith("unix:") and len(text) > 5:
        return Address(path=text[5:])
    if text.startswith("http://"):
        rest = text[7:].rstrip("/")
        host, sep, port = rest.rpartition(":")
        host = host.strip("[]")
        if sep and host and port.isdigit() and int(port) < 65536:
            return Address(host=host, port=int(port))
    msg = f"address must be unix:PATH or http://HOST:PORT, got {text!r}"
    raise ValueError(msg)


async def open_stream(where: Address, address: str) -> ByteStream:
    """A byte stream to the server at ``where`` (``address`` is its text, for messages).

    Raises:
        ConnectionLost: the connection could not be made (the message says why).
    """
    try:
        if where.path is not None:
            return await anyio.connect_unix(where.path)
        assert where.host is not None
        assert where.port is not None
        return await anyio.connect_tcp(where.host, where.port)
    except OSError as exc:
        msg = f"{address}: cannot connect: {exc}"
        raise ConnectionLost(msg) from exc


def default_unix_path() -> str:
    """``$XDG_RUNTIME_DIR/tdvsm/control.sock``, else ``/tmp/tdvsm-<uid>/control.sock``."""
    runtime_dir = os.environ.get("XDG_RUNTIME_DIR")
    base = os.path.join(runtime_dir, "tdvsm") if runtime_dir else f"/tmp/tdvsm-{os.getuid()}"
    return os.path.join(base, "control.sock")


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback IP addresses."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _private_directory(directory: str) -> None:
    """Make ``directory`` (mode 0700) or check that only its owner can enter it."""
    with contextlib.suppress(FileExistsError):
        os.makedirs(directory, mode=0o700)
    info = os.stat(directory)
    if not stat.S_ISDIR(info.st_mode):
        msg = f"{directory} is not a directory"
        raise ValueError(msg)
    if info.st_uid != os.geteuid() or info.st_mode & 0o077:
        msg = (
            f"{directory} is open to other users (mode {stat.S_IMODE(info.st_mode):04o}, owner uid "
            f"{info.st_uid}): the control socket needs a directory only you can enter (mode 0700)"
        )
        raise ValueError(msg)


def bind_socket(address: Address) -> socket.socket:
    """A listening socket for ``address``: Unix 0600 in a private directory, or TCP.

    Raises:
        ValueError: the socket's directory is open to other users, or the path is in use.
        OSError: the address cannot be bound.
    """
    if address.path is not None:
        path = os.path.abspath(address.path)
        _private_directory(os.path.dirname(path))
        if os.path.exists(path):
            if not stat.S_ISSOCK(os.stat(path).st_mode):
                msg = f"{path} exists and is not a socket"
                raise ValueError(msg)
            with socket.socket(socket.AF_UNIX) as probe:
                if probe.connect_ex(path) == 0:
                    msg = f"{path} is in use by a running server"
                    raise ValueError(msg)
            os.unlink(path)  # a stale socket of a server that died
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177)  # born 0600: no window where others could connect
        try:
            sock.bind(path)
        finally:
            os.umask(old)
        os.chmod(path, 0o600)
        address.path = path
    else:
        assert address.host is not None
        assert address.port is not None
        family = socket.AF_INET6 if ":" in address.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind((address.host, address.port))
        address.port = sock.getsockname()[1]
    sock.listen(128)
    sock.setblocking(False)
    return sock
