#!/usr/bin/env bash
# Build the project's container images without a daemon and without pulling anything, and
# cache them in .cache/images/ (git-ignored):
#
#   localhost/tts-base:bookworm  debootstrap minbase bookworm + python3/venv (the local base)
#   localhost/pause:3.10         the kubelet's sandbox image: pause.c from k8s.io/kubernetes
#   localhost/tts-runtime:dev    Dockerfile.runtime on the local base, wheels from a wheelhouse
#   localhost/tts-operator:dev   Dockerfile.operator on the local base, same wheelhouse
#
# Supply chain: the wheelhouse holds exactly the files the hash-locked requirements name
# (requirements/{runtime,piper,operator}.lock, made by `make locks`), downloaded with
# --require-hashes; the builds install them with --require-hashes --no-deps. Each Dockerfile's
# own base (a registry image pinned by digest) is replaced here by the local base, which
# cannot be pulled from anywhere: it is named by the digest buildah recorded when it was
# built (localhost/tts-base:bookworm@sha256:...), so an image is built on exactly the base its
# key names. The base's Debian packages are whatever the bookworm suite held that day,
# verified by debootstrap against the archive's signed Release file.
#
# Each image except the base is also written as an OCI archive next to a stamp file; load one
# into containerd with `ctr -n k8s.io images import PATH`. Every step is keyed on a hash of
# its inputs (recipe, Dockerfile, locks, copied sources, base image id, wheelhouse listing,
# versions): a warm run rebuilds nothing and runs no buildah/pip/gcc at all.
#
# The wheelhouse is downloaded on the host with .venv/bin/pip (host and base are CPython 3.11
# on glibc 2.36, x86_64, so the wheels pip picks for the host fit the image); inside the
# builds pip runs with --no-index --find-links=/wheels, the wheelhouse bind-mounted
# read-only: no network needed.
#
# Buildah uses a project-local store (.cache/images/storage, runroot .cache/images/run) with
# chroot isolation (no daemon, no user namespaces needed). The storage driver is overlay when
# the kernel can mount it here (native overlay diff: fast, shared layers), else vfs (a full
# copy per layer: slow and large); TTS_IMAGES_STORAGE_DRIVER forces one. A store keeps the
# driver it was created with (recorded in storage/.driver).
#
# stdout: KEY=VALUE lines (RUNTIME_IMAGE, RUNTIME_ARCHIVE, RUNTIME_IMAGE_BYTES, ... for
# runtime, operator, pause). stderr: one progress line per step. Tool output: the log file
# named on stderr (.cache/images/build.log). With --check it builds nothing: it prints the
# same lines when every image is built and fresh, otherwise it names the missing or stale
# ones on stderr and exits 1.
set -euo pipefail

# ---- The one place where versions and names are pinned ---------------------------------
K8S_VERSION=v1.37.2 # pause.c comes from this k8s.io/kubernetes module (hack/cluster-binaries.sh)
PAUSE_VERSION=3.10.2 # what that release's build/pause/Makefile tags (printed by `pause -v`)
LOCKS=(runtime.lock piper.lock operator.lock) # requirements/: every Python package in the images
DEBIAN_SUITE=bookworm
DEBIAN_MIRROR="${TTS_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
BASE_INCLUDE=python3,python3-venv,ca-certificates
BASE_PYTHON=3.11.2 # Debian bookworm's python3: the environment markers of the locks are for it
BASE_IMAGE=localhost/tts-base:$DEBIAN_SUITE
PAUSE_IMAGE=localhost/pause:3.10
RUNTIME_IMAGE=localhost/tts-runtime:dev
OPERATOR_IMAGE=localhost/tts-operator:dev
# -----------------------------------------------------------------------------------------

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE_DIR="${TTS_IMAGES_CACHE:-$ROOT/.cache/images}"
STORAGE="$CACHE_DIR/storage"
RUNROOT="$CACHE_DIR/run"
WHEELS="$CACHE_DIR/wheels"
CONTEXT="$CACHE_DIR/context"
LOG="$CACHE_DIR/build.log"
PIP="$ROOT/.venv/bin/pip"

log() { echo "[build-images] $*" >&2; }
sha() { sha256sum | cut -c1-64; }

CHECK_ONLY=false
case "${1:-}" in
  --check) CHECK_ONLY=true ;;
  "") ;;
  *)
    echo "usage: $0 [--check]" >&2
    exit 2
    ;;
esac

