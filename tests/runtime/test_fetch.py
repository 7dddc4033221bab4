"""The model download (`python3 -m tts_runtime.fetch`, the model-fetch init container),
against real HTTP and HTTPS servers on 127.0.0.1 started by the tests. Nothing here
contacts another address: names other than 127.0.0.1 (model.test, cdn.test) are resolved
by a resolver the test passes in, and the system resolver is made to fail where they are
used, so a download that tried to resolve one for real would fail the test, not send a
DNS query.

What a loopback-only test can prove about the internal-address rule, and how:
- the rule itself (which addresses are internal) is `address_problem`, tested on its own;
- the URI's own host is refused when internal (127.0.0.1 without --allow-private-hosts);
- a redirect is judged by that rule even when the URI's host was allowed: with
  --allow-private-hosts (the test's only way to reach its own server), a redirect to
  another host that resolves to 127.0.0.1 is refused, and a redirect to a host with one
  public and one private address is refused (every address checked, not the first);
- that a redirect to a host whose addresses all pass IS followed, to the address that was
  checked, is shown with the rule replaced by one that lets 127.0.0.1 stand for a public
  address (a real public address cannot be contacted here).
"""

from __future__ import annotations

import hashlib
import os
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from tts_runtime.fetch import (
    PREFIX,
    Fetcher,
    FetchError,
    Hub,
    Rules,
    address_problem,
    config_url,
    display,
    ssl_context,
)

MODEL = bytes(range(256)) * 200  # 51200 bytes
CONFIG = b'{"audio": {"sample_rate": 22050}}'
MODEL_SHA = hashlib.sha256(MODEL).hexdigest()
CONFIG_SHA = hashlib.sha256(CONFIG).hexdigest()
WRONG_SHA = "0" * 64

Route = Callable[[BaseHTTPRequestHandler], None]


# ---------------------------------------------------------------- servers on 127.0.0.1


def body(data: bytes, length: bool = True) -> Route:
    """200 with `data`; without Content-Length the body ends when the connection closes."""

    def route(h: BaseHTTPRequestHandler) -> None:
        h.send_response(200)
        if length:
            h.send_header("Content-Length", str(len(data)))
        else:
            h.send_header("Connection", "close")
            h.close_connection = True
        h.end_headers()
        h.wfile.write(data)

    return route


def redirect(location: str, code: int = 302) -> Route:
    def route(h: BaseHTTPRequestHandler) -> None:
        h.send_response(code)
        h.send_header("Location", location)
        h.send_header("Content-Length", "0")
        h.end_headers()

    return route


def drip(total: int, every: float, header_only: bool = False, stall: float = 0) -> Route:
    """Sends one byte every `every` seconds (of the body, or of the headers), for at most
    30 s: a server that never goes quiet long enough for a per-read timeout. With `stall`,
    the body announces one byte more than it sends, and the server then waits that long."""

    def route(h: BaseHTTPRequestHandler) -> None:
        h.close_connection = True
        stop = time.monotonic() + 30
        try:
            if header_only:
                h.wfile.write(b"HTTP/1.1 200 OK\r\n")
                chunk = b"X-Slow: " + b"a" * 10_000
            else:
                h.send_response(200)
                h.send_header("Content-Length", str(total + 1 if stall else total))
                h.end_headers()
                chunk = b"x" * total
            for byte in chunk:
                if time.monotonic() > stop:
                    return
                h.wfile.write(bytes([byte]))
                h.wfile.flush()
                time.sleep(every)
            time.sleep(stall)
        except OSError:
            return

    return route


def stall_after_headers(h: BaseHTTPRequestHandler) -> None:
    h.send_response(200)
    h.send_header("Content-Length", "100")
    h.end_headers()
    h.wfile.flush()
    time.sleep(5)


