"""Supply chain of the two images: registry bases pinned by digest, every Python package from a
hash-locked requirements file (requirements/*.lock, `make locks`) that still fits
pyproject.toml, no unpinned pip upgrade anywhere in the build, and hack/build-images.sh
building from the same locks."""

from __future__ import annotations

import re
import shlex
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
REQUIREMENTS = ROOT / "requirements"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
MAKEFILE = (ROOT / "Makefile").read_text()
BUILD_IMAGES = (ROOT / "hack" / "build-images.sh").read_text()
DOCKERFILES = ["Dockerfile.runtime", "Dockerfile.operator"]
# What each image installs: its lock(s), the pyproject extra the lock is resolved from.
IMAGE_LOCKS = {"Dockerfile.runtime": ["runtime.lock", "piper.lock"],
               "Dockerfile.operator": ["operator.lock"]}  # fmt: skip
EXTRA_LOCKS = {"runtime": "runtime.lock", "operator": "operator.lock"}
# Where the images' Python comes from: the local debootstrap base and python:3.11-slim (3.11),
# Ubuntu 24.04 under the CUDA base (3.12); all linux x86_64.
TARGET_PYTHONS = ["3.11", "3.12"]
SHA256 = re.compile(r"^sha256:[0-9a-f]{64}$")
PINNED_IMAGE = re.compile(r"(?P<ref>[\w.\-/]+:[\w.\-]+)@(?P<digest>sha256:[0-9a-f]{64})")
# Roots uv names in `# via` annotations: the project's pyproject and the .in files.
LOCK_ROOTS = {"tts-operator (pyproject.toml)"} | {
    f"-r requirements/{p.name}" for p in REQUIREMENTS.glob("*.in")
}


@dataclass
class Pin:
    name: str  # canonical
    version: Version
    marker: Marker | None
    hashes: list[str]
    via: list[str] = field(default_factory=list)

    def applies(self, python: str) -> bool:
        return self.marker is None or self.marker.evaluate(_environment(python))


def _environment(python: str) -> dict[str, str]:
    return {
        "python_version": python,
        "python_full_version": f"{python}.0",
        "implementation_name": "cpython",
        "platform_python_implementation": "CPython",
        "sys_platform": "linux",
        "platform_system": "Linux",
        "platform_machine": "x86_64",
        "os_name": "posix",
        "extra": "",
    }


def read_lock(path: Path) -> list[Pin]:
    """The pins of a `pip install -r` file with hashes, as uv writes one; anything else in it
    (an option, an unpinned or URL requirement, a pin without a hash) fails the test."""
    pins: list[Pin] = []
    in_via = False
    text = re.sub(r"\\\n\s*", " ", path.read_text())  # join continuation lines
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        where = f"{path.name}:{number}: {stripped}"
        if not stripped:
            continue
        if stripped.startswith("#"):
            comment = stripped.lstrip("#").strip()
            if not pins:  # the header
                continue
            if comment == "via":
                in_via = True
            elif comment.startswith("via "):
                pins[-1].via.append(comment.removeprefix("via "))
                in_via = False
            elif in_via and line.startswith("    #   "):
                pins[-1].via.append(comment)
            continue
        in_via = False
        requirement, *options = re.split(r"\s+(?=--)", stripped)
        assert not requirement.startswith("-"), f"an option, not a pin: {where}"
        hashes = [o.removeprefix("--hash=") for o in options if o.startswith("--hash=")]
        assert len(hashes) == len(options), f"options other than --hash: {where}"
        assert hashes and all(SHA256.match(h) for h in hashes), f"pin without a hash: {where}"
        req = Requirement(requirement)
        assert req.url is None and not req.extras, f"not a plain pin: {where}"
        specs = list(req.specifier)
        assert len(specs) == 1 and specs[0].operator == "==", f"not pinned with ==: {where}"
        assert "*" not in specs[0].version, f"a wildcard pin: {where}"
        pins.append(Pin(canonicalize_name(req.name), Version(specs[0].version), req.marker, hashes))
    assert pins, f"{path} pins nothing"
    return pins


def _lock_files() -> list[str]:
    return sorted(p.name for p in REQUIREMENTS.glob("*.lock"))


def _in_pins(name: str) -> dict[str, Version]:
    """name==version lines of a requirements/*.in file."""
    pins: dict[str, Version] = {}
    for line in (REQUIREMENTS / name).read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            req = Requirement(line)
            (spec,) = req.specifier
            assert spec.operator == "==", line
            pins[canonicalize_name(req.name)] = Version(spec.version)
    return pins


# ---- the locks --------------------------------------------------------------------------


def test_the_locks_are_there() -> None:
    assert _lock_files() == ["operator.lock", "piper.lock", "runtime.lock", "tools.lock"]


