"""Container image references, parsed as the reference grammar defines them
(github.com/distribution/reference, the grammar every container runtime applies):

    reference  := name [ ":" tag ] [ "@" digest ]
    name       := [ domain "/" ] path-component [ "/" path-component ]*
    domain     := host [ ":" port ]          (a DNS name, IPv4 or [IPv6] address)

The first component of a name is its registry host only when it holds a "." or a ":", is
`localhost`, or has an upper-case letter; otherwise the image is on Docker Hub
(`docker.io`), and a one-component Docker Hub path is under `library/`. So
`tts-runtime:dev` is `docker.io/library/tts-runtime` with tag `dev`, while
`tts-runtime:5000/evil/miner` is repository `evil/miner` on the registry host
`tts-runtime:5000`. The policy compares registry host and repository path, never strings.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

DOCKER_HUB = "docker.io"
_HUB_ALIASES = frozenset({"docker.io", "index.docker.io", "registry-1.docker.io"})
_ALNUM = r"[a-z0-9]+"
_PATH_COMPONENT = rf"{_ALNUM}(?:(?:[._]|__|-+){_ALNUM})*"
_PATH = re.compile(rf"{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*")
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = re.compile(
    rf"(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|\[[0-9a-fA-F:.]+\])(?::[0-9]+)?"
)
_TAG = re.compile(r"[\w][\w.-]{0,127}")
_DIGEST = re.compile(r"[a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-fA-F0-9]{32,}")
NAME_MAX = 255


@dataclass(frozen=True)
class ImageRef:
    """One image reference, normalised: `registry` lower-case, Docker Hub as docker.io,
    its official images under library/."""

    registry: str
    path: str
    tag: str | None = None
    digest: str | None = None

    @property
    def repository(self) -> str:
        return f"{self.registry}/{self.path}"

    def under(self, registry: str, path_prefix: str) -> bool:
        """On `registry` below `path_prefix`, component by component ("" is the whole
        registry)."""
        return self.registry == registry and (
            not path_prefix or self.path.startswith(path_prefix + "/")
        )


def split_domain(name: str) -> tuple[str, str]:
    """(registry host, repository path) of a name without tag or digest, normalised."""
    first, slash, rest = name.partition("/")
    if not slash or (
        not any(c in first for c in ".:") and first != "localhost" and first.lower() == first
    ):
        registry, path = DOCKER_HUB, name
    else:
        registry, path = first.lower(), rest
    if registry in _HUB_ALIASES:
        registry = DOCKER_HUB
        if "/" not in path:
            path = f"library/{path}"
    return registry, path


def parse(reference: str) -> ImageRef:
    """`reference` parsed; ValueError saying why when it is not an image reference."""
    name, at, digest = reference.partition("@")
    if at and not _DIGEST.fullmatch(digest):
        raise ValueError(f"{reference!r}: {digest!r} is not a digest (ALGORITHM:HEX)")
    tag = None
    slash, colon = name.rfind("/"), name.rfind(":")
    if colon > slash:
        name, tag = name[:colon], name[colon + 1 :]
        if not _TAG.fullmatch(tag):
            raise ValueError(f"{reference!r}: {tag!r} is not a tag")
    if not name or len(name) > NAME_MAX:
        raise ValueError(f"{reference!r}: the name must have 1 to {NAME_MAX} characters")
    registry, path = split_domain(name)
    if registry != DOCKER_HUB and not _DOMAIN.fullmatch(registry):
        raise ValueError(f"{reference!r}: {registry!r} is not a registry host")
    if not _PATH.fullmatch(path):
        raise ValueError(
            f"{reference!r}: {path!r} is not a repository path (lower-case letters, digits "
            "and . _ - separators, in /-separated components)"
        )
    return ImageRef(registry, path, tag, digest or None)


@dataclass(frozen=True)
class ImageRule:
    """One entry of policy.allowedImagePrefixes:

    - `REGISTRY/` or `REGISTRY/PATH/` (ends with "/"): every repository on that registry
      host under that path (`ghcr.io/acme/`; `acme/` is Docker Hub's acme);
    - `NAME` (or `NAME:`): that one repository, any tag or digest;
    - `NAME@`: that repository by digest only;
    - `NAME:TAG`: exactly that tag (and no digest, which would override it);
    - `NAME@DIGEST` (a tag beside it is ignored, as runtimes ignore it): exactly that image.
    """

    registry: str
    path: str
    subtree: bool = False
    tag: str | None = None
    digest: str | None = None
    digest_only: bool = False

    @classmethod
    def parse(cls, entry: str) -> ImageRule:
        if entry.endswith("/"):
            # Parsed with two components added, so that Docker Hub's library/ rule (which
            # applies to one-component paths only) leaves the prefix as written.
            ref = parse(entry + "x/y")
            return cls(ref.registry, ref.path.removesuffix("x/y").rstrip("/"), subtree=True)
        if entry.endswith("@"):
            ref = parse(entry[:-1])
            return cls(ref.registry, ref.path, digest_only=True)
        ref = parse(entry.removesuffix(":"))
        return cls(ref.registry, ref.path, tag=None if ref.digest else ref.tag, digest=ref.digest)

    def allows(self, image: ImageRef) -> bool:
        if self.subtree:
            return image.under(self.registry, self.path)
        if (image.registry, image.path) != (self.registry, self.path):
            return False
        if self.digest:
            return image.digest == self.digest
        if self.tag:
            return image.tag == self.tag and image.digest is None
        return image.digest is not None or not self.digest_only


def repository_rule(reference: str) -> str:
    """The allowedImagePrefixes entry for "this image's repository, any tag or digest"."""
    return parse(reference).repository