def truncated(h: BaseHTTPRequestHandler) -> None:
    h.send_response(200)
    h.send_header("Content-Length", "1000")
    h.end_headers()
    h.wfile.write(b"x" * 500)
    h.close_connection = True


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:
        self.server.requests.append((self.path, self.headers.get("Host", "")))
        route = self.server.routes.get(self.path)
        if route is None:
            self.send_error(404)
            return
        route(self)

    def log_message(self, *args: Any) -> None:
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, context: ssl.SSLContext | None) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.context = context
        self.routes: dict[str, Route] = {}
        self.requests: list[tuple[str, str]] = []

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that gives up (a refused certificate, a cap) is what tests expect

    def get_request(self) -> tuple[socket.socket, Any]:
        sock, addr = super().get_request()
        if self.context is not None:  # the handshake happens in the handler's thread
            sock = self.context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        return sock, addr


@dataclass
class Site:
    server: _Server
    scheme: str

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"{self.scheme}://{host}:{self.port}{path}"

    @property
    def routes(self) -> dict[str, Route]:
        return self.server.routes

    @property
    def paths(self) -> list[str]:
        return [path for path, _ in self.server.requests]


@dataclass(frozen=True)
class Tls:
    cert: Path
    key: Path


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Tls:
    """A self-signed certificate for 127.0.0.1, localhost, model.test and cdn.test."""
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
            "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2", "-subj", "/CN=localhost",
            "-addext", "subjectAltName=DNS:localhost,DNS:model.test,DNS:cdn.test,IP:127.0.0.1",
            "-keyout", str(key), "-out", str(cert),
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return Tls(cert, key)


@pytest.fixture
def serve(tls: Tls) -> Iterator[Callable[[str], Site]]:
    """Starts servers (`serve("https")`, `serve("http")`) serving MODEL and CONFIG at
    /v/en.onnx(.json); stops them after the test."""
    started: list[tuple[_Server, threading.Thread]] = []

    def start(scheme: str) -> Site:
        context = None
        if scheme == "https":
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(tls.cert, tls.key)
        server = _Server(context)
        server.routes.update({"/v/en.onnx": body(MODEL), "/v/en.onnx.json": body(CONFIG)})
        thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
        thread.start()
        started.append((server, thread))
        return Site(server, scheme)

    yield start
    for server, thread in started:
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.fixture
def https(serve: Callable[[str], Site]) -> Site:
    return serve("https")


@pytest.fixture
def no_system_dns(monkeypatch: pytest.MonkeyPatch) -> None:
    """The system resolver fails: a name must come from the test's resolver."""

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError(f"system resolver called for {args[:1]}")

    monkeypatch.setattr(socket, "getaddrinfo", refuse)


@dataclass
class Run:
    """A Fetcher set up for the loopback servers, recording its log lines."""

    tls: Tls
    dest: Path
    log: list[str] = field(default_factory=list)

    def __call__(
        self,
        uri: str,
        sha256: str | None = None,
        config_sha256: str | None = None,
        *,
        resolve: dict[str, list[str]] | None = None,
        check_address: Callable[[str], str | None] = address_problem,
        hub: Hub | None = None,
        **rules: Any,
    ) -> None:
        rules.setdefault("allow_private_hosts", True)  # the servers are on loopback
        rules.setdefault("ca_file", str(self.tls.cert))
        fetcher = Fetcher(
            Rules(**rules), check_address=check_address, log=self.log.append, hub=hub or Hub()
        )
        if resolve is not None:
            names = resolve
            fetcher.resolve = lambda host, port: names.get(host) or [host]
        fetcher.fetch_model(uri, self.dest, sha256, config_sha256)

    def fails(self, uri: str, *args: Any, **kwargs: Any) -> str:
        """The failure's last line (what the pod's termination message holds)."""
        with pytest.raises(FetchError) as err:
            self(uri, *args, **kwargs)
        return err.value.line()

    def files(self) -> list[str]:
        return sorted(p.name for p in self.dest.iterdir()) if self.dest.exists() else []


@pytest.fixture
def run(tls: Tls, tmp_path: Path) -> Run:
    return Run(tls, tmp_path / "models")


# ---------------------------------------------------------------- what works