# ---- stamps: KEY=... ID=... BYTES=... lines next to each artifact -----------------------
stamp_file() { echo "$CACHE_DIR/$1.stamp"; }
stamp_get() { # NAME FIELD
  local f
  f="$(stamp_file "$1")"
  if [[ -f "$f" ]]; then sed -n "s/^$2=//p" "$f"; fi
}
stamp_fresh() { # NAME KEY [ARTIFACT]: built from exactly KEY (and its artifact is there).
  [[ "$(stamp_get "$1" KEY)" == "$2" ]] && { [[ -z "${3:-}" ]] || [[ -e "$3" ]]; }
}

# ---- inputs ---------------------------------------------------------------------------
pause_source() {
  local dir
  dir="$(GOFLAGS=-mod=mod go mod download -json "k8s.io/kubernetes@$K8S_VERSION" |
    sed -n 's/^[[:space:]]*"Dir": "\(.*\)",\{0,1\}$/\1/p')"
  [[ -f "$dir/build/pause/linux/pause.c" ]] || {
    log "cannot find build/pause/linux/pause.c in k8s.io/kubernetes@$K8S_VERSION"
    exit 1
  }
  echo "$dir/build/pause/linux/pause.c"
}

# What the Dockerfiles COPY (the locks, pyproject.toml README.md runtime/ operator/), minus
# bytecode.
context_files() {
  (cd "$ROOT" && {
    printf '%s\n' pyproject.toml README.md
    printf 'requirements/%s\n' "${LOCKS[@]}"
    find runtime operator -type f ! -path '*/__pycache__/*' ! -name '*.pyc' ! -path '*.egg-info/*'
  } | LC_ALL=C sort)
}
context_hash() { (cd "$ROOT" && context_files | tr '\n' '\0' | xargs -0 sha256sum | sha); }

# ---- keys (a recipe's own shell text is part of its key) ----------------------------------
base_key() {
  { echo "$DEBIAN_SUITE $DEBIAN_MIRROR minbase $BASE_INCLUDE"; declare -f build_base; } | sha
}
wheels_key() {
  {
    (cd "$ROOT/requirements" && sha256sum "${LOCKS[@]}")
    "$ROOT/.venv/bin/python" -c 'import sys, sysconfig; print(sys.version_info[:2], sysconfig.get_platform())'
    echo "$BASE_PYTHON"
    declare -f build_wheels for_image
  } | sha
}
pause_key() {
  {
    sha256sum <"$PAUSE_SRC"
    gcc --version | head -n1
    echo "$PAUSE_IMAGE $PAUSE_VERSION"
    declare -f build_pause smoke_pause push_archive
  } | sha
}
image_key() { # DOCKERFILE: the Dockerfile, the copied sources, the base, the wheelhouse.
  {
    cat "$ROOT/$1"
    echo "context=$CONTEXT_HASH base=$(stamp_get base ID) wheels=$(stamp_get wheels LISTING)"
    declare -f build_dockerfile smoke_runtime smoke_operator push_archive
  } | sha
}

# ---- buildah --------------------------------------------------------------------------
pick_driver() {
  if [[ -n "${TTS_IMAGES_STORAGE_DRIVER:-}" ]]; then
    echo "$TTS_IMAGES_STORAGE_DRIVER"
  elif [[ -f "$STORAGE/.driver" ]]; then
    cat "$STORAGE/.driver"
  else # Can this kernel mount an overlay with upper/work dirs on this filesystem?
    local t
    t="$(mktemp -d "$CACHE_DIR/.overlay-probe.XXXXXX")"
    mkdir -p "$t/lower" "$t/upper" "$t/work" "$t/merged"
    if mount -t overlay overlay -o "lowerdir=$t/lower,upperdir=$t/upper,workdir=$t/work" \
      "$t/merged" 2>/dev/null; then
      umount "$t/merged"
      echo overlay
    else
      echo vfs
    fi
    rm -rf "$t"
  fi
}
bh() { buildah --root "$STORAGE" --runroot "$RUNROOT" --storage-driver "$DRIVER" "$@"; }
image_id() { bh images --noheading --no-trunc --format '{{.ID}}' "$1" | head -n1; }
image_digest() { bh inspect --type image --format '{{.FromImageDigest}}' "$1"; }
image_bytes() { # uncompressed: the sum of the image's layer diff sizes in the store
  "$ROOT/.venv/bin/python" - "$STORAGE/$DRIVER-images/images.json" \
    "$STORAGE/$DRIVER-layers/layers.json" "$(image_id "$1")" <<'PY'
import json, sys
images, layers, image_id = sys.argv[1:]
image_id = image_id.removeprefix("sha256:")
layer = next(i["layer"] for i in json.load(open(images)) if i["id"] == image_id)
by_id = {entry["id"]: entry for entry in json.load(open(layers))}
total = 0
while layer:
    total += by_id[layer].get("diff-size", 0)
    layer = by_id[layer].get("parent", "")
print(total)
PY
}
push_archive() { # IMAGE ARCHIVE: an OCI archive whose ref.name is the full image name.
  rm -f "$2.tmp"
  bh push --quiet --format oci "$1" "oci-archive:$2.tmp:$1"
  mv "$2.tmp" "$2"
}

