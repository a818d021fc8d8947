"""RELIABILITY F6: token rules, safe sockets, and what a default start exposes (nothing but a Unix socket)."""

from __future__ import annotations

import logging
import os
import socket
import stat
import subprocess
import sys
from typing import TYPE_CHECKING, Final

import httpx
import pytest

from runtime import open_runtime
from runtime.serve import Unauthenticated, connect, create_app, serve
from runtime.serve._sockets import Address, bind_socket
from tests.runtime.serve._harness import TOKEN, connect_raw, read_until_closed, request_bytes, served

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

#: The ``tdvsm`` command of this interpreter's environment.
TDVSM: Final = (sys.executable, "-c", "import sys; from runtime.cli import main; sys.exit(main())")
BAD_TOKENS: Final = {
    "missing": None,
    "wrong": "Bearer " + "y" * len(TOKEN),
    "empty": "Bearer ",
    "prefix": "Bearer " + TOKEN[:-1],
    "basic": "Basic " + TOKEN,
    "oversize": "Bearer " + TOKEN + "z" * 300,
}


@pytest.mark.parametrize("authorization", BAD_TOKENS.values(), ids=BAD_TOKENS.keys())
async def test_requests_without_the_token_are_refused_and_closed(authorization: str | None) -> None:
    async with served(token=TOKEN) as s:
        headers = {"authorization": authorization} if authorization is not None else {}
        stream = await connect_raw(s.address)
        async with stream:
            # A body the server would refuse as too large: it is not even looked at before auth.
            await stream.send(
                request_bytes("POST", "/partitions", headers={**headers, "content-length": "4294967295"})
            )
            response = await read_until_closed(stream)
        assert response.startswith(b"HTTP/1.1 401 ")
        head, body = response.split(b"\r\n\r\n", 1)
        assert b"www-authenticate: Bearer" in head
        assert b"connection: close" in head.lower()
        assert body == b'{"error":"Unauthenticated","message":"missing or wrong bearer token"}'
        assert s.runtime.partitions == []


async def test_the_right_token_is_accepted_and_healthz_needs_none() -> None:
    async with served(token=TOKEN) as s:
        async with connect(s.address, token=TOKEN) as client:
            part = await client.create_partition(vp_count=1)
            assert part.partition_id == 0
        async with connect(s.address) as anonymous:
            assert (await anonymous.health()).status == "ok"
            with pytest.raises(Unauthenticated):
                await anonymous.partitions()


async def test_the_dashboard_logs_in_once_and_keeps_a_derived_cookie() -> None:
    async with served(token=TOKEN) as s:
        transport = httpx.AsyncHTTPTransport(uds=s.path)
        async with httpx.AsyncClient(transport=transport, base_url="http://tdvsm") as http:
            assert (await http.get("/", params={"token": "nope" * 10})).status_code == 401
            login = await http.get("/", params={"token": TOKEN})
            assert login.status_code == 303
            assert login.headers["location"] == "./"
            cookie = login.headers["set-cookie"]
            assert "HttpOnly" in cookie
            assert "SameSite=strict" in cookie
            assert TOKEN not in cookie
            assert (await http.get("/stats")).status_code == 200  # the client keeps the cookie
            http.cookies.clear()
            http.cookies.set("tdvsm_session", "f" * 64)
            assert (await http.get("/stats")).status_code == 401


async def test_the_token_never_shows_in_logs_or_replies(caplog: pytest.LogCaptureFixture) -> None:
    """Every way a token reaches the server, right or wrong: it is in no log line and no reply."""
    caplog.set_level(logging.DEBUG)
    seen: list[bytes] = []
    async with served(token=TOKEN) as s:
        transport = httpx.AsyncHTTPTransport(uds=s.path)
        async with httpx.AsyncClient(transport=transport, base_url="http://tdvsm") as http:
            for authorization in [v for v in BAD_TOKENS.values() if v and v.strip() == v] + [
                f"Bearer {TOKEN}"
            ]:
                for method, path in [("GET", "/partitions"), ("POST", "/partitions/9/vps/0/execute")]:
                    reply = await http.request(
                        method, path, headers={"authorization": authorization}, content=b"{"
                    )
                    seen.append(reply.content + str(reply.headers).encode())
            for token in (TOKEN, TOKEN + "x"):
                reply = await http.get("/", params={"token": token})
                seen.append(reply.content + str(reply.headers).encode())
    assert all(TOKEN.encode() not in text for text in seen)
    server_side = [
        r for r in caplog.records if not r.name.startswith(("httpx", "httpcore"))
    ]  # not our client's
    assert server_side, "the server logged nothing at all: the check would prove nothing"
    assert all(TOKEN not in record.getMessage() for record in server_side)


async def test_create_app_refuses_weak_tokens() -> None:
    async with open_runtime() as rt:
        for token in ("short", "x" * 31, "with space " + "x" * 30, "é" * 40):
            with pytest.raises(ValueError, match="at least 32 printable ASCII"):
                create_app(rt, token=token)


