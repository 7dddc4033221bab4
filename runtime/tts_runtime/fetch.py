"""The model download of an http(s) TTSService: its pods' `model-fetch` init container runs

    python3 -m tts_runtime.fetch URI DEST [--sha256 HEX] [--config-sha256 HEX]
        [--max-bytes N] [--deadline-seconds S] [--allow-http] [--allow-private-hosts]
        [--ca-file PATH] [--hf-endpoint URL] [--token-file PATH]

and gets URI as DEST/model.onnx and URI.json (".json" added to the URI's path) as
DEST/model.onnx.json.

URI may also be hf://OWNER/REPO[@REVISION]/PATH, a file of a Hugging Face repository (the
form KServe users know): it is downloaded from the hub's resolve URL,
ENDPOINT/OWNER/REPO/resolve/REVISION/PATH (REVISION: main unless given; --hf-endpoint, default
https://huggingface.co, names the hub or a mirror of its layout), and PATH.json beside it.
--token-file names a file holding a token (a Secret's key), sent as `Authorization: Bearer`
to the endpoint's own scheme, host and port only: never over plain http, never across a
redirect to another host (the hub sends large files on to a CDN with a signed URL). What the
hub lists about each file is verified when it lists it, in its responses on the endpoint's
own host: the size (X-Linked-Size) and SHA-256 (X-Linked-Etag, or a 64-digit ETag) of a
large (LFS) file, the git blob id (a 40-digit ETag, with X-Repo-Commit) of a small one. Every
rule below applies to these downloads as to any other, and --sha256 pins still apply too.

Each file is written as NAME.part and renamed once complete and
verified, so a half-written model never looks complete. Progress goes to stdout; a failure
ends with one line on stderr, `model download failed: WHY for URI`, which Kubernetes keeps
as the container's termination message (terminationMessagePolicy FallbackToLogsOnError) and
the operator's status reports (reason ModelDownloadFailed).

What it refuses (the operator's policy decides the options; README "Security"):

- plain http:// unless --allow-http; a redirect never goes from https to http, nor to any
  scheme but http(s) (http -> https is followed: it only adds protection);
- a host that resolves to a loopback, private, link-local, unspecified, multicast or other
  non-public address: the URI's own host unless --allow-private-hosts (in-cluster model
  servers); a redirect's always, unless it stays on the URI's own host name (which the
  policy already let the URI name; its scheme may go http -> https, its port change).
  Every address a name resolves to is checked, and the connection goes to a checked
  address (the name is not resolved again between the check and the connection, so DNS
  rebinding cannot slip past it);
- more than --max-bytes in all (both files): at once when a Content-Length says so, else
  as soon as the bytes received pass it (nothing past the cap is written);
- a model.onnx (model.onnx.json) whose SHA-256 differs from --sha256 (--config-sha256);
- taking longer than --deadline-seconds for the whole download, redirects, retries of
  other addresses, TLS handshakes and slow servers included: every wait on the network is
  bounded by what is left of the deadline, and a watchdog stops the process a little after
  it in any case (a name lookup cannot be interrupted otherwise). An idle connection fails
  sooner, after 60 s without data.

Only the standard library: no proxy (HTTP(S)_PROXY is ignored), TLS verified against the
system CA certificates (SSL_CERT_FILE / SSL_CERT_DIR, or --ca-file, replace them; certifi's
bundle is used when the system has none).
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import ipaddress
import os
import re
import socket
import ssl
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO
from urllib.parse import SplitResult, quote, urljoin, urlsplit, urlunsplit

PREFIX = "model download failed: "
MODEL_FILE = "model.onnx"
CONFIG_FILE = "model.onnx.json"
CHUNK = 1 << 20
MAX_REDIRECTS = 5
IDLE_TIMEOUT_SECONDS = 60.0
DEFAULT_DEADLINE_SECONDS = 900.0
# How long after the deadline the watchdog ends the process, should the download itself not
# have stopped (a name lookup that hangs, a server dripping its headers).
WATCHDOG_GRACE_SECONDS = 2.0
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_DEFAULT_PORTS = {"http": 80, "https": 443}
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
# One part of an IPv4 literal as inet_aton reads it: hex (0x and digits), octal
# (leading 0) or decimal.
_IPV4_PART = re.compile(r"0[xX][0-9a-fA-F]+|0[0-7]*|[1-9][0-9]*")
_HEX = frozenset("0123456789abcdef")
HF_SCHEME = "hf"
DEFAULT_HF_ENDPOINT = "https://huggingface.co"
DEFAULT_HF_REVISION = "main"
# hf://OWNER/REPO[@REVISION]/PATH: names as the hub allows them; a revision is a branch, tag or
# commit (no "/": name a pull request's ref by its commit); PATH has no empty, "." or ".."
# segment. The CRD's model.uri pattern holds the same expression.
_HF_NAME = r"[A-Za-z0-9][-A-Za-z0-9._]{0,95}"
_HF_REVISION = r"[A-Za-z0-9][-A-Za-z0-9._]{0,254}"
_HF_SEGMENT = r"(?:[^/?#.]|\.[^/?#.]|\.\.[^/?#])[^/?#]*"
_HF_PATH = rf"{_HF_SEGMENT}(?:/{_HF_SEGMENT})*"
HF_URI_PATTERN = rf"hf://{_HF_NAME}/{_HF_NAME}(?:@{_HF_REVISION})?/{_HF_PATH}"
_HF_URI = re.compile(rf"hf://({_HF_NAME})/({_HF_NAME})(?:@({_HF_REVISION}))?/({_HF_PATH})")

Resolver = Callable[[str, int], list[str]]
AddressCheck = Callable[[str], str | None]
Log = Callable[[str], None]


class FetchError(Exception):
    """A download that cannot succeed: `why`, for the URL `url` (the one the spec named)."""

    def __init__(self, why: str, url: str = "") -> None:
        super().__init__(why)
        self.why = why
        self.url = url

    def line(self) -> str:
        """The one line a failure ends with (what the TTSService's condition repeats)."""
        return f"{PREFIX}{self.why} for {display(self.url)}" if self.url else PREFIX + self.why


@dataclass(frozen=True)
class Rules:
    """What a download may do (the init container's options)."""

    max_bytes: int | None = None
    """Most bytes received in all (model.onnx and model.onnx.json together); None: no cap."""
    deadline_seconds: float = DEFAULT_DEADLINE_SECONDS
    """The whole download, both files, redirects and retries included."""
    allow_http: bool = False
    """Allow a plain http:// URI (a redirect from https to http is refused regardless)."""
    allow_private_hosts: bool = False
    """Allow the URI's own host (and redirects back to it) to be a non-public address."""
    idle_timeout: float = IDLE_TIMEOUT_SECONDS
    """Longest wait for any one network read, connect or handshake."""
    ca_file: str | None = None
    """CA certificates (PEM) to verify servers with instead of the system's."""


@dataclass(frozen=True)
class Hub:
    """Where hf:// URIs are downloaded from (--hf-endpoint), and the token sent there."""

    endpoint: str = DEFAULT_HF_ENDPOINT
    token: str | None = field(default=None, repr=False)
    """Sent as `Authorization: Bearer` to the endpoint's scheme, host and port only."""


def display(url: str) -> str:
    """A URL as logged and reported: without user:password@."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


def config_url(uri: str) -> str:
    """The voice config's URL: ".json" added to the model URI's path (its query kept)."""
    parts = urlsplit(uri)
    return urlunsplit(parts._replace(path=parts.path + ".json", fragment=""))


@dataclass(frozen=True)
class HfUri:
    """hf://OWNER/REPO[@REVISION]/PATH: one file of a Hugging Face repository."""

    owner: str
    repo: str
    revision: str
    path: str

    @classmethod
    def parse(cls, uri: str) -> HfUri:
        found = _HF_URI.fullmatch(uri)
        if found is None:
            raise ValueError(
                f"{uri!r} is not hf://OWNER/REPO[@REVISION]/PATH (a revision has no '/'; "
                "PATH has no empty, '.' or '..' part)"
            )
        owner, repo, revision, path = found.groups()
        return cls(owner, repo, revision or DEFAULT_HF_REVISION, path)

    def url(self, endpoint: str, suffix: str = "") -> str:
        """The hub's resolve URL of PATH + suffix under `endpoint`, as huggingface_hub makes
        it (the path percent-encoded, its "/" kept)."""
        return (
            f"{endpoint.rstrip('/')}/{self.owner}/{self.repo}/resolve/"
            f"{quote(self.revision, safe='')}/{quote(self.path + suffix)}"
        )


def is_hf_uri(uri: str) -> bool:
    return uri.startswith(f"{HF_SCHEME}://")


def download_urls(uri: str, hf_endpoint: str = DEFAULT_HF_ENDPOINT) -> tuple[str, str]:
    """The URLs of the model and of its voice config: URI and URI.json, or for an hf:// URI
    the resolve URLs of PATH and PATH.json under `hf_endpoint`."""
    if is_hf_uri(uri):
        hf = HfUri.parse(uri)
        return hf.url(hf_endpoint), hf.url(hf_endpoint, ".json")
    return uri, config_url(uri)


def address_problem(address: str) -> str | None:
    """Why a connection to `address` (an IP address) is internal, e.g. "a loopback address";
    None for a public one. IPv4 inside IPv6 (::ffff:a.b.c.d, NAT64 64:ff9b::/96, 6to4) is
    judged by its IPv4 address."""
    ip: ipaddress.IPv4Address | ipaddress.IPv6Address = ipaddress.ip_address(
        address.split("%", 1)[0]
    )
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        elif ip in _NAT64:
            ip = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        elif ip.sixtofour is not None:
            ip = ip.sixtofour
    kinds = (
        ("unspecified", ip.is_unspecified),
        ("loopback", ip.is_loopback),
        ("link-local", ip.is_link_local),
        ("multicast", ip.is_multicast),
        ("private", ip.is_private),
        ("site-local", isinstance(ip, ipaddress.IPv6Address) and ip.is_site_local),
        ("reserved", ip.is_reserved),
        ("non-public", not ip.is_global),
    )
    for kind, found in kinds:
        if found:
            return f"{'an' if kind[0] in 'aeiou' else 'a'} {kind} address"
    return None


def ip_literal(host: str) -> str | None:
    """The IP address a URL's host (as urlsplit's `hostname` gives it) denotes when it is an
    address rather than a name, in every form the system resolver reads as one, written
    canonically; None for a name. IPv4 as inet_aton reads it: one to four parts, each
    decimal, octal (a leading 0) or hex (0x), the last filling the bytes left
    (0x7f000001, 2130706433, 127.1, 0177.0.0.1 are all 127.0.0.1); IPv6 in any of its
    forms, with or without a zone (fe80::1%eth0). The operator judges a model host with
    this and `address_problem`, so it refuses at admission what the download refuses after
    resolving the same literal."""
    host = host.strip().strip("[]")
    try:
        return str(ipaddress.ip_address(host.split("%", 1)[0]))
    except ValueError:
        pass
    parts = host.split(".")
    if not 1 <= len(parts) <= 4:
        return None
    values = []
    for part in parts:
        if not _IPV4_PART.fullmatch(part):
            return None
        if part[:2].lower() == "0x":
            values.append(int(part[2:], 16))
        elif part.startswith("0"):
            values.append(int(part, 8))
        else:
            values.append(int(part))
    *leading, last = values
    if any(v > 0xFF for v in leading) or last >= 1 << (8 * (4 - len(leading))):
        return None
    number = last
    for i, v in enumerate(leading):
        number |= v << (8 * (3 - i))
    return str(ipaddress.IPv4Address(number))


def host_problem(host: str) -> str | None:
    """Why a URL host is internal as written, without resolving it: localhost (and names
    under .localhost, which resolvers answer with loopback) or an IP literal in any form
    (`ip_literal`) that `address_problem` refuses. None for a name (the download checks
    every address it resolves to) and for a public address."""
    host = host.lower().rstrip(".")
    if host == "localhost" or host.endswith(".localhost"):
        return "a loopback address"
    address = ip_literal(host)
    return None if address is None else address_problem(address)


def system_resolve(host: str, port: int) -> list[str]:
    """Every address `host` resolves to (IP literals resolve to themselves), in order."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def ssl_context(ca_file: str | None = None) -> ssl.SSLContext:
    """Verifies certificates and host names: against ca_file, else the system's CA store
    (OpenSSL honours SSL_CERT_FILE / SSL_CERT_DIR), else certifi's bundle when installed and
    the system has none."""
    if ca_file is None:
        paths = ssl.get_default_verify_paths()
        has_system = any(
            p and os.path.exists(p)
            for p in (paths.cafile, paths.capath, os.environ.get(paths.openssl_cafile_env))
        )
        if not has_system:
            try:
                import certifi

                ca_file = certifi.where()
            except ImportError:
                pass
    return ssl.create_default_context(cafile=ca_file)


def _dial(address: str, port: int, timeout: float) -> socket.socket:
    """A TCP connection to an IP address (never a name: nothing is resolved here)."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    sock = socket.socket(socket.AF_INET6 if ip.version == 6 else socket.AF_INET)
    try:
        sock.settimeout(timeout)
        sock.connect((address, port))
    except BaseException:
        sock.close()
        raise
    return sock


def _hex_digest(value: str) -> str:
    digest = value.strip().lower()
    if len(digest) != 64 or not set(digest) <= _HEX:
        raise ValueError(f"{value!r} is not a SHA-256 (64 hex digits)")
    return digest


def _size(n: int) -> str:
    if n >= 1 << 30:
        return f"{n} bytes ({n / (1 << 30):.1f} GiB)"
    if n >= 1 << 20:
        return f"{n} bytes ({n / (1 << 20):.1f} MiB)"
    return f"{n} bytes"


class _Deadline:
    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.end = time.monotonic() + seconds

    def remaining(self) -> float:
        return self.end - time.monotonic()

    def passed(self) -> bool:
        return self.remaining() <= 0.01

    def why(self, received: int) -> str:
        return f"not done within the {self.seconds:g} s deadline ({_size(received)} received)"


@dataclass
class _Origin:
    scheme: str
    host: str
    port: int

    @classmethod
    def of(cls, parts: SplitResult, url: str) -> _Origin:
        try:
            port = parts.port or _DEFAULT_PORTS.get(parts.scheme, 0)
        except ValueError as err:
            raise FetchError(f"invalid URL {display(urlunsplit(parts))} ({err})", url) from None
        return cls(parts.scheme, (parts.hostname or "").lower(), port)


def _etag(value: str | None) -> str | None:
    """An entity tag without W/ and quotes, lower-cased, as huggingface_hub reads them."""
    if not value:
        return None
    value = value.strip()
    return (value[2:] if value.startswith("W/") else value).strip('"').lower() or None


def _hex(value: str | None, digits: int) -> str | None:
    return value if value and len(value) == digits and set(value) <= _HEX else None


def git_blob_id(path: Path, size: int) -> str:
    """The git object id (SHA-1 of "blob SIZE\\0" + content) of a file: what the hub sends as
    the ETag of a file kept in git rather than LFS."""
    digest = hashlib.sha1(b"blob %d\0" % size, usedforsecurity=False)
    with open(path, "rb") as data:
        while chunk := data.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass
class _HubFile:
    """One file of an hf:// download: where its token may go, and what the hub's responses
    on its own host (never a CDN's) list about it."""

    origin: _Origin
    token: str | None
    size: int | None = None
    sha256: str | None = None
    git_oid: str | None = None
    commit: str | None = None

    def headers(self, here: _Origin) -> dict[str, str]:
        """The token, for a request to the endpoint's own scheme, host and port only."""
        if self.token and here == self.origin:
            return {"Authorization": f"Bearer {self.token}"}
        return {}

    def note(self, here: _Origin, response: http.client.HTTPResponse) -> None:
        """What a response of the hub lists (the last one on its host counts)."""
        if here != self.origin:
            return
        linked = _etag(response.getheader("X-Linked-Etag"))
        etag = _etag(response.getheader("ETag"))
        size = (response.getheader("X-Linked-Size") or "").strip()
        self.commit = response.getheader("X-Repo-Commit")
        self.size = int(size) if size.isdigit() else None
        self.sha256 = _hex(linked, 64) or (None if linked else _hex(etag, 64))
        self.git_oid = _hex(etag, 40) if linked is None and self.commit else None

    def verify(self, name: str, part: Path, size: int, sha256: str, url: str) -> str:
        """FetchError unless the file is what the hub lists; what was verified, for the log."""
        checked = []
        if self.size is not None:
            if size != self.size:
                raise FetchError(
                    f"{name} is {_size(size)}, but the hub lists {_size(self.size)} "
                    "(X-Linked-Size)",
                    url,
                )
            checked.append("size")
        if self.sha256 is not None:
            if sha256 != self.sha256:
                raise FetchError(
                    f"sha256 of {name} is {sha256}, but the hub lists {self.sha256}", url
                )
            checked.append("sha256")
        if self.git_oid is not None:
            oid = git_blob_id(part, size)
            if oid != self.git_oid:
                raise FetchError(
                    f"git blob id of {name} is {oid}, but the hub lists {self.git_oid}", url
                )
            checked.append("git blob id")
        listed = f"; the hub's {' and '.join(checked)} match" if checked else ""
        return listed + (f" (commit {self.commit})" if self.commit else "")


@dataclass
class Fetcher:
    """One model download. `resolve` and `check_address` are the name lookup and the
    internal-address rule (tests replace them to name hosts without DNS, or to let a
    loopback test server stand for a public one)."""

    rules: Rules = field(default_factory=Rules)
    resolve: Resolver = system_resolve
    check_address: AddressCheck = address_problem
    log: Log = field(default=lambda line: print(line, flush=True))
    hub: Hub = field(default_factory=Hub)

    def __post_init__(self) -> None:
        self._context: ssl.SSLContext | None = None
        self._received = 0  # bytes received so far, both files
        self._deadline = _Deadline(self.rules.deadline_seconds)

    # ---------------------------------------------------------------- the whole download

    def fetch_model(
        self,
        uri: str,
        dest: Path,
        sha256: str | None = None,
        config_sha256: str | None = None,
    ) -> None:
        """DEST/model.onnx and DEST/model.onnx.json from URI and URI.json (an hf:// URI:
        from the hub, see the module's docstring); FetchError says why not. The deadline
        counts from the Fetcher's creation."""
        hub = is_hf_uri(uri)
        try:
            model, config = download_urls(uri, self.hub.endpoint)
        except ValueError as err:
            raise FetchError(str(err), uri) from None
        if hub and self.hub.token and urlsplit(model).scheme != "https":
            raise FetchError("a token is never sent over plain http; use an https endpoint", model)
        dest.mkdir(parents=True, exist_ok=True)
        for url, name, digest in (
            (model, MODEL_FILE, sha256),
            (config, CONFIG_FILE, config_sha256),
        ):
            self.fetch_file(url, dest / name, digest, hub=hub)

    def fetch_file(
        self, url: str, target: Path, sha256: str | None = None, *, hub: bool = False
    ) -> str:
        """Download url into target (through target.part); returns the file's SHA-256.
        `hub`: url is a file of the hub (self.hub): its token goes to the hub's host, and
        the file must be what the hub lists."""
        expected = _hex_digest(sha256) if sha256 else None
        part = target.with_name(target.name + ".part")
        listed = None
        if hub:
            listed = _HubFile(_Origin.of(urlsplit(self.hub.endpoint), url), self.hub.token)
        self.log(f"fetching {display(url)}")
        try:
            conn, response, sock = self._open(url, listed)
            try:
                with open(part, "wb") as out:
                    got, size = self._save(sock, conn.host, response, out, target.name, url)
            finally:
                response.close()
                conn.close()
            if expected and got != expected:
                raise FetchError(f"sha256 of {target.name} is {got}, expected {expected}", url)
            verified = listed.verify(target.name, part, size, got, url) if listed else ""
            os.replace(part, target)
        except BaseException:
            part.unlink(missing_ok=True)
            raise
        self.log(f"{target.name}: {_size(size)}, sha256 {got}{verified}")
        return got

    # ---------------------------------------------------------------- network

    def _timeout(self) -> float:
        """The next wait's bound: the idle timeout, or what is left of the deadline."""
        left = self._deadline.remaining()
        if left <= 0:
            raise FetchError(self._deadline.why(self._received))
        return min(self.rules.idle_timeout, left)

    def _open(
        self, url: str, hub: _HubFile | None = None
    ) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse, socket.socket]:
        """GET url, following redirects: the connection, its response 200, and the socket
        the response reads from (http.client lets go of it when the response ends with the
        connection, so it is kept here to bound each read). `hub`: a file of the hub, whose
        token goes to the hub's own host only and which notes what the hub lists."""
        first = urlsplit(url)
        if first.scheme not in _DEFAULT_PORTS:
            raise FetchError(f"unsupported URL scheme {first.scheme!r}", url)
        if first.scheme == "http" and not self.rules.allow_http:
            raise FetchError(
                "plain http:// is not allowed (the operator's policy.allowHttpModelUris); "
                "use https://",
                url,
            )
        origin = _Origin.of(first, url)
        current = url
        for hop in range(MAX_REDIRECTS + 1):
            parts = urlsplit(current)
            here = _Origin.of(parts, url)
            if not here.host:
                raise FetchError(f"no host in {display(current)}", url)
            private_ok = self.rules.allow_private_hosts and here.host == origin.host
            try:
                addresses = self._addresses(here, private_ok, hop > 0)
                conn = self._connect(here, addresses)
                try:
                    target = urlunsplit(("", "", parts.path or "/", parts.query, ""))
                    conn.request(
                        "GET",
                        target,
                        headers={
                            "User-Agent": "tts-runtime-model-fetch",
                            "Accept-Encoding": "identity",
                            **(hub.headers(here) if hub else {}),
                        },
                    )
                    sock = conn.sock
                    response = conn.getresponse()
                except BaseException:
                    conn.close()
                    raise
            except FetchError as err:
                err.url = err.url or url
                raise
            except (OSError, http.client.HTTPException) as err:
                raise FetchError(self._network_why(err, here.host), url) from None
            if hub:
                hub.note(here, response)
            location = response.getheader("Location")
            if response.status in _REDIRECTS and location:
                response.close()
                conn.close()
                following = urljoin(current, location.strip())
                self._check_redirect(parts.scheme, following, url)
                self.log(f"redirected to {display(following)}")
                current = following
                continue
            if response.status != 200:
                response.close()
                conn.close()
                at = "" if current == url else f" at {display(current)}"
                raise FetchError(f"HTTP {response.status} {response.reason}{at}", url)
            return conn, response, sock
        raise FetchError(f"more than {MAX_REDIRECTS} redirects", url)

    def _check_redirect(self, scheme: str, following: str, url: str) -> None:
        new = urlsplit(following).scheme
        if new not in _DEFAULT_PORTS:
            raise FetchError(f"redirect to {display(following)} refused: not http(s)", url)
        if scheme == "https" and new == "http":
            raise FetchError(f"redirect from https to http refused ({display(following)})", url)

    def _addresses(self, origin: _Origin, private_ok: bool, redirected: bool) -> list[str]:
        """The host's addresses, each checked; refused unless every one passes."""
        try:
            addresses = self.resolve(origin.host, origin.port)
        except OSError as err:
            why = getattr(err, "strerror", None) or str(err)
            raise FetchError(f"cannot resolve {origin.host} ({why})") from None
        if not addresses:
            raise FetchError(f"cannot resolve {origin.host} (no address)")
        if private_ok:
            return addresses
        for address in addresses:
            problem = self.check_address(address)
            if problem is None:
                continue
            if redirected:
                raise FetchError(f"redirect to {origin.host} refused: {address} is {problem}")
            named = "" if origin.host == address else f"{origin.host} resolves to {address}, "
            raise FetchError(
                f"{named}{address} is {problem}, not allowed for the model's host "
                "(the operator's policy.allowPrivateModelHosts)"
            )
        return addresses

    def _connect(self, origin: _Origin, addresses: list[str]) -> http.client.HTTPConnection:
        """A connection to the first of the (checked) addresses that answers; TLS verifies
        the certificate against the host name."""
        sock: socket.socket | None = None
        error: OSError | None = None
        for address in addresses:
            try:
                sock = _dial(address, origin.port, self._timeout())
                break
            except OSError as err:
                error = err
        if sock is None:
            assert error is not None
            raise error
        conn: http.client.HTTPConnection
        try:
            if origin.scheme == "https":
                if self._context is None:
                    self._context = ssl_context(self.rules.ca_file)
                sock.settimeout(self._timeout())
                sock = self._context.wrap_socket(sock, server_hostname=origin.host)
                conn = http.client.HTTPSConnection(origin.host, origin.port, context=self._context)
            else:
                conn = http.client.HTTPConnection(origin.host, origin.port)
        except BaseException:
            sock.close()
            raise
        sock.settimeout(self._timeout())
        conn.sock = sock  # already connected: http.client does not connect (nor resolve) again
        return conn

    def _network_why(self, err: BaseException, host: str) -> str:
        if self._deadline.passed():
            return self._deadline.why(self._received)
        if isinstance(err, ssl.SSLCertVerificationError):
            return f"TLS certificate of {host} not accepted: {err.verify_message}"
        if isinstance(err, ssl.SSLError):
            return f"TLS error with {host}: {err.reason or err}"
        if isinstance(err, ConnectionRefusedError):
            return "connection refused"
        if isinstance(err, TimeoutError):
            return f"timed out (no answer for {self.rules.idle_timeout:g} s)"
        if isinstance(err, http.client.HTTPException):
            return f"bad HTTP response ({type(err).__name__}: {err})"
        return getattr(err, "strerror", None) or str(err) or type(err).__name__

    def _save(
        self,
        sock: socket.socket,
        host: str,
        response: http.client.HTTPResponse,
        out: BinaryIO,
        name: str,
        url: str,
    ) -> tuple[str, int]:
        """Stream the body into out within the cap and the deadline: (sha256, size)."""
        cap = self.rules.max_bytes
        length = response.length  # Content-Length (None when absent or chunked)
        if cap is not None and length is not None and self._received + length > cap:
            raise FetchError(
                f"{name} is {_size(length)} (Content-Length), over the download cap of "
                f"{_size(cap)}",
                url,
            )
        digest = hashlib.sha256()
        size = 0
        while True:
            want = CHUNK if cap is None else min(CHUNK, cap - self._received + 1)
            try:
                sock.settimeout(self._timeout())  # no read waits past the deadline
                data = response.read1(max(want, 1))
            except FetchError as err:
                err.url = url
                raise
            except (OSError, http.client.HTTPException) as err:
                raise FetchError(self._network_why(err, host), url) from None
            if not data:
                break
            if cap is not None and self._received + len(data) > cap:
                raise FetchError(
                    f"{name} passed the download cap of {_size(cap)} "
                    f"({_size(self._received + len(data))} received)",
                    url,
                )
            self._received += len(data)
            size += len(data)
            digest.update(data)
            out.write(data)
        if length is not None and size != length:
            raise FetchError(f"connection closed after {size} of {length} bytes of {name}", url)
        return digest.hexdigest(), size


