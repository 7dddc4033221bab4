"""hf://OWNER/REPO[@REVISION]/PATH downloads, against a local HTTPS server that serves the
Hugging Face hub's resolve layout the way the hub does: a large (LFS) file answered with a
302 to another host and port (the "CDN") carrying X-Linked-Size, X-Linked-Etag and
X-Repo-Commit, a small file answered directly with its git blob id as ETag. The endpoint
setting (--hf-endpoint) points the download at it; nothing else is contacted."""

from __future__ import annotations

import hashlib
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest
from test_fetch import (  # the servers on 127.0.0.1 and their fixtures
    CONFIG,
    CONFIG_SHA,
    MODEL,
    MODEL_SHA,
    WRONG_SHA,
    Route,
    Run,
    Site,
    Tls,
    body,
    cli,
    last_line,
    no_system_dns,
    run,
    serve,
    tls,
)
from tts_runtime.fetch import (
    DEFAULT_HF_ENDPOINT,
    PREFIX,
    Fetcher,
    HfUri,
    Hub,
    Rules,
    download_urls,
    git_blob_id,
)

__all__ = ["no_system_dns", "run", "serve", "tls"]  # fixtures, used by name

TOKEN = "hf_secret_token_123"
COMMIT = "c0ffee" + "0" * 34
CONFIG_OID = hashlib.sha1(b"blob %d\0" % len(CONFIG) + CONFIG, usedforsecurity=False).hexdigest()
URI = "hf://rhasspy/piper-voices/en/en_US/joe/medium/en_US-joe-medium.onnx"
RESOLVE = "/rhasspy/piper-voices/resolve/main/en/en_US/joe/medium/en_US-joe-medium.onnx"
BLOB = f"/repos/ab/cd/{MODEL_SHA}?X-Amz-Signature=abc"


@dataclass
class HubSite:
    """The hub (resolve layout) and its CDN, two HTTPS servers on 127.0.0.1, recording the
    Authorization header of every request."""

    hub: Site
    cdn: Site
    seen: list[tuple[str, str, str | None]] = field(default_factory=list)

    @property
    def endpoint(self) -> str:
        return self.hub.url("")

    def recording(self, where: str, route: Route) -> Route:
        def wrapped(h: BaseHTTPRequestHandler) -> None:
            self.seen.append((where, h.path, h.headers.get("Authorization")))
            route(h)

        return wrapped

    def lfs(
        self, path: str, *, size: int = len(MODEL), sha256: str = MODEL_SHA, token: bool = False
    ) -> None:
        """`path` answered like an LFS file: 302 to the CDN, with the hub's metadata."""

        def route(h: BaseHTTPRequestHandler) -> None:
            if token and h.headers.get("Authorization") != f"Bearer {TOKEN}":
                h.send_error(401)
                return
            h.send_response(302)
            h.send_header("Location", self.cdn.url(BLOB))
            h.send_header("X-Linked-Size", str(size))
            h.send_header("X-Linked-Etag", f'"{sha256}"')
            h.send_header("ETag", '"not-the-content-digest"')
            h.send_header("X-Repo-Commit", COMMIT)
            h.send_header("Content-Length", "0")
            h.end_headers()

        self.hub.routes[path] = self.recording("hub", route)

    def git_file(self, path: str, data: bytes, oid: str) -> None:
        """`path` answered like a file kept in git: 200, its git blob id as ETag."""

        def route(h: BaseHTTPRequestHandler) -> None:
            h.send_response(200)
            h.send_header("Content-Length", str(len(data)))
            h.send_header("ETag", f'"{oid}"')
            h.send_header("X-Repo-Commit", COMMIT)
            h.end_headers()
            h.wfile.write(data)

        self.hub.routes[path] = self.recording("hub", route)


@pytest.fixture
def hf(serve: Callable[[str], Site]) -> HubSite:
    site = HubSite(serve("https"), serve("https"))
    site.lfs(RESOLVE)
    site.git_file(RESOLVE + ".json", CONFIG, CONFIG_OID)
    site.cdn.routes[BLOB] = site.recording("cdn", body(MODEL))
    return site


# ---------------------------------------------------------------- the URI


@pytest.mark.parametrize(
    ("uri", "model"),
    [
        (URI, DEFAULT_HF_ENDPOINT + RESOLVE),
        ("hf://o/r@v1.2/voice.onnx", f"{DEFAULT_HF_ENDPOINT}/o/r/resolve/v1.2/voice.onnx"),
        (f"hf://o/r@{COMMIT}/a b.onnx", f"{DEFAULT_HF_ENDPOINT}/o/r/resolve/{COMMIT}/a%20b.onnx"),
    ],
)
def test_an_hf_uri_maps_to_the_hubs_resolve_urls(uri: str, model: str) -> None:
    assert download_urls(uri) == (model, model + ".json")