# ---- recipes (their output goes to the log) -----------------------------------------------
build_base() {
  local rootfs="$CACHE_DIR/base-rootfs" ctr mnt
  rm -rf "$rootfs"
  debootstrap --variant=minbase --include="$BASE_INCLUDE" "$DEBIAN_SUITE" "$rootfs" "$DEBIAN_MIRROR"
  # Small and cache-free: no apt lists/archives, logs, man/info pages, translations or docs
  # (the copyright files stay).
  rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin \
    "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* \
    "$rootfs"/var/cache/debconf/*-old "$rootfs"/var/lib/dpkg/*-old "$rootfs"/debootstrap
  find "$rootfs/usr/share/doc" -type f ! -name copyright -delete
  find "$rootfs/usr/share/doc" -type d -empty -delete
  find "$rootfs/usr/share/locale" -mindepth 1 -maxdepth 1 -type d -exec rm -rf {} +
  find "$rootfs/var/log" -type f -delete
  : >"$rootfs/etc/resolv.conf" # the container runtime provides it
  echo localhost >"$rootfs/etc/hostname"
  ctr="$(bh from --pull=never scratch)"
  mnt="$(bh mount "$ctr")"
  cp -a "$rootfs/." "$mnt/"
  bh umount "$ctr"
  # NVIDIA_VISIBLE_DEVICES=all exactly as the nvidia/cuda base sets it: on a node whose
  # container runtime is NVIDIA's, a container that asks for no GPU sees every GPU unless its
  # pod spec says otherwise, so the e2e suite sees what a GPU cluster sees (issue 22).
  bh config --os linux --arch amd64 \
    --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin --env LANG=C.UTF-8 \
    --env NVIDIA_VISIBLE_DEVICES=all \
    --cmd /bin/bash \
    --label org.opencontainers.image.title=tts-base \
    --label "org.opencontainers.image.description=Debian $DEBIAN_SUITE minbase + $BASE_INCLUDE (debootstrap)" \
    "$ctr"
  bh commit --quiet --rm "$ctr" "$BASE_IMAGE"
  rm -rf "$rootfs"
}

for_image() { # LOCK: its pins whose markers hold on the base's Python, without the markers.
  "$ROOT/.venv/bin/python" - "$1" "$BASE_PYTHON" <<'PY'
import re, sys
from packaging.markers import Marker, default_environment
env = default_environment() | {"python_full_version": sys.argv[2],
                               "python_version": ".".join(sys.argv[2].split(".")[:2])}
keep = True
for line in open(sys.argv[1]):
    if line[:1] not in (" ", "#", "\n"):  # a pin starts a block: "name==version [; marker] \"
        pin, _, marker = line.partition(" ; ")
        keep = not marker or Marker(marker.rstrip(" \\\n")).evaluate(env)
        line = pin.rstrip(" \\\n") + " \\\n" if marker else line
    if keep:
        sys.stdout.write(line)
PY
}

build_wheels() {
  local tmp="$WHEELS.tmp" lock
  rm -rf "$tmp"
  mkdir -p "$tmp"
  # Exactly what the locks pin (the project's dependencies for both images, the build backend
  # that builds the project itself inside the image, piper-tts), as published wheels whose
  # hashes the locks hold; nothing is resolved or built here. The images build the project
  # from its sources.
  # Environment markers are judged for the image's Python, not the host's (the host's 3.11.7
  # would skip async-timeout, which redis needs below 3.11.3).
  for lock in "${LOCKS[@]}"; do
    for_image "$ROOT/requirements/$lock" >"$tmp/$lock"
    "$PIP" download --disable-pip-version-check --require-hashes --no-deps --only-binary=:all: \
      --dest "$tmp" -r "$tmp/$lock"
    rm "$tmp/$lock"
  done
  rm -rf "$WHEELS"
  mv "$tmp" "$WHEELS"
}