def test_downloads_both_files_over_https_and_checks_both_digests(https: Site, run: Run) -> None:
    run(https.url("/v/en.onnx"), MODEL_SHA, CONFIG_SHA.upper())
    assert run.files() == ["model.onnx", "model.onnx.json"]
    assert (run.dest / "model.onnx").read_bytes() == MODEL
    assert (run.dest / "model.onnx.json").read_bytes() == CONFIG
    assert https.paths == ["/v/en.onnx", "/v/en.onnx.json"]
    assert f"model.onnx: 51200 bytes, sha256 {MODEL_SHA}" in run.log  # to pin it in the spec


def test_the_config_url_adds_json_to_the_path_and_keeps_the_query() -> None:
    assert config_url("https://h/v/en.onnx") == "https://h/v/en.onnx.json"
    assert config_url("https://h/v/en.onnx?x=1#f") == "https://h/v/en.onnx.json?x=1"


def test_credentials_in_the_uri_are_never_logged() -> None:
    assert display("https://user:secret@h:8443/v.onnx") == "https://h:8443/v.onnx"
    line = FetchError("HTTP 403 Forbidden", "https://user:secret@h/v.onnx").line()
    assert line == f"{PREFIX}HTTP 403 Forbidden for https://h/v.onnx"


# ---------------------------------------------------------------- https only


def test_plain_http_is_refused_without_the_opt_in(serve: Callable[[str], Site], run: Run) -> None:
    http = serve("http")
    line = run.fails(http.url("/v/en.onnx"))
    assert line == (
        f"{PREFIX}plain http:// is not allowed (the operator's policy.allowHttpModelUris); "
        f"use https:// for {http.url('/v/en.onnx')}"
    )
    assert http.paths == []  # refused before any connection
    run(http.url("/v/en.onnx"), allow_http=True)
    assert run.files() == ["model.onnx", "model.onnx.json"]


def test_only_http_and_https_urls(run: Run) -> None:
    assert "unsupported URL scheme 'ftp'" in run.fails("ftp://127.0.0.1/v.onnx")


# ---------------------------------------------------------------- sha256


def test_a_model_whose_sha256_differs_is_not_kept(https: Site, run: Run) -> None:
    uri = https.url("/v/en.onnx")
    line = run.fails(uri, WRONG_SHA)
    assert line == f"{PREFIX}sha256 of model.onnx is {MODEL_SHA}, expected {WRONG_SHA} for {uri}"
    assert run.files() == []  # neither model.onnx nor model.onnx.part


def test_a_config_whose_sha256_differs_is_not_kept(https: Site, run: Run) -> None:
    line = run.fails(https.url("/v/en.onnx"), MODEL_SHA, WRONG_SHA)
    assert f"sha256 of model.onnx.json is {CONFIG_SHA}, expected {WRONG_SHA}" in line
    assert line.endswith(f"for {https.url('/v/en.onnx.json')}")
    assert run.files() == ["model.onnx"]


# ---------------------------------------------------------------- the size cap


def test_a_content_length_over_the_cap_fails_before_the_body(https: Site, run: Run) -> None:
    https.routes["/v/big.onnx"] = body(b"x" * 100_000)
    line = run.fails(https.url("/v/big.onnx"), max_bytes=10_000)
    assert line == (
        f"{PREFIX}model.onnx is 100000 bytes (Content-Length), over the download cap of "
        f"10000 bytes for {https.url('/v/big.onnx')}"
    )
    assert run.files() == []


def test_a_body_without_content_length_stops_at_the_cap(https: Site, run: Run) -> None:
    https.routes["/v/big.onnx"] = body(b"x" * 100_000, length=False)
    line = run.fails(https.url("/v/big.onnx"), max_bytes=10_000)
    assert "model.onnx passed the download cap of 10000 bytes" in line
    assert run.files() == []
    run(https.url("/v/en.onnx"), max_bytes=len(MODEL) + len(CONFIG))  # exactly the cap: fine