@pytest.mark.parametrize("lock", _lock_files())
def test_every_lock_line_is_an_exact_pin_with_hashes(lock: str) -> None:
    pins = read_lock(REQUIREMENTS / lock)
    for python in TARGET_PYTHONS:
        names = [p.name for p in pins if p.applies(python)]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        assert not duplicates, f"{lock}: two pins apply on Python {python}: {duplicates}"


@pytest.mark.parametrize("lock", _lock_files())
def test_every_lock_is_made_by_make_locks(lock: str) -> None:
    header = (REQUIREMENTS / lock).read_text().splitlines()[:2]
    assert header[1].strip("# ") == "make locks", header
    assert f"-o requirements/{lock}" in MAKEFILE, f"`make locks` does not write {lock}"


@pytest.mark.parametrize("extra", sorted(EXTRA_LOCKS))
def test_the_lock_fits_pyproject(extra: str) -> None:
    """Each dependency of the image's extra (the base list, the extra, the build backend) is
    pinned, for every target Python, at a version pyproject.toml's range accepts: adding a
    dependency or moving a range without `make locks` fails here."""
    pins = read_lock(REQUIREMENTS / EXTRA_LOCKS[extra])
    wanted = [
        *PYPROJECT["project"]["dependencies"],
        *PYPROJECT["project"]["optional-dependencies"][extra],
        *PYPROJECT["build-system"]["requires"],
    ]
    assert len(wanted) > 5
    for python in TARGET_PYTHONS:
        applying = {p.name: p for p in pins if p.applies(python)}
        for line in wanted:
            req = Requirement(line)
            if req.marker is not None and not req.marker.evaluate(_environment(python)):
                continue
            pin = applying.get(canonicalize_name(req.name))
            assert pin is not None, f"{EXTRA_LOCKS[extra]} has no pin for {line} (Python {python})"
            assert req.specifier.contains(pin.version, prereleases=True), (
                f"{EXTRA_LOCKS[extra]} pins {pin.name}=={pin.version}, outside {line}: "
                "run `make locks`"
            )


@pytest.mark.parametrize("lock", ["runtime.lock", "operator.lock"])
def test_each_pin_is_needed_by_something_else_in_the_lock(lock: str) -> None:
    """uv's `# via` annotations: every pin comes from pyproject, build.in, or another pin of
    the same lock, so nothing was added by hand and the other image's packages stay out."""
    pins = read_lock(REQUIREMENTS / lock)
    names = {p.name for p in pins}
    for pin in pins:
        assert pin.via, f"{lock}: {pin.name} says nothing about why it is there"
        strays = [v for v in pin.via if v not in LOCK_ROOTS and canonicalize_name(v) not in names]
        assert not strays, f"{lock}: {pin.name} is there for {strays}, which the lock lacks"


def test_no_image_lock_holds_the_cpu_onnxruntime() -> None:
    """Its module would clobber onnxruntime-gpu's (the reason piper-tts is locked --no-deps)."""
    for lock in ["runtime.lock", "piper.lock", "operator.lock"]:
        assert "onnxruntime" not in {p.name for p in read_lock(REQUIREMENTS / lock)}, lock
    runtime = {p.name for p in read_lock(REQUIREMENTS / "runtime.lock")}
    operator = {p.name for p in read_lock(REQUIREMENTS / "operator.lock")}
    assert "onnxruntime-gpu" in runtime and "onnxruntime-gpu" not in operator
    assert "kopf" in operator and "kopf" not in runtime


def test_build_in_is_pyprojects_build_system() -> None:
    lines = (REQUIREMENTS / "build.in").read_text().splitlines()
    listed = {str(Requirement(line)) for line in lines if line.strip() and line[0] != "#"}
    assert listed == {str(Requirement(r)) for r in PYPROJECT["build-system"]["requires"]}


def test_piper_is_locked_alone_at_the_makefiles_version() -> None:
    (pin,) = read_lock(REQUIREMENTS / "piper.lock")
    makefile_version = re.search(r"^PIPER_VERSION := (\S+)$", MAKEFILE, re.MULTILINE)
    assert makefile_version is not None
    assert pin.name == "piper-tts"
    assert pin.version == Version(makefile_version.group(1))
    assert _in_pins("piper.in") == {"piper-tts": pin.version}
    assert pin.via == ["-r requirements/piper.in"]


def test_tools_lock_pins_what_tools_in_names() -> None:
    pins = read_lock(REQUIREMENTS / "tools.lock")
    assert {p.name: p.version for p in pins} == _in_pins("tools.in")
    assert {p.name for p in pins} == {"pip", "uv"}


# ---- the Dockerfiles --------------------------------------------------------------------