async def test_tcp_needs_an_app_with_a_token() -> None:
    async with open_runtime() as rt:
        with pytest.raises(ValueError, match="TCP needs an app with a token"):
            await serve(create_app(rt), Address(host="127.0.0.1", port=0))


def test_the_socket_is_0600_in_a_0700_directory(tmp_path: Path) -> None:
    address = Address(path=str(tmp_path / "fresh" / "c.sock"))
    sock = bind_socket(address)
    try:
        assert stat.S_IMODE(os.stat(address.path).st_mode) == 0o600  # type: ignore[arg-type]
        assert stat.S_IMODE(os.stat(tmp_path / "fresh").st_mode) == 0o700
        with pytest.raises(ValueError, match="in use by a running server"):
            bind_socket(Address(path=address.path))
    finally:
        sock.close()
    replaced = bind_socket(Address(path=address.path))  # a stale socket of a dead server
    replaced.close()


def test_a_directory_open_to_others_is_refused(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o755)
    os.chmod(shared, 0o755)
    with pytest.raises(ValueError, match=r"open to other users \(mode 0755"):
        bind_socket(Address(path=str(shared / "c.sock")))
    (shared / "file").write_text("x")
    os.chmod(shared, 0o700)
    with pytest.raises(ValueError, match="exists and is not a socket"):
        bind_socket(Address(path=str(shared / "file")))


# ---- a real `tdvsm serve`: what it listens on -------------------------------------------------


def _listening_inodes(pid: int) -> set[int]:
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(int(target[8:-1]))
    return inodes


def _tcp_listeners(pid: int) -> list[str]:
    """Local addresses (hex, as /proc/net/tcp* shows them) of the TCP sockets ``pid`` listens on."""
    inodes = _listening_inodes(pid)
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as lines:
            next(lines)
            for line in lines:
                fields = line.split()
                if fields[3] == "0A" and int(fields[9]) in inodes:  # 0A: LISTEN
                    found.append(fields[1])
    return found


@pytest.fixture
def serve_process(tmp_path: Path) -> Iterator[callable]:  # type: ignore[valid-type]
    started: list[subprocess.Popen[str]] = []

    def start(*args: str) -> tuple[subprocess.Popen[str], str]:
        env = {**os.environ, "XDG_RUNTIME_DIR": str(tmp_path)}
        command = [*TDVSM, "serve", *args]
        process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
        )
        started.append(process)
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line.startswith("listening on "), process.stderr.read() if process.stderr else line
        return process, line.split()[-1]

    yield start
    for process in started:
        process.terminate()
        process.communicate(timeout=10)


def test_a_default_start_listens_on_no_tcp_port(serve_process: callable, tmp_path: Path) -> None:  # type: ignore[valid-type]
    process, address = serve_process()
    assert address == f"unix:{tmp_path}/tdvsm/control.sock"
    assert _tcp_listeners(process.pid) == []
    assert stat.S_IMODE(os.stat(tmp_path / "tdvsm").st_mode) == 0o700
    assert stat.S_IMODE(os.stat(tmp_path / "tdvsm" / "control.sock").st_mode) == 0o600
    with socket.socket(socket.AF_UNIX) as probe:
        probe.connect(str(tmp_path / "tdvsm" / "control.sock"))
        probe.sendall(b"GET /healthz HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n")
        assert probe.recv(100).startswith(b"HTTP/1.1 200")
    process.terminate()
    assert process.wait(timeout=10) == 0
    assert not (tmp_path / "tdvsm" / "control.sock").exists()


def test_a_tcp_start_listens_on_loopback_only(serve_process: callable, tmp_path: Path) -> None:  # type: ignore[valid-type]
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    token_file.chmod(0o600)
    process, address = serve_process("--port", "0", "--token-file", str(token_file))
    assert address.startswith("http://127.0.0.1:")
    listeners = _tcp_listeners(process.pid)
    assert len(listeners) == 1
    assert listeners[0].startswith("0100007F:")  # 127.0.0.1, little-endian hex


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--port", "0"], "TCP needs --token-file"),
        (["--unix", "/tmp/x.sock", "--port", "1"], "exclusive"),
        (["--port", "70000", "--token-file", "/dev/null"], "0..65535"),
    ],
)
def test_bad_serve_options_are_one_line_and_status_2(args: list[str], message: str) -> None:
    done = subprocess.run([*TDVSM, "serve", *args], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2
    assert message in done.stderr
    assert done.stderr.count("\n") == 1


@pytest.mark.parametrize(
    ("mode", "content", "message"), [(0o644, TOKEN, "readable by others"), (0o600, "short", "32")]
)
def test_a_weak_token_file_is_refused(tmp_path: Path, mode: int, content: str, message: str) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(content)
    token_file.chmod(mode)
    command = [*TDVSM, "serve", "--port", "0", "--token-file", str(token_file)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2
    assert message in done.stderr
    assert TOKEN not in done.stderr
