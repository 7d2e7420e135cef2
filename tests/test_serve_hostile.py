"""The server against a careful attacker: malformed input is a 4xx (never a 500), every answer carries the security
headers, Host and token are checked, the served config names no local path, connection-level limits hold, and
the gate and body memory are shared fairly between clients."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import socket
import time

import pytest
from fastapi.testclient import TestClient

from digitlab.cli import build_parser
from digitlab.serving.app import Limits, create_app, exposure_warning
from digitlab.serving.batching import Busy, Gate
from digitlab.serving.body import BodyMemory
from digitlab.serving.guard import allowed_hosts
from digitlab.serving.protocol import Printable
from test_serve import LiveServer
from test_serve_speed import canvas_png

JSON = {"content-type": "application/json"}


@pytest.fixture(scope="module")
def app(seed_run):
    return create_app(seed_run.path)


@pytest.fixture(scope="module")
def client(app):
    with TestClient(app, base_url="http://localhost") as test_client:
        yield test_client


@pytest.fixture(scope="module")
def drawing(mnist) -> str:
    return base64.b64encode(canvas_png(mnist.test.images[0, 0].numpy())).decode()


def test_inputs_that_gave_500_are_400_with_a_clean_one_line_error(client, drawing):
    cases = {
        "lone surrogate in name": '{"image": "bm90IGFuIGltYWdl", "name": "\\ud800 x"}',  # a 422 naming it
        "nested 100,000 deep": "[" * 100_000 + "]" * 100_000,
        "5,000-digit number": '{"image": "x", "n": 1' + "0" * 5000 + "}",
        "3,000 keys": "{" + ",".join(f'"k{i}": 1' for i in range(3000)) + "}",
    }
    for name, body in cases.items():
        response = client.post("/api/predict", content=body.encode(), headers=JSON)
        assert response.status_code in (400, 422), (name, response.text)
        error = response.json()["error"]
        assert "\n" not in error and "\ud800" not in error, name
    assert client.post("/api/predict", content=cases["lone surrogate in name"], headers=JSON).json()["error"] == (
        "? x: not an image file digitlab can read (PNG, JPEG, HEIC, WebP, BMP, GIF, TIFF or PNM)"
    )
    for target, status in (("²", 400), ("٣", 400), ("9" * 5000, 422), ("3", 200)):
        response = client.post("/api/explain", json={"image": drawing}, params={"target": target})
        assert response.status_code == status, (target, response.text)
    too_many = client.post("/api/explain", json={"image": drawing}, params={"target": [str(i % 10) for i in range(11)]})
    assert too_many.status_code == 422 and "at most 10 targets" in too_many.json()["error"]
    assert client.post("/api/predict", json={"image": drawing}).json()["label"] == "7"


def test_every_answer_carries_the_security_headers(client):
    for path in ("/", "/healthz", "/api/model", "/api/nothing", "/static/app.js"):
        headers = client.get(path).headers
        policy = headers["content-security-policy"]
        assert "frame-ancestors 'none'" in policy and "script-src 'self';" in policy, path
        assert headers["x-content-type-options"] == "nosniff" and headers["referrer-policy"] == "no-referrer"
    assert "'unsafe-inline'" in client.get("/docs").headers["content-security-policy"]  # Swagger UI's inline start


def test_only_allowed_hosts_are_answered(seed_run):
    loopback = create_app(seed_run.path)
    for host, status in (("localhost", 200), ("127.0.0.1:8000", 200), ("[::1]:8000", 200), ("rebound.example", 400)):
        with TestClient(loopback, base_url=f"http://{host}") as client:
            response = client.get("/api/model")
            assert response.status_code == status, host
    assert response.json() == {"error": "this server does not answer to the host 'rebound.example'"}
    everywhere = create_app(seed_run.path, hosts=allowed_hosts("0.0.0.0", ["demo.example"]), any_address=True)
    for host, status in (("192.168.1.20:8000", 200), ("demo.example", 200), ("rebound.example", 400)):
        with TestClient(everywhere, base_url=f"http://{host}") as client:
            assert client.get("/healthz").status_code == status, host
    assert allowed_hosts("127.0.0.1", ["*"]) is None


def test_a_token_guards_the_api_but_not_the_page(seed_run, drawing):
    with TestClient(create_app(seed_run.path, token="s3cret"), base_url="http://localhost") as client:
        assert client.get("/").status_code == client.get("/healthz").status_code == 200
        refused = client.post("/api/predict", json={"image": drawing})
        assert refused.status_code == 401 and refused.headers["www-authenticate"].startswith("Bearer")
        wrong = client.get("/api/model", headers={"Authorization": "Bearer guess"})
        assert wrong.status_code == 401
        allowed = client.post("/api/predict", json={"image": drawing}, headers={"Authorization": "Bearer s3cret"})
        assert allowed.status_code == 200 and allowed.json()["label"] == "7"


def test_the_served_config_names_no_local_path(client, seed_run):
    config = client.get("/api/model").json()["config"]
    assert seed_run.config.out and config["out"] == seed_run.path.name == type(seed_run.path)(config["out"]).name
    assert "/" not in json.dumps(config)


def test_binding_beyond_loopback_warns(seed_run):
    assert exposure_warning("127.0.0.1", None) is None and exposure_warning("localhost", None) is None
    warning = exposure_warning("0.0.0.0", None)
    assert warning and "every network" in warning and "no --token" in warning and "reverse proxy with TLS" in warning
    assert "the API wants the token" in exposure_warning("192.168.1.20", "t")


def test_the_cli_defaults_are_the_limits_defaults(seed_run, monkeypatch):
    import digitlab.serving.app

    seen = {}
    monkeypatch.setattr(digitlab.serving.app, "serve", lambda *args, **kwargs: seen.update(kwargs))
    args = build_parser().parse_args(["serve", str(seed_run.path)])
    args.handler(args)
    assert seen["limits"] == Limits() and seen["token"] is None and seen["hosts"] == []


def test_log_lines_escape_what_a_client_sent():
    record = logging.LogRecord("uvicorn.access", logging.INFO, "", 0, "%s %s", ("GET", "/a\nfake line\x1b[31m"), None)
    Printable().filter(record)
    assert record.getMessage() == "GET /a\\nfake line\\x1b[31m"


def _raw(port: int, data: bytes) -> socket.socket:
    connection = socket.create_connection(("127.0.0.1", port), timeout=15)
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # the server may answer before all is sent
        connection.sendall(data)
    return connection


def _status(connection: socket.socket) -> tuple[int, bytes]:
    """The status and bytes of the answer, read until the server closes (it may reset: we left bytes unread)."""
    data = b""
    with contextlib.suppress(ConnectionResetError):
        while chunk := connection.recv(65536):
            data += chunk
    return int(data.split()[1]), data


@pytest.mark.slow  # waits out three 1-second deadlines
def test_connection_limits_hold_over_a_real_connection(seed_run):
    limits = Limits(header_timeout_s=1.0, body_grace_s=1.0, max_header_bytes=4096, max_connections=8)
    with LiveServer(create_app(seed_run, limits)) as live:
        head = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nX-Big: "
        assert _status(_raw(live.port, head + b"a" * 10_000 + b"\r\n\r\n"))[0] == 431  # whole in one read
        assert _status(_raw(live.port, head + b"a" * 1_000_000))[0] == 400  # still coming: h11's own limit
        began = time.monotonic()
        dribble = _raw(live.port, b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # and then nothing
        status, answer = _status(dribble)
        assert status == 408 and b"headers did not arrive within 1 s" in answer and time.monotonic() - began < 5
        idle = _raw(live.port, b"")  # a connection that never sends a byte is closed too
        assert _status(idle)[0] == 408
        head = b"POST /api/predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
        status, answer = _status(_raw(live.port, head + b"{"))  # one byte, then nothing: the rate falls behind
        assert status == 408 and b"arrived too slowly" in answer
        assert live.request("GET", "/healthz") == (200, {"status": "ok"})


def _scenario(coroutine):
    return asyncio.run(coroutine())


def test_a_busier_client_gives_up_its_newest_waiting_place():
    async def scenario():
        gate = Gate(working=1, waiting=1)
        async with gate.ticket("a") as first, gate.turn(first), gate.ticket("a") as second:
            waiting = asyncio.create_task(_turn(gate, second))
            await _settle()
            async with gate.ticket("b"):  # the line is full, but "a" holds both places: its waiting one goes
                assert gate.evicted == 1 and gate.held == 2
                with pytest.raises(Busy):
                    async with gate.ticket("a"):  # now each holds one: "a" finds no place
                        pass
            return await asyncio.gather(waiting, return_exceptions=True)

    (outcome,) = _scenario(scenario)
    assert isinstance(outcome, Busy) and "another client" in str(outcome)


async def _settle() -> None:
    """Let every task that can run do so (event-loop steps, not a timed wait)."""
    for _ in range(20):
        await asyncio.sleep(0)


async def _turn(gate: Gate, ticket, cost: float = 0.0):
    async with gate.turn(ticket, cost):
        return ticket.client


def test_a_freed_turn_goes_to_the_client_with_fewest_under_way_and_costs_stay_within_the_budget():
    async def scenario():
        gate = Gate(working=2, waiting=4, budget=100)
        order: list[str] = []

        async def work(client: str, cost: float, hold: asyncio.Event | None = None):
            async with gate.ticket(client) as ticket, gate.turn(ticket, cost):
                order.append(client)
                if hold:
                    await hold.wait()

        first, second = asyncio.Event(), asyncio.Event()
        tasks = [asyncio.create_task(work("a", 10, first)), asyncio.create_task(work("a", 10, second))]
        await _settle()
        tasks += [asyncio.create_task(work("a", 10)), asyncio.create_task(work("b", 10))]
        await _settle()
        assert order == ["a", "a"]  # both slots taken; "a" and "b" wait
        first.set()
        await _settle()
        assert order[2] == "b"  # "b" had none under way: it goes before "a"'s third
        second.set()
        await asyncio.gather(*tasks)
        heavy, light = asyncio.Event(), asyncio.Event()
        order.clear()
        big = asyncio.create_task(work("a", 80, heavy))
        await _settle()
        small = asyncio.create_task(work("b", 50, light))
        await _settle()
        assert order == ["a"] and gate.spent == 80  # 80 + 50 > 100: "b" waits though a slot is free
        heavy.set()
        light.set()
        await asyncio.gather(big, small)
        alone = asyncio.create_task(work("c", 500))  # one alone always runs
        await alone
        return order

    assert _scenario(scenario) == ["a", "b", "c"]


def test_body_memory_is_shared_between_clients():
    memory = BodyMemory(100)
    memory.take("a", 50)
    with pytest.raises(Busy):
        memory.take("a", 1)  # one client holds half at most
    memory.take("b", 50)
    with pytest.raises(Busy):
        memory.take("c", 1)  # all together: full
    memory.give_back("a", 50)
    memory.take("c", 10)
    assert memory.held == 60 and dict(memory.by_client) == {"b": 50, "c": 10}