def test_the_cap_counts_both_files(https: Site, run: Run) -> None:
    line = run.fails(https.url("/v/en.onnx"), max_bytes=len(MODEL) + len(CONFIG) - 1)
    assert "model.onnx.json is 33 bytes (Content-Length), over the download cap" in line
    assert run.files() == ["model.onnx"]


def test_a_body_shorter_than_its_content_length_is_not_kept(https: Site, run: Run) -> None:
    https.routes["/v/cut.onnx"] = truncated
    line = run.fails(https.url("/v/cut.onnx"))
    assert "connection closed after 500 of 1000 bytes of model.onnx" in line
    assert run.files() == []


# ---------------------------------------------------------------- one overall deadline


def test_a_dripping_server_hits_the_overall_deadline(https: Site, run: Run) -> None:
    """One byte every 50 ms: no read ever waits long, only the whole download is too slow."""
    https.routes["/v/slow.onnx"] = drip(10_000, 0.05)
    began = time.monotonic()
    line = run.fails(https.url("/v/slow.onnx"), deadline_seconds=2)
    took = time.monotonic() - began
    assert "not done within the 2 s deadline" in line, line
    assert line.endswith(f"for {https.url('/v/slow.onnx')}")
    assert 1.9 <= took < 4, took
    assert run.files() == []


def test_the_deadline_bounds_a_tls_handshake_that_never_comes(run: Run) -> None:
    with socket.socket() as listener:  # accepts TCP (the kernel's backlog), never answers
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        uri = f"https://127.0.0.1:{listener.getsockname()[1]}/v/en.onnx"
        began = time.monotonic()
        line = run.fails(uri, deadline_seconds=1)
    assert "not done within the 1 s deadline" in line, line
    assert time.monotonic() - began < 3


def test_no_read_waits_past_the_deadline(https: Site, run: Run) -> None:
    """Four bytes, the last at 1.2 s, then silence: the read after it may wait only the 0.8 s
    left of the 2 s deadline, not the 1.5 s idle timeout (that would end at 2.7 s)."""
    https.routes["/v/stall.onnx"] = drip(4, 0.4, stall=5)
    began = time.monotonic()
    line = run.fails(https.url("/v/stall.onnx"), deadline_seconds=2, idle_timeout=1.5)
    took = time.monotonic() - began
    assert "not done within the 2 s deadline (4 bytes received)" in line, line
    assert 1.9 <= took < 2.45, took


def test_a_silent_server_fails_on_the_idle_timeout_first(https: Site, run: Run) -> None:
    https.routes["/v/stall.onnx"] = stall_after_headers
    line = run.fails(https.url("/v/stall.onnx"), idle_timeout=0.5, deadline_seconds=30)
    assert "timed out (no answer for 0.5 s)" in line


# ---------------------------------------------------------------- redirects


def test_a_redirect_on_the_same_host_is_followed(https: Site, run: Run) -> None:
    https.routes["/latest.onnx"] = redirect("/v/en.onnx")
    https.routes["/latest.onnx.json"] = redirect(https.url("/v/en.onnx.json"), 301)
    run(https.url("/latest.onnx"), MODEL_SHA)
    assert (run.dest / "model.onnx").read_bytes() == MODEL
    assert f"redirected to {https.url('/v/en.onnx')}" in run.log


def test_a_redirect_from_https_to_http_is_refused(
    serve: Callable[[str], Site], https: Site, run: Run
) -> None:
    http = serve("http")
    https.routes["/v/en.onnx"] = redirect(http.url("/v/en.onnx"))
    line = run.fails(https.url("/v/en.onnx"), allow_http=True)  # even with http allowed
    assert line == (
        f"{PREFIX}redirect from https to http refused ({http.url('/v/en.onnx')}) "
        f"for {https.url('/v/en.onnx')}"
    )
    assert http.paths == []
    assert run.files() == []


def test_a_redirect_to_another_scheme_is_refused(https: Site, run: Run) -> None:
    https.routes["/v/en.onnx"] = redirect("file:///etc/passwd")
    assert "redirect to file:///etc/passwd refused: not http(s)" in run.fails(
        https.url("/v/en.onnx")
    )


