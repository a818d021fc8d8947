"""F7: which Ray clusters tdvsm agrees to use (no Ray needed: nothing here connects anywhere)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from runtime.cluster.safety import UnsafeCluster, check_address, check_local, host_of, is_loopback

if TYPE_CHECKING:
    from pathlib import Path


@pytest.mark.parametrize(
    ("address", "host"),
    [
        ("10.1.2.3:6379", "10.1.2.3"),
        ("ray://head.example:10001", "head.example"),
        ("[::1]:6379", "::1"),
        ("localhost:6379", "localhost"),
        ("  127.0.0.1:6379 ", "127.0.0.1"),
    ],
)
def test_host_of(address: str, host: str) -> None:
    assert host_of(address) == host


@pytest.mark.parametrize("address", ["", ":6379", "ray://:1"])
def test_an_address_without_host_is_refused(address: str) -> None:
    with pytest.raises(UnsafeCluster, match="expected HOST:PORT"):
        host_of(address)


@pytest.mark.parametrize("host", ["127.0.0.1", "127.8.9.10", "::1", "localhost"])
def test_loopback_hosts(host: str) -> None:
    assert is_loopback(host)


@pytest.mark.parametrize("host", ["10.1.2.3", "192.0.2.7", "0.0.0.0", "::", "2001:db8::1"])
def test_other_hosts_are_not_loopback(host: str) -> None:
    assert not is_loopback(host)


NO_TOKEN: dict[str, str] = {}


@pytest.mark.parametrize("address", ["10.1.2.3:6379", "ray://192.0.2.7:10001", "[2001:db8::1]:6379", "auto"])
def test_a_non_loopback_address_without_token_auth_is_refused(address: str, tmp_path: Path) -> None:
    with pytest.raises(UnsafeCluster) as info:
        check_address(address, NO_TOKEN, tmp_path)
    message = str(info.value)
    assert message.startswith(f"--address {address}: refused")
    assert "RAY_AUTH_MODE=token" in message
    assert "RAY_AUTH_TOKEN_PATH" in message


def test_token_mode_without_a_token_is_refused(tmp_path: Path) -> None:
    env = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(tmp_path / "missing")}
    with pytest.raises(UnsafeCluster, match="refused"):
        check_address("10.1.2.3:6379", env, tmp_path)
    (tmp_path / "empty").write_text("")
    with pytest.raises(UnsafeCluster, match="refused"):
        check_address(
            "10.1.2.3:6379",
            {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(tmp_path / "empty")},
            tmp_path,
        )


def test_a_token_without_token_mode_is_refused(tmp_path: Path) -> None:
    with pytest.raises(UnsafeCluster, match="refused"):
        check_address("10.1.2.3:6379", {"RAY_AUTH_TOKEN": "x" * 32}, tmp_path)


def test_token_auth_configured_is_accepted(tmp_path: Path) -> None:
    check_address("10.1.2.3:6379", {"RAY_AUTH_MODE": "TOKEN", "RAY_AUTH_TOKEN": "t" * 32}, tmp_path)
    path = tmp_path / "token"
    path.write_text("t" * 32)
    check_address("10.1.2.3:6379", {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(path)}, tmp_path)
    (tmp_path / ".ray").mkdir()
    (tmp_path / ".ray" / "auth_token").write_text("t" * 32)
    check_address("auto", {"RAY_AUTH_MODE": "token"}, tmp_path)


@pytest.mark.parametrize(
    "address", ["127.0.0.1:6379", "localhost:6379", "[::1]:6379", "ray://127.0.0.1:10001"]
)
def test_a_loopback_address_needs_no_token(address: str, tmp_path: Path) -> None:
    check_address(address, NO_TOKEN, tmp_path)


@pytest.mark.parametrize("mode", ["disabled", "none", ""])
def test_a_local_ray_without_token_auth_is_refused(mode: str) -> None:
    with pytest.raises(UnsafeCluster, match="listen on every network interface"):
        check_local({"RAY_AUTH_MODE": mode})


def test_a_local_ray_with_token_auth_or_the_default_is_accepted() -> None:
    check_local({})
    check_local({"RAY_AUTH_MODE": "token"})


def test_ray_options_need_the_ray_backend(capsys: pytest.CaptureFixture[str]) -> None:
    from runtime.cli import main

    assert main(["run", "--partitions", "2", "--address", "127.0.0.1:6379"]) == 2
    assert capsys.readouterr().err.strip() == "tdvsm run: error: --address and --shards need --backend ray"
    assert main(["run", "--partitions", "2", "--shards", "2", "--backend", "trio"]) == 2
    assert "need --backend ray" in capsys.readouterr().err


def test_without_the_ray_extra(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """No Ray: --backend ray is one usage line naming the extra, and bench P6 says it was not measured."""
    import sys

    from runtime import cli

    monkeypatch.setitem(sys.modules, "ray", None)  # import ray raises ImportError(name="ray")
    for name in [
        m for m in sys.modules if m.startswith("runtime.cluster.") and m != "runtime.cluster.safety"
    ]:
        monkeypatch.delitem(sys.modules, name)
    assert cli.main(["run", "--partitions", "2", "--backend", "ray"]) == 2
    assert "--backend ray needs the ray extra (pip install -e '.[ray]')" in capsys.readouterr().err
    (figure,) = cli._bench_extra()["P6"](True)
    assert figure.id == "P6"
    assert "not measured, the ray extra is missing (ray)" in figure.name
    assert figure.met is None