build_pause() {
  local dir="$CACHE_DIR/pause" ctr
  mkdir -p "$dir"
  gcc -static -O2 -Wall -Werror -DVERSION="v$PAUSE_VERSION" -o "$dir/pause" "$PAUSE_SRC"
  strip "$dir/pause"
  # As upstream's Dockerfile: FROM scratch, /pause, USER 65535:65535, ENTRYPOINT ["/pause"].
  ctr="$(bh from --pull=never scratch)"
  bh copy --chmod 0755 "$ctr" "$dir/pause" /pause
  bh config --os linux --arch amd64 --user 65535:65535 --entrypoint '["/pause"]' --cmd '' \
    --label org.opencontainers.image.title=pause \
    --label "org.opencontainers.image.source=k8s.io/kubernetes@$K8S_VERSION build/pause/linux/pause.c" \
    --label org.opencontainers.image.licenses=Apache-2.0 \
    "$ctr"
  bh commit --quiet --rm "$ctr" "$PAUSE_IMAGE"
}

stage_context() { # exactly the files context_hash covers
  rm -rf "$CONTEXT"
  mkdir -p "$CONTEXT"
  (cd "$ROOT" && context_files | tar -cf - --no-recursion -T -) | tar -C "$CONTEXT" -xf -
}

build_dockerfile() { # DOCKERFILE IMAGE BASE_ARG
  # The base by the digest its stamp recorded: a base re-tagged since fails the build.
  bh bud --isolation chroot --pull=never --format oci --layers=false \
    -f "$ROOT/$1" \
    --build-arg "$3=$BASE_IMAGE@$(stamp_get base DIGEST)" \
    --build-arg "PIP_INSTALL_OPTIONS=--no-index --find-links=/wheels" \
    -v "$WHEELS:/wheels:ro" \
    -t "$2" "$CONTEXT"
}

in_image() { # IMAGE CMD...: run CMD in a throwaway container of IMAGE as uid 10001.
  local image=$1 ctr rc=0
  shift
  echo "---- smoke test in $image as uid 10001: $*"
  ctr="$(bh from --pull=never "$image")"
  # buildah's chroot isolation re-executes itself from a sealed memfd copy; on this kernel
  # that sealing now and then fails with EBUSY ("Close_Fd sealing memfd copy: Device or
  # resource busy") before the command runs at all. Try again; a real failure fails thrice.
  for attempt in 1 2 3; do
    rc=0
    bh run --isolation chroot --user 10001:10001 "$ctr" -- "$@" || rc=$?
    ((rc == 0)) && break
    echo "---- attempt $attempt exited $rc"
  done
  bh rm "$ctr" >/dev/null
  return "$rc"
}
smoke_runtime() {
  in_image "$RUNTIME_IMAGE" tts-runtime --help
  in_image "$RUNTIME_IMAGE" python3 -c '
import onnxruntime, piper, tts_runtime
from piper import espeakbridge
import tts_runtime.app
print("providers:", onnxruntime.get_available_providers())
print("espeakbridge:", espeakbridge.__file__)'
}
smoke_operator() {
  in_image "$OPERATOR_IMAGE" tts-operator --help
}
smoke_pause() { # a static binary: it runs on the host as it would in the sandbox
  "$CACHE_DIR/pause/pause" -v
}

# ---- steps ------------------------------------------------------------------------------
FAILED_STEP=""
on_exit() {
  local rc=$?
  if ((rc != 0)) && [[ -n "$FAILED_STEP" ]]; then # the summary is the last line
    log "last lines of $LOG:"
    tail -n 25 "$LOG" >&2 || true
    log "$FAILED_STEP: FAILED (exit $rc); the full output is in $LOG"
  fi
}
trap on_exit EXIT

BUILT_ANY=false
MISSING=()
step() { # NAME KEY ARTIFACT CMD...: run CMD (output to the log) unless NAME is fresh.
  local name=$1 key=$2 artifact=$3
  shift 3
  if stamp_fresh "$name" "$key" "$artifact"; then
    $CHECK_ONLY || log "$name: up to date (0s)"
    return 0
  fi
  if $CHECK_ONLY; then
    MISSING+=("$name")
    return 0
  fi
  local start=$SECONDS
  $BUILT_ANY || : >"$LOG" # the log holds the last run that built something
  log "$name: building ..."
  FAILED_STEP=$name
  rm -f "$(stamp_file "$name")"
  echo "==== $(date -u +%FT%TZ) $name" >>"$LOG"
  "$@" >>"$LOG" 2>&1
  FAILED_STEP=""
  BUILT_ANY=true
  log "$name: built in $((SECONDS - start))s"
}

