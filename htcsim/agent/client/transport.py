"""One HTTP/1.1 connection to the agent, through the standard library's ``http.client``.

Why not httpx: the client commands run once per shell command, and importing
httpx (with the command-line extras it loads when click and rich are
installed) costs several times what the whole ``htcsim submit`` may take;
``http.client`` is a fraction of that, and an ``https://`` URL (the agent
behind a TLS reverse proxy) loads ``ssl`` only then. What the agent's client
needs is small: a method, a path, query parameters, a JSON body, the token's
header, a timeout, one connection kept alive across the calls of a command.

Certificates are checked against the system's CA store (``SSL_CERT_FILE`` and
``SSL_CERT_DIR`` are honoured, as OpenSSL does). A proxy named by the
environment (``https_proxy``, ``http_proxy``, ``all_proxy``, with ``no_proxy``)
is used as urllib and curl use it, so a site's proxy settings mean the same
to the client as to its other tools.

Failures are three exceptions that ``htcsim.agent.client.http`` turns into
its one-line messages: ``Unreachable`` (nothing accepted the connection),
``TimedOut``, and ``Broken`` (the exchange failed half-way).
"""

from __future__ import annotations

import http.client
import json
import os
import select
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, unquote, urlencode, urlsplit

_PROXY_VARIABLES = frozenset({"http_proxy", "https_proxy", "all_proxy"})


class Unreachable(Exception):
    """The connection was refused or failed; ``tls`` when it was the TLS handshake
    (a certificate the system does not trust, a plain-http port)."""

    def __init__(self, reason: str, *, tls: bool = False) -> None:
        super().__init__(reason)
        self.tls = tls


class TimedOut(Exception):
    """The agent did not accept or answer within the timeout."""


class Broken(Exception):
    """The exchange failed after the connection was made (a reset, a malformed answer)."""


@dataclass(frozen=True)
class Response:
    """An answer: status, reason phrase and the whole body."""

    status: int
    reason: str
    body: bytes

    @property
    def is_success(self) -> bool:
        return 200 <= self.status < 300

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")

    def json(self) -> Any:
        """The body as JSON; ``ValueError`` when it is not."""
        return json.loads(self.body)


@dataclass(frozen=True)
class _Target:
    scheme: str
    host: str
    port: int
    prefix: str
    """The URL's path (an agent behind a reverse proxy at ``https://host/htcsim``)."""


def _parse(url: str) -> _Target:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{url}: not an http:// or https:// URL")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as exc:  # a port that is not a number, or out of range
        raise ValueError(f"{url}: {exc}") from None
    return _Target(parts.scheme, parts.hostname, port, parts.path.rstrip("/"))


def _proxy_for(target: _Target) -> str | None:
    """The proxy URL the environment names for ``target``, else None; urllib reads the
    variables (and ``no_proxy``) only when one of them is set."""
    if not any(name.lower() in _PROXY_VARIABLES for name in os.environ):
        return None
    import urllib.request

    proxies = urllib.request.getproxies_environment()
    # no_proxy; defined on every platform, though typeshed does not list it
    if urllib.request.proxy_bypass_environment(target.host, proxies):  # type: ignore[attr-defined]
        return None
    proxy = proxies.get(target.scheme) or proxies.get("all")
    if not proxy:
        return None
    return proxy if "://" in proxy else f"http://{proxy}"


def _is_tls_error(exc: OSError) -> bool:
    ssl = sys.modules.get("ssl")  # loaded for an https URL only
    return ssl is not None and isinstance(exc, ssl.SSLError)


class Connection:
    """Calls to one base URL over one kept-alive connection (reopened when the agent
    closed it between two calls); not thread-safe, as a command needs none."""

    def __init__(self, url: str, headers: Mapping[str, str], timeout_s: float) -> None:
        """``ValueError`` when ``url`` is not an http(s) URL."""
        self._target = _parse(url)
        self._headers = dict(headers)
        self._timeout_s = timeout_s
        self._absolute = False  # True for plain http through a proxy (absolute request URLs)
        self._conn = self._connection()

    def _connection(self) -> http.client.HTTPConnection:
        target = self._target
        proxy = _proxy_for(target)
        host, port = target.host, target.port
        tunnel_headers: dict[str, str] = {}
        if proxy is not None:
            via = _parse(proxy)
            host, port = via.host, via.port
            auth = urlsplit(proxy)
            if auth.username is not None:
                import base64

                pair = f"{unquote(auth.username)}:{unquote(auth.password or '')}"
                credentials = base64.b64encode(pair.encode()).decode()
                tunnel_headers["Proxy-Authorization"] = f"Basic {credentials}"
        if target.scheme == "https":
            import ssl

            conn: http.client.HTTPConnection = http.client.HTTPSConnection(
                host, port, timeout=self._timeout_s, context=ssl.create_default_context()
            )
            if proxy is not None:
                conn.set_tunnel(target.host, target.port, headers=tunnel_headers)
            return conn
        conn = http.client.HTTPConnection(host, port, timeout=self._timeout_s)
        if proxy is not None:
            self._absolute = True
            self._headers.update(tunnel_headers)
        return conn

    def close(self) -> None:
        self._conn.close()

    def _reopen_if_closed_by_peer(self) -> None:
        """An idle kept-alive socket that reads as ready was closed by the agent (or holds
        garbage): start the next call on a fresh one rather than fail on it."""
        sock = self._conn.sock
        if sock is not None and select.select([sock], [], [], 0)[0]:
            self._conn.close()

    def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        json_body: Any = None,
    ) -> Response:
        """One call; ``Unreachable``, ``TimedOut`` or ``Broken`` when it fails."""
        target = self._target
        url = quote(target.prefix + path, safe="/")
        if params:
            url += "?" + urlencode(params, doseq=True)
        if self._absolute:
            url = f"{target.scheme}://{target.host}:{target.port}{url}"
        headers = dict(self._headers)
        body = None
        if json_body is not None:
            body = json.dumps(json_body, ensure_ascii=False, allow_nan=False).encode()
            headers["Content-Type"] = "application/json"
        self._reopen_if_closed_by_peer()
        conn = self._conn
        if conn.sock is None:
            try:
                conn.connect()
            except TimeoutError:
                raise TimedOut() from None
            except OSError as exc:  # refused, no route, unknown host, TLS handshake
                conn.close()
                raise Unreachable(str(exc), tls=_is_tls_error(exc)) from exc
        try:
            conn.request(method, url, body=body, headers=headers)
            answer = conn.getresponse()
            data = answer.read()
        except TimeoutError:
            conn.close()
            raise TimedOut() from None
        except (http.client.HTTPException, OSError) as exc:
            conn.close()
            raise Broken(str(exc) or type(exc).__name__) from exc
        return Response(answer.status, answer.reason, data)
