"""A small HTTP client for the agent's REST API (what ``htcsim submit``, ``queue``... use).

Why a separate module: scripts and notebooks want the same calls as the
command line without going through typer, and the command line must start
fast, so this module and its transport (``transport.py``, over the standard
library's ``http.client``) import only the standard library: no numpy, no
kernel, no HTTP library to load before a command's one request. Every failure
becomes one ``ClientError`` whose message is a single line a person can act
on: the agent's own ``{"detail": ...}`` for an API error, a hint to start
the agent when nothing listens, a hint about the token when it is refused.

Where the agent is and which token to send are found in this order, key by
key: explicit arguments; ``HTCSIM_URL`` / ``HTCSIM_TOKEN``;
``./htcsim-agent/client.toml`` (written by ``htcsim agent serve`` on its first
start in that directory); the user's ``$XDG_CONFIG_HOME/htcsim/client.toml``,
by default ``~/.config/htcsim/client.toml`` (written too by an agent's first
start when the user has none, so the client finds it from any directory); then
``http://127.0.0.1:8642`` with no token.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from htcsim import __version__
from htcsim.agent.client.transport import Broken, Connection, Response, TimedOut, Unreachable
from htcsim.agent.defaults import user_client_file

DEFAULT_URL = "http://127.0.0.1:8642"
LOCAL_CLIENT_FILE = Path("htcsim-agent") / "client.toml"
"""Relative to the current directory: where a first ``agent serve`` leaves the admin token."""
PAGE_SIZE = 1000
"""Jobs per page of ``GET /jobs`` and ``GET /workflows/{name}`` while following ``next``
(the API allows up to 10,000)."""
LOG_MAX_BYTES = 1 << 26
"""The largest ``tail`` the log route accepts (64 MiB)."""


class ClientError(RuntimeError):
    """A call that failed; ``str()`` is one line for a person, ``status`` the HTTP
    status (None when the agent was not reached), ``field`` the request field at fault."""

    def __init__(self, message: str, status: int | None = None, field: str | None = None) -> None:
        super().__init__(" ".join(message.split()))  # one line, whatever the server sent
        self.status = status
        self.field = field


@dataclass(frozen=True)
class Settings:
    """Where the agent is and the token to send; ``token_source`` names where the
    token came from, so a refusal can say which one to fix."""

    url: str
    token: str | None
    token_source: str


def _read_client_file(path: Path) -> dict[str, Any]:
    """The keys of a client.toml; a missing file is empty, a broken one an error
    (silently skipping it would send the wrong token to the wrong agent)."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise ClientError(f"cannot read {path}: {exc.strerror or exc}") from exc
    import tomllib  # only when there is a file to read (HTCSIM_URL and HTCSIM_TOKEN need none)

    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ClientError(f"{path}: not valid TOML ({exc})") from exc
    return {k: v for k, v in data.items() if k in ("url", "token") and isinstance(v, str)}


def resolve_settings(
    url: str | None = None,
    token: str | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    files: Sequence[Path] | None = None,
) -> Settings:
    """The agent's URL and the token, each from the first source that has it."""
    env = os.environ if environ is None else environ
    found_url, found_token, source = url, token, "the command line"
    if found_url is None and env.get("HTCSIM_URL"):
        found_url = env["HTCSIM_URL"]
    if found_token is None and env.get("HTCSIM_TOKEN"):
        found_token, source = env["HTCSIM_TOKEN"], "HTCSIM_TOKEN"
    paths = files if files is not None else (LOCAL_CLIENT_FILE, user_client_file(env))
    for path in paths:
        if found_url is not None and found_token is not None:
            break
        data = _read_client_file(path)
        found_url = found_url or data.get("url")
        if found_token is None and "token" in data:
            found_token, source = data["token"], str(path)
    return Settings((found_url or DEFAULT_URL).rstrip("/"), found_token, source)


