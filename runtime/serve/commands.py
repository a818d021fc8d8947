"""``tdvsm serve``: a runtime and its control plane, on a private Unix socket or (with a token) TCP.

Without options it listens on ``$XDG_RUNTIME_DIR/tdvsm/control.sock`` (else
``/tmp/tdvsm-<uid>/control.sock``), mode 0600 in a 0700 directory. ``--host``/``--port`` listen on
TCP instead, on 127.0.0.1 unless ``--host`` says otherwise, and only with ``--token-file`` (a
file only its owner can read, holding at least 32 characters). The first line on stdout is
``listening on ADDRESS``; SIGINT or SIGTERM ends it cleanly (exit status 0).
"""

from __future__ import annotations

import os
import signal
import stat
import sys
from typing import TYPE_CHECKING, Final

import anyio

from .._host import open_runtime
from ..lab.usage import UsageError, positive_float, positive_int
from ._app import create_app
from ._guard import Limits
from ._server import serve
from ._sockets import Address, default_unix_path, is_loopback

if TYPE_CHECKING:
    import argparse

    from ..lab.usage import Parser

__all__ = ("DEFAULT_PORT", "add_commands")

#: TCP port when ``--host`` is given without ``--port``.
DEFAULT_PORT: Final = 8750

_HELP = (
    "Serve a runtime's control plane. Without options it listens on a Unix socket, mode 0600 in a "
    "directory only you can enter. --host/--port listen on TCP instead (127.0.0.1 unless --host says "
    "otherwise), and only with --token-file. The first line on stdout is 'listening on ADDRESS'; "
    "SIGINT or SIGTERM ends it cleanly."
)


def add_commands(sub: argparse._SubParsersAction[Parser]) -> None:
    """Register ``serve`` on the ``tdvsm`` subparsers."""
    defaults = Limits()
    serve_ = sub.add_parser("serve", help="serve a runtime's control plane (HTTP/JSON)", description=_HELP)
    where = serve_.add_argument_group("where")
    where.add_argument("--unix", metavar="PATH", help=f"Unix socket (default {default_unix_path()})")
    where.add_argument("--host", help="TCP host (127.0.0.1 when only --port is given); needs --token-file")
    where.add_argument("--port", type=int, help=f"TCP port ({DEFAULT_PORT}; 0 picks a free one)")
    where.add_argument("--token-file", metavar="FILE", help="bearer token required from clients (TCP)")
    how = serve_.add_argument_group("how")
    how.add_argument("--backend", choices=("asyncio", "trio"), default="asyncio")
    how.add_argument("--seed", type=int, default=None, help="the runtime's seed")
    limits = serve_.add_argument_group("limits")
    for option, kind, unit in (
        ("--max-connections", positive_int, "open connections"),
        ("--max-body", positive_int, "bytes per request body"),
        ("--header-timeout", positive_float, "s to receive a request head"),
        ("--body-timeout", positive_float, "s to receive a request body"),
        ("--write-timeout", positive_float, "s for a write to drain"),
        ("--subscriber-buffer", positive_int, "events buffered per event-stream subscriber"),
    ):
        default = getattr(defaults, option[2:].replace("-", "_"))
        limits.add_argument(
            option,
            type=kind,
            default=default,
            metavar="N",
            help=f"{unit} ({default:,})" if isinstance(default, int) else f"{unit} ({default:g})",
        )
    serve_.set_defaults(handler=_serve)


def read_token(path: str) -> str:
    """The token in ``path``: the file must be readable by its owner only.

    Raises:
        UsageError: a missing, shared or too short token file.
    """
    try:
        info = os.stat(path)
        with open(path, encoding="ascii") as file:
            token = file.read().strip()
    except (OSError, UnicodeDecodeError) as exc:
        msg = f"--token-file {path}: {exc}"
        raise UsageError(msg) from None
    if info.st_mode & 0o077:
        msg = (
            f"--token-file {path} is readable by others (mode {stat.S_IMODE(info.st_mode):04o}): chmod 600 it"
        )
        raise UsageError(msg)
    if len(token) < 32 or any(not 0x21 <= ord(c) <= 0x7E for c in token):
        msg = (
            f"--token-file {path}: the token must be at least 32 printable characters without spaces "
            '(python3 -c "import secrets; print(secrets.token_urlsafe(32))")'
        )
        raise UsageError(msg)
    return token


def _address(args: argparse.Namespace) -> Address:
    tcp = args.host is not None or args.port is not None
    if tcp and args.unix is not None:
        msg = "--unix and --host/--port are exclusive"
        raise UsageError(msg)
    if not tcp:
        return Address(path=args.unix or default_unix_path())
    if args.token_file is None:
        msg = "TCP needs --token-file: clients must present a bearer token (use --unix for a local socket)"
        raise UsageError(msg)
    port = DEFAULT_PORT if args.port is None else args.port
    if not 0 <= port < 65536:
        msg = f"--port must be in 0..65535, got {port}"
        raise UsageError(msg)
    return Address(host=args.host or "127.0.0.1", port=port)


def _serve(args: argparse.Namespace) -> int:
    address = _address(args)
    token = read_token(args.token_file) if args.token_file is not None else None
    limits = Limits(
        max_connections=args.max_connections,
        max_body=args.max_body,
        header_timeout=args.header_timeout,
        body_timeout=args.body_timeout,
        write_timeout=args.write_timeout,
        subscriber_buffer=args.subscriber_buffer,
    )
    if address.host is not None and not is_loopback(address.host):
        print(
            f"tdvsm serve: warning: listening on {address.host}, not loopback: anyone who reaches it "
            "with the token controls this runtime (there is no TLS; put it behind one)",
            file=sys.stderr,
        )
    try:
        anyio.run(_main, address, token, limits, args.seed, backend=args.backend)
    except ValueError as exc:  # an unsafe socket directory, a path in use
        raise UsageError(str(exc)) from None
    except OSError as exc:
        msg = f"cannot listen on {address}: {exc.strerror or exc}"
        raise UsageError(msg) from None
    return 0


async def _main(address: Address, token: str | None, limits: Limits, seed: int | None) -> None:
    async with open_runtime(seed=seed) as runtime, anyio.create_task_group() as tg:
        app = create_app(runtime, token=token, limits=limits)
        shown = await tg.start(serve, app, address)
        print(f"listening on {shown}", flush=True)
        print(f"tdvsm serve: {_how_to_reach(address, shown)}", file=sys.stderr, flush=True)
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for signum in signals:
                print(
                    f"tdvsm serve: {signal.Signals(signum).name}, shutting down", file=sys.stderr, flush=True
                )
                break
        tg.cancel_scope.cancel()


def _how_to_reach(address: Address, shown: str) -> str:
    if address.path is not None:
        return f"try: curl --unix-socket {address.path} http://tdvsm/healthz"
    return f"dashboard: {shown}/?token=<token>; API: curl -H 'Authorization: Bearer <token>' {shown}/healthz"