def fetch_model(
    uri: str,
    dest: Path,
    rules: Rules | None = None,
    sha256: str | None = None,
    config_sha256: str | None = None,
    hub: Hub | None = None,
) -> None:
    """Download a model (see the module's docstring); FetchError says why not."""
    Fetcher(rules or Rules(), hub=hub or Hub()).fetch_model(uri, dest, sha256, config_sha256)


def read_token(path: str) -> str:
    """The token in a file (a Secret's key): one printable ASCII word, blanks around it
    ignored; FetchError naming the file (never its content) otherwise."""
    try:
        token = Path(path).read_bytes().strip()
    except OSError as err:
        raise FetchError(f"cannot read the token file {path} ({err.strerror or err})") from None
    if not token:
        raise FetchError(f"the token file {path} is empty")
    if not all(0x21 <= byte <= 0x7E for byte in token):
        raise FetchError(
            f"the token file {path} does not hold one token (printable ASCII, no blanks)"
        )
    return token.decode("ascii")


# ---------------------------------------------------------------- the init container


def _parser() -> argparse.ArgumentParser:
    def positive(value: str) -> float:
        number = float(value)
        if not number > 0:
            raise argparse.ArgumentTypeError(f"{value} is not > 0")
        return number

    def sha256(value: str) -> str:
        try:
            return _hex_digest(value)
        except ValueError as err:
            raise argparse.ArgumentTypeError(str(err)) from None

    def byte_count(value: str) -> int:
        number = int(value)
        if number < 1:
            raise argparse.ArgumentTypeError(f"{value} is not >= 1")
        return number

    parser = argparse.ArgumentParser(
        prog="python3 -m tts_runtime.fetch",
        description="Download a Piper voice (URI and URI.json) as DEST/model.onnx and "
        "DEST/model.onnx.json: https only, size-capped, checksummed, within a deadline.",
    )
    parser.add_argument(
        "uri", help="http(s) URL of the .onnx model, or hf://OWNER/REPO[@REVISION]/PATH"
    )
    parser.add_argument("dest", type=Path, help="directory to write into")
    parser.add_argument("--sha256", type=sha256, help="expected SHA-256 of model.onnx")
    parser.add_argument("--config-sha256", type=sha256, help="expected SHA-256 of model.onnx.json")
    parser.add_argument(
        "--max-bytes", type=byte_count, help="most bytes to download in all (default: no cap)"
    )
    parser.add_argument(
        "--deadline-seconds",
        type=positive,
        default=DEFAULT_DEADLINE_SECONDS,
        help="the whole download's deadline (default: %(default)g)",
    )
    parser.add_argument("--allow-http", action="store_true", help="allow a plain http:// URI")
    parser.add_argument(
        "--allow-private-hosts",
        action="store_true",
        help="allow the URI's host to be a loopback/private/link-local address",
    )
    parser.add_argument("--ca-file", help="CA certificates (PEM) instead of the system's")
    parser.add_argument(
        "--hf-endpoint",
        default=DEFAULT_HF_ENDPOINT,
        help="the Hugging Face hub (or a mirror of its layout) hf:// URIs resolve against "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--token-file",
        help="file holding a token for hf:// URIs, sent to the endpoint's own host only",
    )
    return parser