def test_an_http_uri_may_be_redirected_to_https(
    serve: Callable[[str], Site], https: Site, run: Run
) -> None:
    http = serve("http")
    http.routes["/v/en.onnx"] = redirect(https.url("/v/en.onnx"))
    http.routes["/v/en.onnx.json"] = redirect(https.url("/v/en.onnx.json"))
    run(http.url("/v/en.onnx"), MODEL_SHA, allow_http=True)
    assert https.paths == ["/v/en.onnx", "/v/en.onnx.json"]


def test_a_redirect_to_another_host_on_a_loopback_address_is_refused(
    serve: Callable[[str], Site], https: Site, run: Run, no_system_dns: None
) -> None:
    """The URI's own host (127.0.0.1) is allowed here (--allow-private-hosts); the redirect
    target's is not: cdn.test resolves to 127.0.0.1, a loopback address."""
    cdn = serve("https")
    https.routes["/v/en.onnx"] = redirect(cdn.url("/v/en.onnx", host="cdn.test"))
    line = run.fails(https.url("/v/en.onnx"), resolve={"cdn.test": ["127.0.0.1"]})
    assert line == (
        f"{PREFIX}redirect to cdn.test refused: 127.0.0.1 is a loopback address "
        f"for {https.url('/v/en.onnx')}"
    )
    assert cdn.paths == []


def test_a_redirect_to_a_private_ip_literal_is_refused(https: Site, run: Run) -> None:
    https.routes["/v/en.onnx"] = redirect("https://169.254.169.254/latest/meta-data/")
    line = run.fails(https.url("/v/en.onnx"))
    assert "redirect to 169.254.169.254 refused: 169.254.169.254 is a link-local address" in line


def test_every_address_of_a_redirect_target_is_checked(
    serve: Callable[[str], Site], https: Site, run: Run, no_system_dns: None
) -> None:
    """cdn.test has a 'public' address (127.0.0.1 stands for one) and a private one: refused,
    although a download that checked only the first address would succeed."""
    cdn = serve("https")
    https.routes["/v/en.onnx"] = redirect(cdn.url("/v/en.onnx", host="cdn.test"))

    def public_loopback(address: str) -> str | None:
        return None if address == "127.0.0.1" else address_problem(address)

    line = run.fails(
        https.url("/v/en.onnx"),
        resolve={"cdn.test": ["127.0.0.1", "10.1.2.3"]},
        check_address=public_loopback,
    )
    assert "redirect to cdn.test refused: 10.1.2.3 is a private address" in line
    assert cdn.paths == []


def test_a_redirect_whose_addresses_pass_is_followed_to_the_checked_address(
    serve: Callable[[str], Site], https: Site, run: Run, no_system_dns: None
) -> None:
    """With the rule replaced (127.0.0.1 standing for a public address), the redirect to
    cdn.test is followed: to the address the resolver gave (cdn.test has no other), with
    the certificate checked for cdn.test and the Host header naming it."""
    cdn = serve("https")
    https.routes["/v/en.onnx"] = redirect(cdn.url("/v/en.onnx", host="cdn.test"))
    https.routes["/v/en.onnx.json"] = redirect(cdn.url("/v/en.onnx.json", host="cdn.test"))
    run(
        https.url("/v/en.onnx"),
        MODEL_SHA,
        resolve={"cdn.test": ["127.0.0.1"]},
        check_address=lambda address: None,
    )
    assert cdn.server.requests == [
        ("/v/en.onnx", f"cdn.test:{cdn.port}"),
        ("/v/en.onnx.json", f"cdn.test:{cdn.port}"),
    ]


def test_redirects_are_limited(https: Site, run: Run) -> None:
    https.routes["/loop"] = redirect("/loop")
    assert "more than 5 redirects" in run.fails(https.url("/loop"))
    assert len(https.paths) == 6


# ---------------------------------------------------------------- the URI's own host