write_image_stamp() { # NAME KEY IMAGE
  printf 'KEY=%s\nID=%s\nDIGEST=%s\nBYTES=%s\n' "$2" "$(image_id "$3")" "$(image_digest "$3")" \
    "$(image_bytes "$3")" >"$(stamp_file "$1")"
}

do_base() {
  build_base
  write_image_stamp base "$1" "$BASE_IMAGE"
}
do_wheels() {
  build_wheels
  printf 'KEY=%s\nLISTING=%s\nCOUNT=%s\n' "$1" "$(find "$WHEELS" -name '*.whl' -printf '%f\n' | LC_ALL=C sort | sha)" \
    "$(find "$WHEELS" -name '*.whl' | wc -l)" >"$(stamp_file wheels)"
}
do_pause() {
  build_pause
  smoke_pause
  push_archive "$PAUSE_IMAGE" "$CACHE_DIR/pause.oci.tar"
  write_image_stamp pause "$1" "$PAUSE_IMAGE"
}
do_image() { # NAME KEY DOCKERFILE IMAGE BASE_ARG SMOKE
  stage_context
  build_dockerfile "$3" "$4" "$5"
  "$6"
  push_archive "$4" "$CACHE_DIR/$1.oci.tar"
  write_image_stamp "$1" "$2" "$4"
}

mkdir -p "$CACHE_DIR"
if ! $CHECK_ONLY; then
  exec 9>"$CACHE_DIR/.lock"
  flock 9 # one build at a time per cache folder
  log "log: $LOG"
fi
total_start=$SECONDS
DRIVER="$(pick_driver)"
PAUSE_SRC="$(pause_source)"
CONTEXT_HASH="$(context_hash)"

# The base must still be in the store when something is built on it.
if ! $CHECK_ONLY && stamp_fresh base "$(base_key)" && ! bh inspect --type image "$BASE_IMAGE" >/dev/null 2>&1; then
  rm -f "$(stamp_file base)"
fi
if ! $CHECK_ONLY && [[ ! -f "$STORAGE/.driver" ]]; then
  mkdir -p "$STORAGE"
  echo "$DRIVER" >"$STORAGE/.driver"
  log "storage: $STORAGE (driver $DRIVER)"
fi

KEY="$(base_key)"
step base "$KEY" "" do_base "$KEY"
if ! $CHECK_ONLY && [[ -z "$(stamp_get base DIGEST)" ]]; then # a stamp from before digests
  write_image_stamp base "$KEY" "$BASE_IMAGE"
fi
KEY="$(wheels_key)"
step wheels "$KEY" "$WHEELS" do_wheels "$KEY"
KEY="$(pause_key)"
step pause "$KEY" "$CACHE_DIR/pause.oci.tar" do_pause "$KEY"
# Keys of the two images read the base id and wheelhouse listing from their stamps.
KEY="$(image_key Dockerfile.runtime)"
step runtime "$KEY" "$CACHE_DIR/runtime.oci.tar" \
  do_image runtime "$KEY" Dockerfile.runtime "$RUNTIME_IMAGE" CUDA_IMAGE smoke_runtime
KEY="$(image_key Dockerfile.operator)"
step operator "$KEY" "$CACHE_DIR/operator.oci.tar" \
  do_image operator "$KEY" Dockerfile.operator "$OPERATOR_IMAGE" PYTHON_IMAGE smoke_operator

if $CHECK_ONLY && ((${#MISSING[@]})); then
  log "images missing or stale in $CACHE_DIR: ${MISSING[*]} (run: make images)"
  exit 1
fi
if $BUILT_ANY; then
  bh rmi --prune >>"$LOG" 2>&1 || true # superseded images and build stages
  rm -rf "$CONTEXT"
  log "done in $((SECONDS - total_start))s"
fi

cat <<EOF
STORAGE_DRIVER=$DRIVER
BASE_IMAGE=$BASE_IMAGE
RUNTIME_IMAGE=$RUNTIME_IMAGE
RUNTIME_ARCHIVE=$CACHE_DIR/runtime.oci.tar
RUNTIME_IMAGE_BYTES=$(stamp_get runtime BYTES)
OPERATOR_IMAGE=$OPERATOR_IMAGE
OPERATOR_ARCHIVE=$CACHE_DIR/operator.oci.tar
OPERATOR_IMAGE_BYTES=$(stamp_get operator BYTES)
PAUSE_IMAGE=$PAUSE_IMAGE
PAUSE_ARCHIVE=$CACHE_DIR/pause.oci.tar
PAUSE_IMAGE_BYTES=$(stamp_get pause BYTES)
EOF
