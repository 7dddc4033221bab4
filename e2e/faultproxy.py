"""A fault-injecting HTTPS proxy in front of the local cluster's API server.

An operator given `FaultProxy.write_kubeconfig`'s kubeconfig talks to the API server only
through it. The proxy terminates TLS with the API server's own certificate (its names include
127.0.0.1, so the client's usual CA check passes), forwards every request to the real API
server as the cluster's admin (the identity the e2e operator has anyway), and streams each
answer back, watches included.

Requests of the operator's own client (User-Agent `tts-operator`: the reconcile's reads and
writes) can be made to fail on purpose:

- `500`, `503`, `429` (with Retry-After) and `409`: answered by the proxy with a Kubernetes
  Status; the request never reaches the API server;
- `timeout`: forwarded (a write lands), but the answer is held longer than the operator's
  request timeout, so the operator sees a timeout of a request that did happen;
- `reset`: forwarded, then the connection is dropped instead of answered.

kopf's own requests (its watches, peering) always pass: the faults
are aimed at the passes, and kopf retries its own requests. Everything runs in one thread
with its own event loop; the test changes the plan from its thread.
"""

from __future__ import annotations

import asyncio
import json
import random
import re
import ssl
import threading
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import ClientSession, ClientTimeout, TCPConnector, web
from tts_cluster import LOOPBACK, free_port

OPERATOR_AGENT = "tts-operator"
WRITES = frozenset({"POST", "PUT", "PATCH", "DELETE"})
ANSWERED = {"500": 500, "503": 503, "429": 429, "409": 409}
FAULTS = (*ANSWERED, "timeout", "reset")
# Hop-by-hop headers, and those aiohttp sets itself.
DROPPED = frozenset(
    {
        "host", "content-length", "transfer-encoding", "connection", "keep-alive", "upgrade",
        "te", "trailer", "proxy-authorization", "proxy-connection",
    }
)  # fmt: skip
REASONS = {500: "InternalError", 503: "ServiceUnavailable", 429: "TooManyRequests", 409: "Conflict"}


@dataclass
class FaultPlan:
    """Which of the operator's requests fail, and a count of what was done (thread-safe)."""

    write_rate: float = 0.0
    read_rate: float = 0.0
    seed: int = 12
    injected: Counter[str] = field(default_factory=Counter)
    forwarded: Counter[str] = field(default_factory=Counter)
    _forced: list[str] = field(default_factory=list)
    _forced_path: re.Pattern[str] | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)

    def set(self, write_rate: float, read_rate: float = 0.0) -> None:
        with self._lock:
            self.write_rate, self.read_rate = write_rate, read_rate

    def fail_next_writes(self, *faults: str, path: str | None = None) -> None:
        """The operator's next writes (to a path `path`, a regular expression, matches) fail
        with these faults, one each, in order."""
        assert all(f in FAULTS for f in faults), faults
        with self._lock:
            self._forced.extend(faults)
            self._forced_path = re.compile(path) if path else None

    def forced_left(self) -> list[str]:
        with self._lock:
            return list(self._forced)

    def counts(self) -> dict[str, int]:
        """Faults injected, by "METHOD fault"."""
        with self._lock:
            return dict(self.injected)

    def forwarded_counts(self) -> dict[str, int]:
        """The operator's requests seen, reads and writes (watches aside)."""
        with self._lock:
            return dict(self.forwarded)

    def pick(self, method: str, agent: str, watch: bool, path: str) -> str | None:
        """The fault for this request, if any (counted)."""
        if not agent.startswith(OPERATOR_AGENT) or watch:
            return None
        write = method in WRITES
        with self._lock:
            self.forwarded["write" if write else "read"] += 1
            forced_path = self._forced_path
            if write and self._forced and (forced_path is None or forced_path.search(path)):
                fault: str | None = self._forced.pop(0)
            elif self._rng.random() < (self.write_rate if write else self.read_rate):
                fault = self._rng.choice(FAULTS if write else ("500", "503", "timeout"))
            else:
                fault = None
            if fault is not None:
                self.injected[f"{method} {fault}"] += 1
            return fault