def test_the_endpoint_may_be_a_mirror_under_a_path() -> None:
    assert download_urls("hf://o/r/v.onnx", "https://mirror.example/hf/") == (
        "https://mirror.example/hf/o/r/resolve/main/v.onnx",
        "https://mirror.example/hf/o/r/resolve/main/v.onnx.json",
    )
    assert HfUri.parse("hf://o/r@dev/a/v.onnx") == HfUri("o", "r", "dev", "a/v.onnx")


@pytest.mark.parametrize(
    "uri",
    [
        "hf://o/r",  # no path
        "hf://o/r/",
        "hf://o/r/../../api/whoami",  # no way out of the repository's files
        "hf://o/r/a/./v.onnx",
        "hf://o/r/a//v.onnx",
        "hf://o/r@../v.onnx",
        "hf://o/r/v.onnx?download=1",
        "hf://-o/r/v.onnx",
    ],
)
def test_a_malformed_hf_uri_is_refused(uri: str, run: Run) -> None:
    line = run.fails(uri, hub=Hub("https://127.0.0.1:1"))
    assert "is not hf://OWNER/REPO[@REVISION]/PATH" in line
    assert run.files() == []


# ---------------------------------------------------------------- downloads and what is verified


def test_downloads_from_the_hub_through_its_cdn_verifying_what_it_lists(
    hf: HubSite, run: Run
) -> None:
    run(URI, hub=Hub(hf.endpoint, TOKEN))
    assert (run.dest / "model.onnx").read_bytes() == MODEL
    assert (run.dest / "model.onnx.json").read_bytes() == CONFIG
    assert (
        f"model.onnx: 51200 bytes, sha256 {MODEL_SHA}; the hub's size and sha256 match "
        + (f"(commit {COMMIT})")
        in run.log
    )
    assert (
        f"model.onnx.json: 33 bytes, sha256 {CONFIG_SHA}; the hub's git blob id match "
        + (f"(commit {COMMIT})")
        in run.log
    )
    # The token goes to the hub's own host and port, never on to the CDN (another port).
    assert hf.seen == [
        ("hub", RESOLVE, f"Bearer {TOKEN}"),
        ("cdn", BLOB, None),
        ("hub", RESOLVE + ".json", f"Bearer {TOKEN}"),
    ]


def test_a_revision_is_resolved_at_that_revision(hf: HubSite, run: Run) -> None:
    hf.lfs("/o/r/resolve/v1/v.onnx")
    hf.git_file("/o/r/resolve/v1/v.onnx.json", CONFIG, CONFIG_OID)
    run("hf://o/r@v1/v.onnx", hub=Hub(hf.endpoint))
    assert [path for where, path, _ in hf.seen if where == "hub"] == [
        "/o/r/resolve/v1/v.onnx",
        "/o/r/resolve/v1/v.onnx.json",
    ]
    assert all(auth is None for _, _, auth in hf.seen)  # no token: none sent


def test_a_cdn_on_another_host_never_gets_the_token(
    serve: Callable[[str], Site], hf: HubSite, run: Run, no_system_dns: None
) -> None:
    """The CDN by name (cdn.test, resolving to 127.0.0.1, which stands for a public address
    here): followed, without the token."""
    cdn = serve("https")
    cdn.routes[BLOB] = hf.recording("named-cdn", body(MODEL))
    hf.hub.routes[RESOLVE] = hf.recording("hub", _redirect_to(cdn.url(BLOB, host="cdn.test")))
    rules = Rules(ca_file=str(run.tls.cert))
    fetcher = Fetcher(rules, log=run.log.append, hub=Hub(hf.endpoint, TOKEN))
    fetcher.resolve = lambda host, port: ["127.0.0.1"]
    fetcher.check_address = lambda address: None
    fetcher.fetch_model(URI, run.dest)
    assert hf.seen[:2] == [("hub", RESOLVE, f"Bearer {TOKEN}"), ("named-cdn", BLOB, None)]


def _redirect_to(location: str) -> Route:
    def route(h: BaseHTTPRequestHandler) -> None:
        h.send_response(302)
        h.send_header("Location", location)
        h.send_header("Content-Length", "0")
        h.end_headers()

    return route


def test_a_file_whose_sha256_differs_from_the_hubs_is_not_kept(hf: HubSite, run: Run) -> None:
    hf.lfs(RESOLVE, sha256=WRONG_SHA)
    line = run.fails(URI, hub=Hub(hf.endpoint))
    assert line == (
        f"{PREFIX}sha256 of model.onnx is {MODEL_SHA}, but the hub lists {WRONG_SHA} "
        f"for {hf.endpoint}{RESOLVE}"
    )
    assert run.files() == []


