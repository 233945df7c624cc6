"""The ``transit-gateway`` command line as a user runs it: real subprocesses, the embedded
store under a private ``--data-dir``, and a real ``serve`` sharing that store with the CLI."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from conftest import EDGE_GTFS, GTFS

from gateway.access import keys
from gateway.store.embedded import socket_path_for

CLOCK = "2023-11-07T17:05:00-08:00"
CALTRAIN = GTFS / "caltrain-2023.zip"


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("GATEWAY_DATA_DIR", "REDIS_URL", "GATEWAY_CLOCK")}
    env.update(extra)
    return env


def cli(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args, "--data-dir", str(data_dir)],
        capture_output=True, text=True, timeout=60, env=_env(GATEWAY_CLOCK=CLOCK),
        cwd=data_dir.parent, check=False,
    )


def ok(data_dir: Path, *args: str) -> str:
    done = cli(data_dir, *args)
    assert done.returncode == 0, (args, done.stdout, done.stderr)
    return done.stdout


def _store_answers(data_dir: Path) -> bool:
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(1.0)
            sock.connect(str(socket_path_for(data_dir)))
            sock.sendall(b"*1\r\n$4\r\nPING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


# --- keys ----------------------------------------------------------------------------------

def test_keys_create_list_revoke_operator(tmp_path: Path) -> None:
    data = tmp_path / "data"
    done = cli(data, "keys", "create", "--email", "dev@example.org")
    assert done.returncode == 0, done.stderr
    key = done.stdout.strip()
    assert done.stdout == key + "\n"  # the key and nothing else on stdout
    assert key.startswith("tgw_") and keys.well_formed(key)
    key_id = keys.key_id_of(key)
    assert key_id in done.stderr

    listing = ok(data, "keys", "list")
    (line,) = listing.splitlines()
    assert line.split("\t")[:5] == [key_id, "developer", "bronze", "active", "dev@example.org"]
    assert key not in listing and key[4:20] not in listing

    assert ok(data, "keys", "revoke", key_id) == f"revoked {key_id}\n"
    assert ok(data, "keys", "list").split("\t")[3] == "revoked"
    unknown = cli(data, "keys", "revoke", "0123456789abcdef")
    assert unknown.returncode == 2 and "key_not_found" in unknown.stderr

    op = cli(data, "keys", "operator", "--email", "ops@example.org")
    assert op.returncode == 0, op.stderr
    token = op.stdout.strip()
    assert op.stdout == token + "\n" and token.startswith("tgo_") and keys.well_formed(token)
    kinds = {ln.split("\t")[0]: ln.split("\t")[1] for ln in ok(data, "keys", "list").splitlines()}
    assert kinds == {key_id: "developer", keys.key_id_of(token): "operator"}

    bad = cli(data, "keys", "create", "--email", "not-an-email")
    assert bad.returncode == 2 and "invalid_email" in bad.stderr and bad.stdout == ""


# --- feeds ---------------------------------------------------------------------------------

def test_feeds_add_list_show_reload_remove(tmp_path: Path) -> None:
    data = tmp_path / "data"
    added = json.loads(ok(data, "feeds", "add", "caltrain", "--static", str(CALTRAIN)))
    version = added["version"]
    assert added["feed"] == "caltrain" and len(version) == 16
    assert added["static"]["counts"]["trips"] == 176
    assert added["static"]["timezone"] == "America/Los_Angeles"

    assert ok(data, "feeds", "list") == (
        f"caltrain\tversion={version}\ttrips=176\tok\t{CALTRAIN.resolve()}\n")

    shown = json.loads(ok(data, "feeds", "show", "caltrain"))
    assert shown["config"]["id"] == "caltrain"
    assert shown["config"]["static"] == str(CALTRAIN.resolve())
    assert shown["status"]["static"]["version"] == version
    assert shown["status"]["static"]["last_error"] is None

    reloaded = json.loads(ok(data, "feeds", "reload", "caltrain"))
    assert (reloaded["feed"], reloaded["version"], reloaded["changed"]) == (
        "caltrain", version, False)

    again = cli(data, "feeds", "add", "caltrain", "--static", str(CALTRAIN))
    assert again.returncode == 2 and "feed_exists" in again.stderr

    assert ok(data, "feeds", "remove", "caltrain") == "removed caltrain\n"
    assert ok(data, "feeds", "list") == ""
    gone = cli(data, "feeds", "show", "caltrain")
    assert gone.returncode == 2 and "feed_not_found" in gone.stderr


def test_feeds_add_refuses_a_non_zip_and_registers_nothing(tmp_path: Path) -> None:
    data = tmp_path / "data"
    done = cli(data, "feeds", "add", "broken", "--static", str(EDGE_GTFS / "not-a-zip.zip"))
    assert done.returncode != 0
    assert "not_a_zip" in done.stderr
    assert done.stdout == ""
    assert ok(data, "feeds", "list") == ""
    assert cli(data, "feeds", "show", "broken").returncode == 2


# --- serve + CLI on one data dir -----------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _http(port: int, path: str, key: str | None = None) -> tuple[int, Any]:
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}",
                                 headers={"X-API-Key": key} if key else {})
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def _start_serve(data: Path, port: int, log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "gateway", "serve", "--port", str(port),
             "--data-dir", str(data)],
            stdout=out, stderr=subprocess.STDOUT, env=_env(GATEWAY_CLOCK=CLOCK),
            cwd=data.parent,
        )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"serve exited {proc.returncode}:\n{log.read_text()}")
        try:
            if _http(port, "/healthz")[0] == 200:
                return proc
        except OSError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise AssertionError(f"serve did not answer /healthz in 20 s:\n{log.read_text()}")


def _stop(proc: subprocess.Popen[bytes]) -> int:
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)
        raise AssertionError("serve did not exit within 10 s of SIGTERM") from None


def _poll_departures(port: int, key: str) -> tuple[int, Any]:
    path = "/v1/feeds/caltrain/stops/palo_alto/departures"
    deadline = time.monotonic() + 5
    status, body = _http(port, path, key)
    while status != 200 and time.monotonic() < deadline:
        time.sleep(0.2)
        status, body = _http(port, path, key)
    return status, body


def test_serve_shares_the_store_with_the_cli_and_survives_a_restart(tmp_path: Path) -> None:
    data, log = tmp_path / "data", tmp_path / "serve.log"
    procs: list[subprocess.Popen[bytes]] = []
    try:
        port = _free_port()
        procs.append(_start_serve(data, port, log))
        key = ok(data, "keys", "create", "--email", "dev@example.org").strip()
        ok(data, "feeds", "add", "caltrain", "--static", str(CALTRAIN))
        assert _store_answers(data)  # the CLI left serve's store running

        status, body = _poll_departures(port, key)
        assert status == 200, (body, log.read_text())
        assert body["time"].startswith("2023-11-07T17:05:")
        first = body["departures"][0]
        assert (first["trip_id"], first["stop_id"], first["scheduled"]) == (
            "411", "70171", "2023-11-07T17:09:00-08:00")
        assert _http(port, "/v1/feeds/caltrain")[0] == 401

        assert _stop(procs.pop()) == 0, log.read_text()
        assert not _store_answers(data)  # serve stopped the store it started

        port = _free_port()
        procs.append(_start_serve(data, port, log))
        assert _http(port, "/readyz") == (200, {"status": "ready", "store": True,
                                                "feeds": {"caltrain": True}})
        status, feed = _http(port, "/v1/feeds/caltrain", key)
        assert status == 200, feed
        assert feed["ready"] is True and feed["static"]["counts"]["trips"] == 176
        status, body = _poll_departures(port, key)
        assert status == 200 and body["departures"][0]["trip_id"] == "411", body
        assert _stop(procs.pop()) == 0, log.read_text()
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)


def test_a_bad_setting_is_named_and_nothing_starts(tmp_path: Path) -> None:
    for name, value, says in (
            ("GATEWAY_RESERVE_SECONDS", "3", "GATEWAY_RESERVE_SECONDS must be between 0 and 1"),
            ("GATEWAY_RESERVE_SECONDS", "-1", "GATEWAY_RESERVE_SECONDS must be a number of 0"),
            ("GATEWAY_AUTH_GRACE_SECONDS", "soon", "GATEWAY_AUTH_GRACE_SECONDS must be a number"),
            ("GATEWAY_AUTH_GRACE_SECONDS", "nan", "GATEWAY_AUTH_GRACE_SECONDS must be a number"),
            ("GATEWAY_LIMITER_TIMEOUT_SECONDS", "inf", "GATEWAY_LIMITER_TIMEOUT_SECONDS must"),
            ("GATEWAY_SIGNUP_PER_IP", "2.5", "GATEWAY_SIGNUP_PER_IP must be an integer")):
        done = subprocess.run(
            [sys.executable, "-m", "gateway", "keys", "list", "--data-dir", str(tmp_path)],
            capture_output=True, text=True, timeout=60, env=_env(**{name: value}), check=False)
        assert done.returncode == 2, (name, value, done.stderr)
        assert says in done.stderr and "Traceback" not in done.stderr, done.stderr
    assert not (tmp_path / "valkey").exists()  # refused before the embedded store started
