"""The agent client's transport (``http.client``) against real servers on 127.0.0.1.

Why small servers of the standard library rather than the agent: the agent
answers well; these answer as a broken deployment would (no answer, a page
that is not JSON, a dropped connection, TLS with a private CA, a proxy in
the way), and each must still give the one line ``htcsim`` prints. The happy
path against the real agent is ``tests/test_agent_cli.py``.
"""

from __future__ import annotations

import json
import select
import shutil
import socket
import subprocess
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from htcsim.agent.client.http import AgentClient, ClientError
from tests.agent_harness import REQUEST_S

Answer = Callable[[BaseHTTPRequestHandler], None]


def _json(handler: BaseHTTPRequestHandler, value: Any, *, close: bool = False) -> None:
    body = json.dumps(value).encode()
    handler.send_response(200)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)
    handler.wfile.flush()
    if close:  # drop the kept-alive connection without saying so (as an idle timeout does)
        handler.close_connection = True


@contextmanager
def serving(answer: Answer, tls: tuple[Path, Path] | None = None) -> Iterator[tuple[str, list]]:
    """A threaded HTTP/1.1 server on a free port answering every request with ``answer``;
    yields its base URL and the (method, path, headers) it received."""
    seen: list[tuple[str, str, dict[str, str]]] = []

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _any(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            self.body = self.rfile.read(length) if length else b""
            seen.append((self.command, self.path, dict(self.headers)))
            answer(self)

        do_GET = do_POST = _any

        def log_message(self, *_: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    scheme = "http"
    if tls is not None:
        import ssl

        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(*tls)
        server.socket = context.wrap_socket(server.socket, server_side=True)
        scheme = "https"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"{scheme}://127.0.0.1:{server.server_address[1]}", seen
    finally:
        server.shutdown()
        server.server_close()
        thread.join(REQUEST_S)


def test_token_path_prefix_and_query_reach_the_server() -> None:
    with (
        serving(lambda h: _json(h, {"jobs": [], "next": None})) as (url, seen),
        AgentClient(url + "/htcsim/", "secret") as client,
    ):
        assert client.jobs(states=["pending", "held"], user="ann") == []
    method, path, headers = seen[0]
    assert method == "GET"
    assert path.startswith("/htcsim/jobs?")
    assert "state=pending&state=held" in path and "user=ann" in path
    assert headers["Authorization"] == "Bearer secret"


def test_a_connection_the_agent_dropped_between_two_calls_is_reopened() -> None:
    with (
        serving(lambda h: _json(h, {"status": "ok"}, close=True)) as (url, seen),
        AgentClient(url, "t") as client,
    ):
        assert client.healthz() == {"status": "ok"}
        sock = client._http._conn.sock  # the kept-alive socket the server just closed
        if sock is not None:  # wait until its end of file has arrived, then call again
            assert select.select([sock], [], [], REQUEST_S)[0]
        assert client.healthz() == {"status": "ok"}
    assert len(seen) == 2


def test_an_answer_that_is_not_json_is_one_line() -> None:
    def page(handler: BaseHTTPRequestHandler) -> None:
        body = b"<html>proxy login</html>"
        handler.send_response(200)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    with (
        serving(page) as (url, _),
        AgentClient(url, "t") as client,
        pytest.raises(ClientError, match=r"to GET /nodes is not JSON: is it an htcsim agent"),
    ):
        client.nodes()


def test_an_error_without_detail_gives_the_reason_phrase() -> None:
    def teapot(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(503)
        handler.send_header("Content-Length", "0")
        handler.end_headers()

    with (
        serving(teapot) as (url, _),
        AgentClient(url, "t") as client,
        pytest.raises(ClientError) as caught,
    ):
        client.cluster()
    assert str(caught.value) == "HTTP 503: Service Unavailable"
    assert caught.value.status == 503


def test_a_dropped_answer_and_a_silent_server_are_one_line_each() -> None:
    def drop(handler: BaseHTTPRequestHandler) -> None:
        handler.close_connection = True  # closes without a status line

    with (
        serving(drop) as (url, _),
        AgentClient(url, "t") as client,
        pytest.raises(ClientError, match=f"^talking to the agent at {url}: "),
    ):
        client.healthz()

    with socket.socket() as silent:  # accepts (the backlog) and never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        with (
            AgentClient(url, "t", timeout_s=0.5) as client,
            pytest.raises(ClientError, match=f"^the agent at {url} did not answer in time$"),
        ):
            client.healthz()


def test_a_url_that_is_not_http_is_refused_at_once() -> None:
    with pytest.raises(ClientError, match=r"^ftp://host: not an http:// or https:// URL$"):
        AgentClient("ftp://host", "t")
    with pytest.raises(ClientError, match="Port could not be cast"):
        AgentClient("http://host:port", "t")


def _certificate(tmp_path: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (its own CA), made by openssl."""
    openssl = shutil.which("openssl")
    assert openssl, "the TLS tests need the openssl command (apt-get install openssl)"
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            *(openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"),
            *("-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"),
            *("-keyout", str(key), "-out", str(cert)),
        ],
        check=True,
        capture_output=True,
        timeout=REQUEST_S,
    )
    return cert, key


def test_https_checks_the_certificate_against_the_trusted_cas(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An agent behind TLS: refused while its CA is unknown, reached once SSL_CERT_FILE
    names it (as for every OpenSSL client of the machine)."""
    cert, key = _certificate(tmp_path)
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    with serving(lambda h: _json(h, {"status": "ok"}), tls=(cert, key)) as (url, _):
        with (
            AgentClient(url, "t") as client,
            pytest.raises(ClientError, match=f"^no TLS connection to the agent at {url}: "),
        ):
            client.healthz()
        monkeypatch.setenv("SSL_CERT_FILE", str(cert))
        with AgentClient(url, "t") as client:
            assert client.healthz() == {"status": "ok"}
            assert client.healthz() == {"status": "ok"}  # on the same connection


@contextmanager
def forwarding_proxy() -> Iterator[tuple[str, list[str]]]:
    """A real forward proxy: absolute-URL requests are passed on with http.client, CONNECT
    is tunnelled byte for byte; yields its URL and the request lines it handled."""
    import http.client
    from urllib.parse import urlsplit

    handled: list[str] = []

    class Proxy(BaseHTTPRequestHandler):
        def _forward(self) -> None:
            handled.append(f"{self.command} {self.path}")
            target = urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else None
            upstream = http.client.HTTPConnection(target.hostname, target.port, timeout=REQUEST_S)
            path = target.path + (f"?{target.query}" if target.query else "")
            upstream.request(self.command, path, body=body, headers=dict(self.headers))
            answer = upstream.getresponse()
            data = answer.read()
            self.send_response(answer.status)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            upstream.close()

        do_GET = do_POST = _forward

        def do_CONNECT(self) -> None:
            handled.append(f"CONNECT {self.path}")
            host, port = self.path.rsplit(":", 1)
            with socket.create_connection((host, int(port)), timeout=REQUEST_S) as upstream:
                self.send_response(200)
                self.end_headers()
                ends = [self.connection, upstream]
                while True:
                    ready = select.select(ends, [], [], REQUEST_S)[0]
                    if not ready:
                        return
                    for end in ready:
                        data = end.recv(65536)
                        if not data:
                            return
                        (upstream if end is self.connection else self.connection).sendall(data)

        def log_message(self, *_: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Proxy)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", handled
    finally:
        server.shutdown()
        server.server_close()
        thread.join(REQUEST_S)


def test_the_proxy_the_environment_names_is_used_unless_no_proxy_says_otherwise(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """http through the proxy (absolute URLs), https through a CONNECT tunnel (the
    certificate still checked end to end), and no proxy for a host in no_proxy."""
    for name in ("http_proxy", "https_proxy", "all_proxy", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)
    cert, key = _certificate(tmp_path)
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))
    with (
        forwarding_proxy() as (proxy, handled),
        serving(lambda h: _json(h, {"user": "ann"})) as (plain, seen),
        serving(lambda h: _json(h, {"user": "bob"}), tls=(cert, key)) as (secure, _),
    ):
        monkeypatch.setenv("http_proxy", proxy)
        monkeypatch.setenv("https_proxy", proxy)
        with AgentClient(plain, "t") as client:
            assert client.whoami() == {"user": "ann"}
        assert handled == [f"GET {plain}/whoami"]
        assert seen[0][2]["Authorization"] == "Bearer t"
        with AgentClient(secure, "t") as client:
            assert client.whoami() == {"user": "bob"}
        assert handled[1] == f"CONNECT {secure.removeprefix('https://')}"

        monkeypatch.setenv("no_proxy", "127.0.0.1")
        with AgentClient(plain, "t") as client:
            assert client.whoami() == {"user": "ann"}
        assert len(handled) == 2