def test_an_internal_model_host_is_refused_without_the_opt_in(https: Site, run: Run) -> None:
    line = run.fails(https.url("/v/en.onnx"), allow_private_hosts=False)
    assert line == (
        f"{PREFIX}127.0.0.1 is a loopback address, not allowed for the model's host "
        f"(the operator's policy.allowPrivateModelHosts) for {https.url('/v/en.onnx')}"
    )
    assert https.paths == []


def test_a_model_host_name_is_judged_by_every_address_it_resolves_to(
    https: Site, run: Run, no_system_dns: None
) -> None:
    uri = https.url("/v/en.onnx", host="model.test")
    line = run.fails(
        uri,
        allow_private_hosts=False,
        resolve={"model.test": ["127.0.0.1"]},
    )
    assert "model.test resolves to 127.0.0.1, 127.0.0.1 is a loopback address" in line
    assert https.paths == []
    run(uri, MODEL_SHA, resolve={"model.test": ["127.0.0.1"]})  # allowed: to that address
    assert https.server.requests[0] == ("/v/en.onnx", f"model.test:{https.port}")


@pytest.mark.parametrize(
    ("address", "problem"),
    [
        ("127.0.0.1", "a loopback address"),
        ("127.8.9.10", "a loopback address"),
        ("::1", "a loopback address"),
        ("0.0.0.0", "an unspecified address"),
        ("::", "an unspecified address"),
        ("10.0.0.1", "a private address"),
        ("172.16.5.4", "a private address"),
        ("192.168.1.1", "a private address"),
        ("fd00::1", "a private address"),
        ("169.254.169.254", "a link-local address"),  # cloud metadata
        ("fe80::1%eth0", "a link-local address"),
        ("224.0.0.1", "a multicast address"),
        ("ff02::1", "a multicast address"),
        ("fec0::1", "a site-local address"),
        ("100.64.0.1", "a non-public address"),  # carrier-grade NAT
        ("::ffff:127.0.0.1", "a loopback address"),  # IPv4-mapped
        ("::ffff:10.0.0.1", "a private address"),
        ("64:ff9b::a00:1", "a private address"),  # NAT64 of 10.0.0.1
        ("2002:a9fe:a9fe::", "a link-local address"),  # 6to4 of 169.254.169.254
        ("8.8.8.8", None),
        ("2606:4700:4700::1111", None),
        ("64:ff9b::808:808", None),  # NAT64 of 8.8.8.8
    ],
)
def test_which_addresses_are_internal(address: str, problem: str | None) -> None:
    assert address_problem(address) == problem


# ---------------------------------------------------------------- what failures say


def test_an_http_error_says_which_url(https: Site, run: Run) -> None:
    assert run.fails(https.url("/v/missing.onnx")) == (
        f"{PREFIX}HTTP 404 Not Found for {https.url('/v/missing.onnx')}"
    )
    https.routes["/v/noconfig.onnx"] = body(b"onnx")
    assert run.fails(https.url("/v/noconfig.onnx")) == (
        f"{PREFIX}HTTP 404 Not Found for {https.url('/v/noconfig.onnx.json')}"
    )
    assert run.files() == ["model.onnx"]


def test_a_refused_connection_says_so(run: Run) -> None:
    with socket.socket() as sock:  # a port nothing listens on once this socket is closed
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    uri = f"https://127.0.0.1:{port}/v/en.onnx"
    assert run.fails(uri) == f"{PREFIX}connection refused for {uri}"


def test_an_untrusted_certificate_is_refused(https: Site, run: Run) -> None:
    line = run.fails(https.url("/v/en.onnx"), ca_file=None)  # the system's CAs only
    assert "TLS certificate of 127.0.0.1 not accepted: self-signed certificate" in line
    assert https.paths == []


def test_a_name_that_does_not_resolve_says_so(run: Run) -> None:
    def nowhere(host: str, port: int) -> list[str]:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    fetcher = Fetcher(Rules(), log=run.log.append)
    fetcher.resolve = nowhere
    with pytest.raises(FetchError) as err:
        fetcher.fetch_model("https://model.test/v.onnx", run.dest)
    assert err.value.line() == (
        f"{PREFIX}cannot resolve model.test (Name or service not known) "
        "for https://model.test/v.onnx"
    )