def _instructions(dockerfile: str) -> list[tuple[str, str, list[str]]]:
    """(INSTRUCTION, arguments, the comment lines right above it), continuation lines joined."""
    out: list[tuple[str, str, list[str]]] = []
    comments: list[str] = []
    text = re.sub(r"\\\n", " ", (ROOT / dockerfile).read_text())
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("#"):
            comments.append(stripped)
        elif stripped:
            keyword, _, args = stripped.partition(" ")
            out.append((keyword.upper(), args.strip(), comments))
            comments = []
        else:
            comments = []
    return out


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_base_images_are_pinned_by_digest_with_the_tag_named(dockerfile: str) -> None:
    instructions = _instructions(dockerfile)
    args: dict[str, tuple[str, list[str]]] = {}
    stages: set[str] = set()
    froms = 0
    for keyword, rest, comments in instructions:
        if keyword == "ARG" and "=" in rest:
            name, _, default = rest.partition("=")
            args[name] = (default.strip('"'), comments)
        elif keyword == "FROM":
            froms += 1
            image, *alias = rest.split()
            if alias:
                assert alias[0].upper() == "AS", rest
                stages.add(alias[1])
            if image in stages:
                continue
            comments_above: list[str] = []
            arg = re.fullmatch(r"\$\{?(\w+)\}?", image)
            if arg:
                assert arg.group(1) in args, f"FROM {image}: the ARG has no default"
                image, comments_above = args[arg.group(1)]
            pinned = PINNED_IMAGE.fullmatch(image)
            assert pinned, f"{dockerfile}: base {image} is not name:tag@sha256:<digest>"
            assert any(pinned["ref"] in c for c in comments_above), (
                f"{dockerfile}: no comment above the pin names its tag {pinned['ref']}"
            )
    assert froms == 2


def _pip_installs(dockerfile: str) -> list[list[str]]:
    commands = []
    for keyword, rest, _ in _instructions(dockerfile):
        if keyword == "RUN":
            for part in re.split(r"&&|;", rest):
                words = shlex.split(part)
                if "pip" in " ".join(words) and "install" in words:
                    commands.append(words[words.index("install") + 1 :])
    return commands


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_images_install_python_packages_only_from_their_hash_locks(dockerfile: str) -> None:
    installs = _pip_installs(dockerfile)
    assert len(installs) == 2, installs
    locked, project = installs
    # 1. Every dependency, from the image's locks, hash-checked, nothing resolved.
    assert {"--require-hashes", "--no-deps"} <= set(locked), locked
    files = [locked[i + 1] for i, word in enumerate(locked) if word == "-r"]
    assert files == [f"requirements/{lock}" for lock in IMAGE_LOCKS[dockerfile]], locked
    packages = [w for w in locked if not w.startswith("-") and w not in files]
    assert packages == ["$PIP_INSTALL_OPTIONS"], f"packages outside the lock: {packages}"
    copies = " ".join(rest for keyword, rest, _ in _instructions(dockerfile) if keyword == "COPY")
    assert all(f in copies for f in files), "a lock the build installs is not copied in"
    # 2. The project itself, from the sources, with nothing fetched and no dependency added.
    assert {"--no-index", "--no-deps", "--no-build-isolation"} <= set(project), project
    assert [w for w in project if not w.startswith("-")] == ["."], project


def test_no_pip_upgrade_in_the_build() -> None:
    """The build never asks pip for "the newest" of anything, pip included."""
    upgrade = re.compile(r"pip3?\b.*\binstall\b.*(--upgrade|\s-U\b)")
    scripts = sorted((ROOT / "hack").glob("*.sh"))
    assert ROOT / "hack" / "build-images.sh" in scripts
    for path in [*(ROOT / d for d in DOCKERFILES), ROOT / "Makefile", *scripts]:
        for number, line in enumerate(path.read_text().splitlines(), 1):
            assert not upgrade.search(line), f"{path.name}:{number}: {line.strip()}"


# ---- hack/build-images.sh ---------------------------------------------------------------


def test_build_images_builds_from_the_locks() -> None:
    """The wheelhouse is exactly the locked files (downloaded hash-checked, not resolved), the
    locks are part of the build context, and the local base is named by digest."""
    locks = re.search(r"^LOCKS=\((.*)\)", BUILD_IMAGES, re.MULTILINE)
    assert locks is not None
    assert sorted(locks.group(1).split("#")[0].split()) == sorted(
        {lock for image_locks in IMAGE_LOCKS.values() for lock in image_locks}
    )
    body = BUILD_IMAGES.split("\nbuild_wheels() {", 1)[1].split("\n}\n", 1)[0]
    assert '"$PIP" download' in body and "--require-hashes" in body and "--no-deps" in body
    assert "pip wheel" not in body and '"$PIP" wheel' not in body, "the wheelhouse is resolved"
    context = BUILD_IMAGES.split("\ncontext_files() {", 1)[1].split("\n}\n", 1)[0]
    assert 'requirements/%s\\n\' "${LOCKS[@]}"' in context
    assert '"$3=$BASE_IMAGE@$(stamp_get base DIGEST)"' in BUILD_IMAGES