class FaultProxy:
    def __init__(
        self,
        upstream: str,
        pki_dir: Path,
        hold_seconds: float,
        plan: FaultPlan | None = None,
    ) -> None:
        self.upstream = upstream.rstrip("/")
        self.pki_dir = pki_dir
        self.hold_seconds = hold_seconds
        self.plan = plan or FaultPlan()
        self.port = free_port()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runner: web.AppRunner | None = None
        self._session: ClientSession | None = None

    @property
    def url(self) -> str:
        return f"https://{LOOPBACK}:{self.port}"

    def start(self) -> None:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(30)

    def stop(self) -> None:
        if self._thread.is_alive():
            asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(30)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)

    def write_kubeconfig(self, cluster_kubeconfig: Path, path: Path) -> Path:
        """The cluster's kubeconfig (the local cluster writes JSON) with the proxy as server."""
        config = json.loads(cluster_kubeconfig.read_text())
        for entry in config["clusters"]:
            entry["cluster"]["server"] = self.url
        path.write_text(json.dumps(config, indent=2))
        return path

    async def _start(self) -> None:
        pki = self.pki_dir
        upstream_tls = ssl.create_default_context(cafile=str(pki / "ca.crt"))
        upstream_tls.load_cert_chain(pki / "admin.crt", pki / "admin.key")
        self._session = ClientSession(
            connector=TCPConnector(ssl=upstream_tls, limit=0),
            auto_decompress=False,
            skip_auto_headers=("Accept-Encoding", "User-Agent", "Content-Type"),
            timeout=ClientTimeout(total=None, sock_connect=10),
        )
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{path:.*}", self._handle)
        # Cancel a handler whose client left (a watch, a held answer), and do not wait for
        # open watches when stopping.
        self._runner = web.AppRunner(
            app, access_log=None, handler_cancellation=True, shutdown_timeout=2
        )
        await self._runner.setup()
        serving_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        serving_tls.load_cert_chain(pki / "apiserver.crt", pki / "apiserver.key")
        site = web.TCPSite(self._runner, LOOPBACK, self.port, ssl_context=serving_tls)
        await site.start()

    async def _stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        assert self._session is not None
        watch = request.query.get("watch") in ("true", "1")
        agent = request.headers.get("User-Agent", "")
        fault = self.plan.pick(request.method, agent, watch, request.path)
        body = await request.read()
        if fault in ANSWERED:
            return answer(ANSWERED[fault])
        headers = {k: v for k, v in request.headers.items() if k.lower() not in DROPPED}
        async with self._session.request(
            request.method,
            self.upstream + request.path_qs,
            headers=headers,
            data=body if body else None,
        ) as upstream:
            reply_headers = {k: v for k, v in upstream.headers.items() if k.lower() not in DROPPED}
            if watch:  # a stream: pass each piece on as it comes
                reply = web.StreamResponse(status=upstream.status, headers=reply_headers)
                await reply.prepare(request)
                try:
                    async for chunk in upstream.content.iter_any():
                        await reply.write(chunk)
                    await reply.write_eof()
                except ConnectionError:  # the watcher left
                    pass
                return reply
            data = await upstream.read()
        if fault == "timeout":
            await asyncio.sleep(self.hold_seconds)  # the client gave up meanwhile
        elif fault == "reset" and request.transport is not None:
            request.transport.abort()
        return web.Response(status=upstream.status, headers=reply_headers, body=data)


def answer(code: int) -> web.Response:
    """A Kubernetes Status, as the API server answers a failed request."""
    status = {
        "kind": "Status",
        "apiVersion": "v1",
        "status": "Failure",
        "message": f"injected by the e2e fault proxy ({code})",
        "reason": REASONS[code],
        "code": code,
    }
    headers = {"Retry-After": "1"} if code == 429 else {}
    return web.json_response(status, status=code, headers=headers)