def _watchdog(seconds: float, uri: str) -> threading.Timer:
    """Ends the process WATCHDOG_GRACE_SECONDS after the deadline, whatever it is doing."""

    def stop() -> None:
        line = FetchError(f"not done within the {seconds:g} s deadline", uri).line()
        sys.stdout.flush()
        sys.stderr.write(line + "\n")
        sys.stderr.flush()
        os._exit(1)

    timer = threading.Timer(seconds + WATCHDOG_GRACE_SECONDS, stop)
    timer.daemon = True
    timer.start()
    return timer


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.token_file and not is_hf_uri(args.uri):
        parser.error("--token-file applies to hf:// URIs only")
    rules = Rules(
        max_bytes=args.max_bytes,
        deadline_seconds=args.deadline_seconds,
        allow_http=args.allow_http,
        allow_private_hosts=args.allow_private_hosts,
        ca_file=args.ca_file,
    )
    watchdog = _watchdog(rules.deadline_seconds, args.uri)
    try:
        token = read_token(args.token_file) if args.token_file else None
        fetcher = Fetcher(rules, hub=Hub(args.hf_endpoint, token))
        fetcher.fetch_model(args.uri, args.dest, args.sha256, args.config_sha256)
    except FetchError as err:
        err.url = err.url or args.uri
        sys.stdout.flush()
        print(err.line(), file=sys.stderr, flush=True)
        return 1
    except OSError as err:  # the destination: read-only, full, missing permissions
        sys.stdout.flush()
        why = f"{err.strerror or err} ({err.filename})" if err.filename else str(err)
        print(f"{PREFIX}{why} for {display(args.uri)}", file=sys.stderr, flush=True)
        return 1
    finally:
        watchdog.cancel()
    print("model ready", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