def test_certifi_stands_in_for_a_missing_system_ca_store(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, tls: Tls
) -> None:
    certifi = pytest.importorskip("certifi")
    loaded: list[str | None] = []
    real = ssl.create_default_context

    def spy(cafile: str | None = None) -> ssl.SSLContext:
        loaded.append(cafile)
        return real(cafile=cafile)

    monkeypatch.setattr(ssl, "create_default_context", spy)
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)

    def system_store(cafile: str) -> None:
        paths = ssl.DefaultVerifyPaths(cafile, cafile, "SSL_CERT_FILE", cafile, "SSL_CERT_DIR",
                                       cafile)  # fmt: skip
        monkeypatch.setattr(ssl, "get_default_verify_paths", lambda: paths)

    system_store(str(tls.cert))  # a system store exists: OpenSSL's defaults
    ssl_context()
    ssl_context(str(tls.cert))
    system_store(str(tmp_path / "none"))  # none: certifi's bundle
    ssl_context()
    assert loaded == [None, str(tls.cert), certifi.where()]


# ---------------------------------------------------------------- the init container's command


def cli(*args: str, timeout: float = 30, **env: str) -> subprocess.CompletedProcess[str]:
    """`python3 -m tts_runtime.fetch ARGS`, as the init container runs it."""
    environ = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    environ.update(env)
    return subprocess.run(
        [sys.executable, "-m", "tts_runtime.fetch", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=environ,
    )


def last_line(done: subprocess.CompletedProcess[str]) -> str:
    return (done.stdout + done.stderr).strip().splitlines()[-1]


def test_the_command_downloads_with_the_ca_from_ssl_cert_file(
    https: Site, tls: Tls, tmp_path: Path
) -> None:
    dest = tmp_path / "models"
    done = cli(
        https.url("/v/en.onnx"), str(dest), "--sha256", MODEL_SHA, "--config-sha256",
        CONFIG_SHA, "--max-bytes", "60000", "--deadline-seconds", "30",
        "--allow-private-hosts",
        SSL_CERT_FILE=str(tls.cert),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert last_line(done) == "model ready"
    assert (dest / "model.onnx").read_bytes() == MODEL
    assert sorted(p.name for p in dest.iterdir()) == ["model.onnx", "model.onnx.json"]


def test_the_command_ends_a_failure_with_one_line_and_no_traceback(
    https: Site, tls: Tls, tmp_path: Path
) -> None:
    uri = https.url("/v/en.onnx")
    done = cli(uri, str(tmp_path), "--sha256", WRONG_SHA, "--allow-private-hosts",
               "--ca-file", str(tls.cert))  # fmt: skip
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert last_line(done) == f"{PREFIX}sha256 of model.onnx is {MODEL_SHA}, expected " + (
        f"{WRONG_SHA} for {uri}"
    )


def test_the_command_refuses_a_malformed_sha256(tmp_path: Path) -> None:
    done = cli("https://h/v.onnx", str(tmp_path), "--sha256", "abc")
    assert done.returncode == 2 and "is not a SHA-256" in done.stderr


def test_the_watchdog_ends_a_download_stuck_past_the_deadline(
    https: Site, tls: Tls, tmp_path: Path
) -> None:
    """A server dripping its headers keeps every read short and the response unfinished:
    the process ends shortly after the deadline all the same."""
    https.routes["/v/en.onnx"] = drip(0, 0.05, header_only=True)
    uri = https.url("/v/en.onnx")
    began = time.monotonic()
    done = cli(uri, str(tmp_path), "--deadline-seconds", "1", "--allow-private-hosts",
               "--ca-file", str(tls.cert))  # fmt: skip
    took = time.monotonic() - began
    assert done.returncode == 1
    assert last_line(done) == f"{PREFIX}not done within the 1 s deadline for {uri}"
    assert took < 10, took