def test_a_file_whose_size_differs_from_the_hubs_is_not_kept(hf: HubSite, run: Run) -> None:
    hf.lfs(RESOLVE, size=len(MODEL) + 1)
    line = run.fails(URI, hub=Hub(hf.endpoint))
    assert "model.onnx is 51200 bytes, but the hub lists 51201 bytes (X-Linked-Size)" in line
    assert run.files() == []


def test_a_small_file_whose_git_blob_id_differs_is_not_kept(hf: HubSite, run: Run) -> None:
    hf.git_file(RESOLVE + ".json", CONFIG, "0" * 40)
    line = run.fails(URI, hub=Hub(hf.endpoint))
    assert f"git blob id of model.onnx.json is {CONFIG_OID}, but the hub lists {'0' * 40}" in line
    assert run.files() == ["model.onnx"]


def test_the_specs_sha256_pin_applies_too(hf: HubSite, run: Run) -> None:
    line = run.fails(URI, WRONG_SHA, hub=Hub(hf.endpoint))
    assert f"sha256 of model.onnx is {MODEL_SHA}, expected {WRONG_SHA}" in line
    run(URI, MODEL_SHA, hub=Hub(hf.endpoint))
    assert run.files() == ["model.onnx", "model.onnx.json"]


def test_nothing_listed_means_nothing_more_checked(hf: HubSite, run: Run) -> None:
    """A mirror without the hub's headers: the download works, as any https one."""
    hf.hub.routes[RESOLVE] = body(MODEL)
    hf.hub.routes[RESOLVE + ".json"] = body(CONFIG)
    run(URI, hub=Hub(hf.endpoint))
    assert f"model.onnx: 51200 bytes, sha256 {MODEL_SHA}" in run.log


def test_a_gated_repository_without_the_token_says_401(hf: HubSite, run: Run) -> None:
    hf.lfs(RESOLVE, token=True)
    assert run.fails(URI, hub=Hub(hf.endpoint)) == (
        f"{PREFIX}HTTP 401 Unauthorized for {hf.endpoint}{RESOLVE}"
    )
    run(URI, hub=Hub(hf.endpoint, TOKEN))
    assert run.files() == ["model.onnx", "model.onnx.json"]


def test_a_token_is_never_sent_over_plain_http(serve: Callable[[str], Site], run: Run) -> None:
    http = serve("http")
    line = run.fails(URI, hub=Hub(http.url(""), TOKEN))
    assert "a token is never sent over plain http" in line
    assert http.paths == []


def test_the_git_blob_id_is_gits(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"hello\n")
    assert git_blob_id(path, 6) == "ce013625030ba8dba906f756967f9e9ca394464a"  # git hash-object


# ---------------------------------------------------------------- the init container's command


def test_the_command_downloads_an_hf_uri_with_the_token_file(
    hf: HubSite, tls: Tls, tmp_path: Path
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    dest = tmp_path / "models"
    done = cli(
        URI, str(dest), "--hf-endpoint", hf.endpoint, "--token-file", str(token_file),
        "--allow-private-hosts", "--ca-file", str(tls.cert), "--max-bytes", "60000",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert last_line(done) == "model ready"
    assert TOKEN not in done.stdout + done.stderr
    assert (dest / "model.onnx").read_bytes() == MODEL
    assert hf.seen[0] == ("hub", RESOLVE, f"Bearer {TOKEN}")


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"", "is empty"),
        (b"two words", "does not hold one token (printable ASCII, no blanks)"),
        (b"hf_a\r\nX-Injected: 1", "does not hold one token (printable ASCII, no blanks)"),
    ],
)
def test_the_command_refuses_a_bad_token_file_in_one_line(
    tmp_path: Path, content: bytes, problem: str
) -> None:
    token_file = tmp_path / "token"
    token_file.write_bytes(content)
    done = cli(URI, str(tmp_path / "m"), "--token-file", str(token_file))
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert last_line(done) == f"{PREFIX}the token file {token_file} {problem} for {URI}"
    assert content.decode() not in done.stderr or not content


def test_the_command_takes_a_token_for_hf_uris_only(tmp_path: Path) -> None:
    done = cli("https://h/v.onnx", str(tmp_path), "--token-file", str(tmp_path / "t"))
    assert done.returncode == 2 and "--token-file applies to hf:// URIs only" in done.stderr


def test_an_unreadable_token_file_says_so(tmp_path: Path) -> None:
    done: subprocess.CompletedProcess[str] = cli(
        URI, str(tmp_path / "m"), "--token-file", str(tmp_path / "absent")
    )
    assert done.returncode == 1
    assert f"cannot read the token file {tmp_path / 'absent'} (No such file" in last_line(done)
