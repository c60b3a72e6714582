"""A light HTTP/1.1 load client for the agent's submit benchmarks.

Why not httpx or requests: on a 2-core machine a client that spends a
millisecond of CPU per request competes with the agent it measures. This
one sends one request it built once (bytes), over keep-alive connections,
and reads each answer by its ``Content-Length`` (the agent never chunks a
JSON answer): a few microseconds of CPU per request. ``closed_loop`` drives
many connections from one thread with ``selectors``: each connection is a
client that sends its next request when its previous answer has arrived
(closed loop, as many clients each submitting as fast as they are
answered), so the server sees exactly that many requests in flight. The
CPU the client itself spent is measured (``time.thread_time``) and
reported next to the figures.
"""

from __future__ import annotations

import json
import selectors
import socket
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit


def request_bytes(url: str, token: str, path: str, body: Any, headers: dict[str, str]) -> bytes:
    """One POST with a JSON body, keep-alive, as bytes to send as they are."""
    parts = urlsplit(url)
    data = json.dumps(body).encode()
    lines = [
        f"POST {path} HTTP/1.1",
        f"Host: {parts.netloc}",
        f"Authorization: Bearer {token}",
        "Content-Type: application/json",
        f"Content-Length: {len(data)}",
        *(f"{k}: {v}" for k, v in headers.items()),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + data


def connect(url: str) -> socket.socket:
    parts = urlsplit(url)
    sock = socket.create_connection((parts.hostname, parts.port or 80), timeout=60.0)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


class Answer:
    """Bytes of one HTTP answer as they arrive; ``done`` once the whole body is in."""

    def __init__(self) -> None:
        self.buf = b""
        self.status = 0
        self.body = b""
        self._need = -1
        self._head = 0

    def feed(self, data: bytes) -> bool:
        """Add received bytes; whether the answer is complete (extra bytes are an error)."""
        self.buf += data
        if self._need < 0:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return False
            head = self.buf[:end].decode("latin-1").split("\r\n")
            self.status = int(head[0].split()[1])
            length = next(
                (
                    int(h.split(":", 1)[1])
                    for h in head[1:]
                    if h.lower().startswith("content-length")
                ),
                None,
            )
            if length is None:
                raise ValueError(f"an answer without Content-Length: {head}")
            self._head = end + 4
            self._need = self._head + length
        if len(self.buf) < self._need:
            return False
        if len(self.buf) > self._need:
            raise ValueError("more bytes than the answer's Content-Length (pipelining?)")
        self.body = self.buf[self._head :]
        return True


def roundtrip(sock: socket.socket, request: bytes) -> Answer:
    """Send one request on a keep-alive connection and read its whole answer."""
    sock.sendall(request)
    answer = Answer()
    while True:
        data = sock.recv(65536)
        if not data:
            raise ConnectionError("the agent closed the connection")
        if answer.feed(data):
            return answer


@dataclass
class LoadResult:
    """What ``closed_loop`` measured."""

    clients: int
    requests: int
    elapsed_s: float
    client_cpu_s: float
    statuses: dict[int, int] = field(default_factory=dict)
    ids: list[int] = field(default_factory=list)

    @property
    def accepted(self) -> int:
        return self.statuses.get(201, 0)

    @property
    def per_second(self) -> float:
        return self.accepted / self.elapsed_s


def closed_loop(url: str, request: bytes, clients: int, total: int) -> LoadResult:
    """``total`` requests from ``clients`` keep-alive connections, each with one in
    flight at a time, from this one thread; the ids of 201 answers are collected."""
    sel = selectors.DefaultSelector()
    socks = [connect(url) for _ in range(clients)]
    answers: dict[socket.socket, Answer] = {}
    sent = done = 0
    statuses: dict[int, int] = {}
    ids: list[int] = []
    cpu0, t0 = time.thread_time(), time.perf_counter()
    for sock in socks:
        if sent < total:
            sock.sendall(request)
            sent += 1
            answers[sock] = Answer()
            sel.register(sock, selectors.EVENT_READ)
    while done < total:
        for key, _ in sel.select(timeout=60.0) or [(None, 0)]:
            if key is None:
                raise TimeoutError(f"no answer in 60 s ({done} of {total} done)")
            sock = key.fileobj
            assert isinstance(sock, socket.socket)
            data = sock.recv(65536)
            if not data:
                raise ConnectionError("the agent closed a connection")
            answer = answers[sock]
            if not answer.feed(data):
                continue
            done += 1
            statuses[answer.status] = statuses.get(answer.status, 0) + 1
            if answer.status == 201:
                ids += json.loads(answer.body)["ids"]
            if sent < total:
                sock.sendall(request)
                sent += 1
                answers[sock] = Answer()
            else:
                sel.unregister(sock)
    elapsed, cpu = time.perf_counter() - t0, time.thread_time() - cpu0
    sel.close()
    for sock in socks:
        sock.close()
    return LoadResult(clients, total, elapsed, cpu, statuses, ids)
