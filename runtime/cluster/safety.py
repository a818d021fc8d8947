"""Which Ray clusters tdvsm agrees to use (RELIABILITY.md F7): no unauthenticated exposed head.

Ray runs arbitrary code for anyone who reaches its ports. Since Ray 2.52 it can require a token
(``RAY_AUTH_MODE=token``; the token comes from ``RAY_AUTH_TOKEN``, the file named by
``RAY_AUTH_TOKEN_PATH``, or ``~/.ray/auth_token``), and from 2.59 a new local cluster
(``ray.init()`` without an address) turns it on by itself unless ``RAY_AUTH_MODE`` says
otherwise; an explicit address never turns it on (read in Ray 2.60's ``ray/_private/worker.py``
and ``authentication_token_setup.py``). Hence:

* an address whose host is not a loopback address (or cannot be shown to be one: ``auto``, a
  name that does not resolve) is refused unless token authentication is configured;
* a local Ray is started only with token authentication, because its processes listen on
  every interface, not on loopback alone (checked with ``ss -ltnp`` on Ray 2.60:
  ``gcs_server``, ``raylet`` and the workers bind ``*``).

The checks only look at whether a token is set in the environment or a non-empty token file
exists; tdvsm never prints a token or passes one on.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = ("UnsafeCluster", "check_address", "check_local", "host_of", "is_loopback", "token_configured")


class UnsafeCluster(ValueError):
    """Raised when tdvsm refuses a Ray cluster that anyone on the network could run code on."""


_HOW = (
    "configure Ray's token authentication: RAY_AUTH_MODE=token, with the cluster's token in "
    "RAY_AUTH_TOKEN, in the file named by RAY_AUTH_TOKEN_PATH, or in ~/.ray/auth_token "
    "(README 'Ray')"
)


def host_of(address: str) -> str:
    """The host part of a Ray address (``host:port``, ``[v6]:port``, ``ray://host:port``).

    Raises:
        UnsafeCluster: an address with no host.
    """
    text = address.strip()
    if "://" not in text:
        text = f"//{text}"
    try:
        host = urlsplit(text).hostname
    except ValueError:
        host = None
    if not host:
        msg = f"--address {address!r}: expected HOST:PORT or ray://HOST:PORT"
        raise UnsafeCluster(msg)
    return host


def is_loopback(host: str) -> bool:
    """True when every address ``host`` names is a loopback one (127.0.0.0/8, ::1).

    A name is resolved (``localhost`` usually from /etc/hosts); one that does not resolve is
    not shown to be loopback.
    """
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None)
    except (OSError, UnicodeError):
        return False
    addresses = {info[4][0] for info in infos}
    return bool(addresses) and all(ipaddress.ip_address(str(a).split("%")[0]).is_loopback for a in addresses)


def token_configured(environ: Mapping[str, str] | None = None, home: Path | None = None) -> bool:
    """True when Ray will authenticate with a token: ``RAY_AUTH_MODE=token`` and a token at hand."""
    env = os.environ if environ is None else environ
    if env.get("RAY_AUTH_MODE", "").strip().lower() != "token":
        return False
    if env.get("RAY_AUTH_TOKEN", "").strip():
        return True
    path = env.get("RAY_AUTH_TOKEN_PATH", "").strip()
    candidates = [Path(path).expanduser()] if path else []
    candidates.append((home or Path.home()) / ".ray" / "auth_token")
    return any(p.is_file() and p.stat().st_size > 0 for p in candidates)


def check_address(address: str, environ: Mapping[str, str] | None = None, home: Path | None = None) -> None:
    """Refuse ``address`` when it is not loopback and token authentication is not configured.

    Raises:
        UnsafeCluster: the refusal, saying why and what to configure.
    """
    if address.strip().lower() == "auto":
        where = "'auto' (whichever cluster Ray finds)"
    else:
        host = host_of(address)
        if is_loopback(host):
            return
        where = f"host {host!r}, which is not a loopback address"
    if not token_configured(environ, home):
        msg = (
            f"--address {address}: refused: {where}, and Ray's token authentication is not "
            f"configured, so anyone who reaches the cluster's ports could run code on it; {_HOW}"
        )
        raise UnsafeCluster(msg)


def check_local(environ: Mapping[str, str] | None = None) -> None:
    """Refuse to start a local Ray without token authentication.

    Raises:
        UnsafeCluster: ``RAY_AUTH_MODE`` is set to something other than ``token``.
    """
    env = os.environ if environ is None else environ
    mode = env.get("RAY_AUTH_MODE")
    if mode is not None and mode.strip().lower() != "token":
        msg = (
            f"refused to start a local Ray with RAY_AUTH_MODE={mode!r}: its processes listen on "
            "every network interface, so it would run code for anyone who reaches them; unset "
            "RAY_AUTH_MODE (Ray then turns token authentication on) or set it to 'token'"
        )
        raise UnsafeCluster(msg)