class AgentClient:
    """Synchronous calls to one agent; each method is one route (``jobs`` follows pages)."""

    def __init__(
        self, url: str | None = None, token: str | None = None, *, timeout_s: float = 30.0
    ) -> None:
        """``ClientError`` when the URL found is not an http(s) URL."""
        self.settings = resolve_settings(url, token)
        headers = {"Accept": "application/json", "User-Agent": f"htcsim/{__version__}"}
        if self.settings.token:
            headers["Authorization"] = f"Bearer {self.settings.token}"
        try:
            self._http = Connection(self.settings.url, headers, timeout_s)
        except ValueError as exc:
            raise ClientError(str(exc)) from None

    @property
    def url(self) -> str:
        return self.settings.url

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> AgentClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # ------------------------------------------------------------------ transport

    def _request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        accept: tuple[int, ...] = (),
    ) -> Response:
        """One call; every way it can fail becomes a one-line ClientError (but a
        status in ``accept``, which the caller reads itself)."""
        try:
            response = self._http.request(method, path, params=params, json_body=json)
        except Unreachable as exc:
            if exc.tls:
                raise ClientError(f"no TLS connection to the agent at {self.url}: {exc}") from None
            raise ClientError(
                f"cannot reach the agent at {self.url} (is `htcsim agent serve` running?)"
            ) from None
        except TimedOut:
            raise ClientError(f"the agent at {self.url} did not answer in time") from None
        except Broken as exc:
            raise ClientError(f"talking to the agent at {self.url}: {exc}") from None
        if response.is_success or response.status in accept:
            return response
        raise self._error(response)

    def _error(self, response: Response) -> ClientError:
        status = response.status
        try:
            body = response.json()
        except ValueError:
            body = None
        detail = body.get("detail") if isinstance(body, dict) else None
        field = body.get("field") if isinstance(body, dict) else None
        if not isinstance(detail, str):
            detail = response.reason or "no detail"
        if status == 401:
            where = (
                f"the token from {self.settings.token_source}"
                if self.settings.token
                else "no token was sent"
            )
            return ClientError(
                f"the agent refused the token ({detail}; {where}): set HTCSIM_TOKEN, "
                "or ask the agent's admin for one (`htcsim agent token add USER`)",
                status,
                field,
            )
        return ClientError(
            f"HTTP {status}: {detail}", status, field if isinstance(field, str) else None
        )

    def _json(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
    ) -> Any:
        """The answer's JSON; one line when the answer is not JSON (another server)."""
        response = self._request(method, path, params=params, json=json)
        try:
            return response.json()
        except ValueError:
            raise ClientError(
                f"the answer of {self.url} to {method} {path} is not JSON: is it an htcsim agent?",
                response.status,
            ) from None

    # ------------------------------------------------------------------ jobs

    def submit(self, request: Mapping[str, Any]) -> dict[str, Any]:
        """One job or one array (``JobRequest`` fields); ``{"ids": [...], "array_id": ...}``."""
        result: dict[str, Any] = self._json("POST", "/jobs", json=dict(request))
        return result

    def submit_batch(self, requests: Sequence[Mapping[str, Any]]) -> list[int]:
        """Many jobs, accepted all or none; their ids in request order."""
        result = self._json("POST", "/jobs/batch", json={"jobs": [dict(r) for r in requests]})
        return [int(i) for i in result["ids"]]

    def jobs(
        self,
        *,
        states: Sequence[str] = (),
        user: str | None = None,
        array_id: int | None = None,
        estimate: bool = False,
        fields: Sequence[str] = (),
        page_size: int = PAGE_SIZE,
    ) -> list[dict[str, Any]]:
        """Every matching job in id order (pages followed through ``next``); only the
        ``fields`` named (and the id) when some are: less to send and to read."""
        params: dict[str, Any] = {"limit": page_size, "estimate": str(estimate).lower()}
        if fields:
            params["fields"] = ",".join(fields)
        if states:
            params["state"] = list(states)
        if user is not None:
            params["user"] = user
        if array_id is not None:
            params["array_id"] = array_id
        out: list[dict[str, Any]] = []
        after = 0
        while True:
            page = self._json("GET", "/jobs", params={**params, "after": after})
            out.extend(page["jobs"])
            if page.get("next") is None:
                return out
            after = int(page["next"])

    def job(self, job_id: int) -> dict[str, Any]:
        """One job with its priority factors, estimate, dependencies and environment."""
        result: dict[str, Any] = self._json("GET", f"/jobs/{job_id}")
        return result

    def history(self, job_id: int) -> list[dict[str, Any]]:
        """The job's state changes, oldest first: ``{"time", "state", "cause"}``."""
        return list(self._json("GET", f"/jobs/{job_id}/history")["events"])

    def log(self, job_id: int, stream: str = "stdout", tail_bytes: int = 65536) -> str:
        """The last ``tail_bytes`` of the job's stdout or stderr."""
        params = {"stream": stream, "tail": min(tail_bytes, LOG_MAX_BYTES)}
        return self._request("GET", f"/jobs/{job_id}/log", params=params).text

    def cancel(self, job_id: int) -> list[int]:
        return [int(i) for i in self._json("POST", f"/jobs/{job_id}/cancel")["ids"]]

    def hold(self, job_id: int) -> list[int]:
        return [int(i) for i in self._json("POST", f"/jobs/{job_id}/hold")["ids"]]

    def release(self, job_id: int) -> list[int]:
        return [int(i) for i in self._json("POST", f"/jobs/{job_id}/release")["ids"]]

    def bulk(
        self,
        action: str,
        ids: Sequence[int] = (),
        *,
        array_id: int | None = None,
        user: str | None = None,
        states: Sequence[str] = (),
        name: str | None = None,
    ) -> dict[str, Any]:
        """Cancel, hold or release many jobs in one request: the ``ids`` named, or
        those the filter selects; ``{"ids": acted on, "errors": [{id, status, detail}]}``."""
        body: dict[str, Any] = {"ids": list(ids), "state": list(states)}
        for key, value in (("array_id", array_id), ("user", user), ("name", name)):
            if value is not None:
                body[key] = value
        result: dict[str, Any] = self._json("POST", f"/jobs/{action}", json=body)
        return result

    # ------------------------------------------------------------------ nodes, agent

    def nodes(self) -> list[dict[str, Any]]:
        """Every node: name, state, capacity, free resources, running jobs."""
        return list(self._json("GET", "/nodes")["nodes"])

    def drain(self, name: str) -> str:
        """Stop placing jobs on a node (admin); its new state."""
        return str(self._json("POST", f"/nodes/{name}/drain")["state"])

    def resume(self, name: str) -> str:
        """Put a node back in service (admin); its new state."""
        return str(self._json("POST", f"/nodes/{name}/resume")["state"])

    def whoami(self) -> dict[str, str]:
        """The user, role and group the token stands for."""
        return {k: str(v) for k, v in self._json("GET", "/whoami").items()}

    def cluster(self) -> dict[str, Any]:
        """Jobs and nodes per state, cores, utilization, pass statistics."""
        result: dict[str, Any] = self._json("GET", "/cluster")
        return result

    def policy(self) -> dict[str, Any]:
        """The policy in force: ``{"toml": ..., "policy": {...}}``."""
        result: dict[str, Any] = self._json("GET", "/policy")
        return result

    def put_policy(self, toml_text: str, note: str = "") -> dict[str, Any]:
        """Replace the policy (admin); ``{"audit_id", "policy"}``."""
        result: dict[str, Any] = self._json(
            "PUT", "/policy", json={"toml": toml_text, "note": note}
        )
        return result

    def shadow(self, limit: int = 20) -> dict[str, Any]:
        """Shadow mode: ``{"summary": {...}, "differences": [first ``limit`` jobs]}``."""
        result: dict[str, Any] = self._json("GET", "/shadow", params={"limit": limit})
        return result

    def metrics(self) -> str:
        """Prometheus text exposition."""
        return self._request("GET", "/metrics").text

    def healthz(self) -> dict[str, Any]:
        result: dict[str, Any] = self._json("GET", "/healthz")
        return result

    def health(self) -> dict[str, Any]:
        """/healthz as it answers, 503 included: ``status`` (ok, degraded, down),
        ``reasons``, the shepherd (``detail`` too when down)."""
        result: dict[str, Any] = self._request("GET", "/healthz", accept=(503,)).json()
        return result

    # ------------------------------------------------------------------ workflows

    def submit_workflow(self, workflow: Mapping[str, Any], base_dir: str) -> dict[str, Any]:
        """A parsed pipeline TOML; ``{"name", "ids", "jobs": {job name: id}}``."""
        result: dict[str, Any] = self._json(
            "POST", "/workflows", json={"workflow": dict(workflow), "base_dir": base_dir}
        )
        return result

    def workflow_status(
        self, name: str, user: str | None = None, *, page_size: int = PAGE_SIZE
    ) -> dict[str, Any]:
        """Progress: overall state, counts per state, done fraction, and every job's
        row (pages followed through ``next``; the counts are the first page's)."""
        params: dict[str, Any] = {"limit": page_size} | ({"user": user} if user else {})
        result: dict[str, Any] = self._json("GET", f"/workflows/{name}", params=params)
        after = result.pop("next", None)
        while after is not None:
            page = self._json("GET", f"/workflows/{name}", params={**params, "after": after})
            result["jobs"].extend(page["jobs"])
            after = page.get("next")
        return result
