#!/usr/bin/env bash
# Build the local cluster's binaries from their Go modules (no downloads except the Go
# module proxy) and cache them in .cache/k8s/<kubernetes version>/bin/.
#
# Prints one KEY=path line per binary and BIN_DIR=...; a warm run (everything already
# built at the pinned versions) runs no Go command and prints nothing else. A cold run shows
# one progress line per component it builds on stderr ("[cluster-binaries] 5/14 kubelet ...
# built in 23s") and keeps the Go toolchain's own output (go: downloading ..., compiler
# errors) in .cache/k8s/<version>/build.log, whose path it prints once; when a build fails it
# prints the tail of that log. stdout stays KEY=path only, so callers can
# `eval "$(hack/cluster-binaries.sh)"` or parse it.
# With --check it builds nothing: it prints the same lines when every binary is there,
# otherwise it names the missing ones on stderr and exits 1 (the e2e tests' skip reason).
#
# Why a wrapper module: `go install k8s.io/kubernetes/cmd/...@vX` refuses modules with
# replace directives, and k8s.io/kubernetes replaces every staging module (k8s.io/api,
# client-go, ...) with a local path. The wrapper requires k8s.io/kubernetes and replaces
# each staging module with its published v0.Y.Z tag. etcd's server is already in that
# module graph (k8s.io/kubernetes requires go.etcd.io/etcd/server/v3), so etcd is built
# from the same wrapper, at the version Kubernetes itself pins.
set -euo pipefail

# ---- The one place where versions are pinned -------------------------------------------
K8S_VERSION=v1.37.2 # kube-apiserver, -controller-manager, -scheduler, kubectl, kubelet,
#                     kube-proxy (+ the etcd it pins; the stub GPU plugin's k8s.io/kubelet API)
KWOK_VERSION=v0.8.0 # kwok, kwokctl
HELM_VERSION=v3.22.0
CUSTOM_METRICS_VERSION=v1.37.0 # sigs.k8s.io/custom-metrics-apiserver test-adapter
COREDNS_VERSION=v1.15.0        # github.com/coredns/coredns (coremain + plugins, hack/coredns)
PROMETHEUS_VERSION=v0.316.0    # github.com/prometheus/prometheus: the Go module tag of Prometheus 3.16.0
KEDA_VERSION=v2.21.0           # github.com/kedacore/keda/v2: operator + metrics API server (adapter)
# -----------------------------------------------------------------------------------------

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE_DIR="${TTS_K8S_CACHE:-$ROOT/.cache/k8s}/$K8S_VERSION"
BIN_DIR="$CACHE_DIR/bin"
WRAPPER_DIR="$CACHE_DIR/wrapper"
STAMP_DIR="$BIN_DIR/.stamps"
BUILD_LOG="$CACHE_DIR/build.log"

export CGO_ENABLED=0
export GOFLAGS="${GOFLAGS_EXTRA:-} -mod=mod -buildvcs=false -trimpath -p=${GO_BUILD_JOBS:-2}"
export GOTOOLCHAIN=local

log() { echo "[cluster-binaries] $*" >&2; }

# stamp_ok NAME WANT: the binary exists and was built from exactly WANT.
stamp_ok() {
  [[ -f "$BIN_DIR/$1" && -f "$STAMP_DIR/$1" && "$(cat "$STAMP_DIR/$1")" == "$2" ]]
}

CHECK_ONLY=false
[[ "${1:-}" == "--check" ]] && CHECK_ONLY=true
MISSING=()

# components() below lists every component in order; it runs twice. Pass "plan" only counts
# them and notes the stale ones (all that --check does); pass "build" builds the stale ones.
PASS=plan
TOTAL=0
INDEX=0
BUILT=0
CURRENT="" # the component being built, for the failure report

# A failing build exits (set -e) while its stdout/stderr still point at the log, so the report
# goes to fd 3, a copy of the script's own stderr.
exec 3>&2
on_exit() {
  local rc=$?
  if ((rc != 0)) && [[ -n "$CURRENT" ]]; then
    {
      $TTY && echo
      echo "[cluster-binaries] FAILED: $CURRENT (exit $rc) after $((SECONDS - CURRENT_START))s;" \
        "last lines of $BUILD_LOG:"
      tail -n "${CLUSTER_BINARIES_LOG_TAIL:-40}" "$BUILD_LOG" | sed 's/^/    /'
    } >&3
  fi
}
trap on_exit EXIT
TTY=false
[[ -t 2 ]] && TTY=true

timed_build() { # NAME WANT CMD...: build when missing or stale, record the time it took.
  local name=$1 want=$2
  shift 2
  if [[ $PASS == plan ]]; then
    TOTAL=$((TOTAL + 1))
    stamp_ok "$name" "$want" || MISSING+=("$name")
    return 0
  fi
  INDEX=$((INDEX + 1))
  stamp_ok "$name" "$want" && return 0
  if ((BUILT == 0)); then
    mkdir -p "$BIN_DIR" "$STAMP_DIR"
    echo "==== $(date -u +%FT%TZ) hack/cluster-binaries.sh: building ${MISSING[*]}" >"$BUILD_LOG"
    log "building ${#MISSING[@]} of $TOTAL components; Go's output goes to $BUILD_LOG"
  fi
  BUILT=$((BUILT + 1))
  local progress="$INDEX/$TOTAL $name ..."
  $TTY && printf '[cluster-binaries] %s ' "$progress" >&2
  echo "==== $progress ($want)" >>"$BUILD_LOG"
  CURRENT=$name CURRENT_START=$SECONDS
  "$@" >>"$BUILD_LOG" 2>&1 </dev/null
  CURRENT=""
  echo "$want" >"$STAMP_DIR/$name"
  local took=$((SECONDS - CURRENT_START))
  if $TTY; then echo "built in ${took}s" >&2; else log "$progress built in ${took}s"; fi
  echo "$name $took" >>"$CACHE_DIR/build-times.log"
}

k8s_minor() { local v=${K8S_VERSION#v}; v=${v#*.}; echo "${v%%.*}"; }

write_wrapper() { # The generated module under .cache (never committed).
  [[ -f "$WRAPPER_DIR/.generated-for" && "$(cat "$WRAPPER_DIR/.generated-for")" == "$K8S_VERSION" ]] && return 0
  mkdir -p "$WRAPPER_DIR"
  local modfile
  modfile="$(go mod download -json "k8s.io/kubernetes@$K8S_VERSION" |
    sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",\{0,1\}$/\1/p')"
  [[ -f "$modfile" ]] || { log "cannot download k8s.io/kubernetes@$K8S_VERSION go.mod"; exit 1; }
  local staging_version="v0.${K8S_VERSION#v1.}"
  {
    echo "// Generated by hack/cluster-binaries.sh for k8s.io/kubernetes $K8S_VERSION; do not edit."
    echo "module tts-operator.local/k8s-wrapper"
    echo
    grep -E '^go [0-9]' "$modfile"
    grep -E '^godebug ' "$modfile" || true
    echo
    echo "require k8s.io/kubernetes $K8S_VERSION"
    echo
    echo "replace ("
    # Each staging module the tag replaces with ./staging/... AND requires -> its published tag.
    sed -n 's#^[[:space:]]*\(k8s\.io/[a-z0-9-]*\) => \./staging/.*#\1#p' "$modfile" | while read -r mod; do
      if grep -qE "^[[:space:]]+$mod v0\.0\.0" "$modfile"; then
        echo "	$mod => $mod $staging_version"
      fi
    done
    echo ")"
  } >"$WRAPPER_DIR/go.mod"
  printf 'package wrapper\n' >"$WRAPPER_DIR/doc.go"
  echo "$K8S_VERSION" >"$WRAPPER_DIR/.generated-for"
}

k8s_ldflags() {
  local pkg=k8s.io/component-base/version
  echo "-s -w -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$(k8s_minor)" \
    "-X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
}

build_in_wrapper() { # NAME PACKAGE [LDFLAGS]
  write_wrapper
  (cd "$WRAPPER_DIR" && go build -ldflags "${3:-}" -o "$BIN_DIR/$1" "$2")
}

go_install() { # NAME PACKAGE@VERSION LDFLAGS: modules without replace directives.
  local tmp
  tmp="$(mktemp -d)"
  (cd "$tmp" && GOBIN="$tmp" go install -ldflags "$3" "$2")
  mv "$tmp/$(basename "${2%@*}")" "$BIN_DIR/$1"
  rm -rf "$tmp"
}

build_adapter() {
  local dir="$CACHE_DIR/custom-metrics-adapter"
  rm -rf "$dir" && mkdir -p "$dir"
  cp "$ADAPTER_MAIN" "$dir/main.go"
  printf '// Generated by hack/cluster-binaries.sh; do not edit.\nmodule tts-operator.local/custom-metrics-adapter\n\ngo 1.26.0\n\nrequire sigs.k8s.io/custom-metrics-apiserver %s\n' \
    "$CUSTOM_METRICS_VERSION" >"$dir/go.mod"
  (cd "$dir" && go mod tidy && go build -ldflags "-s -w" -o "$BIN_DIR/custom-metrics-test-adapter" .)
}

# Upstream's test-adapter main hard-codes its write endpoint on ":8080" (all interfaces);
# hack/custom-metrics-adapter/main.go is that main with a --write-address flag, built
# against the pinned module in a generated module of its own.
ADAPTER_MAIN="$ROOT/hack/custom-metrics-adapter/main.go"

# kwok needs its Stage definitions (node-initialize, pod-ready, ...) as a config file; kwokctl
# embeds them, the kwok binary does not. Take them from the pinned module.
write_kwok_stages() {
  local dir
  dir="$(go mod download -json "sigs.k8s.io/kwok@$KWOK_VERSION" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",\{0,1\}$/\1/p')"
  local stage="$dir/kustomize/stage"
  {
    for f in node/fast/node-initialize.yaml pod/fast/pod-ready.yaml pod/fast/pod-complete.yaml \
      pod/fast/pod-delete.yaml; do
      echo "---"
      cat "$stage/$f"
    done
  } >"$BIN_DIR/kwok-stages.yaml"
}

src_hash() { cat "$@" | sha256sum | cut -c1-16; }

# CoreDNS: hack/coredns/main.go is an external main (coremain + the cluster-DNS plugins, no
# forward), built in a generated module that pins CoreDNS and aligns client-go with the cluster.
COREDNS_MAIN="$ROOT/hack/coredns/main.go"
build_coredns() {
  local dir="$CACHE_DIR/coredns"
  rm -rf "$dir" && mkdir -p "$dir"
  cp "$COREDNS_MAIN" "$dir/main.go"
  {
    echo "// Generated by hack/cluster-binaries.sh; do not edit."
    echo "module tts-operator.local/coredns"
    echo
    echo "go 1.26.0"
    echo
    echo "require ("
    echo "	github.com/coredns/coredns $COREDNS_VERSION"
    for mod in k8s.io/api k8s.io/apimachinery k8s.io/client-go; do
      echo "	$mod $STAGING_VERSION"
    done
    echo ")"
  } >"$dir/go.mod"
  (cd "$dir" && go mod tidy && go build -ldflags "-s -w" -o "$BIN_DIR/coredns" .)
}

# The stub GPU device plugin is our own module (go.mod and go.sum committed), built read-only.
STUB_GPU_DIR="$ROOT/hack/stub-gpu-device-plugin"
STUB_GPU_SRC=("$STUB_GPU_DIR/main.go" "$STUB_GPU_DIR/go.mod" "$STUB_GPU_DIR/go.sum")
build_stub_gpu_device_plugin() {
  (cd "$STUB_GPU_DIR" && go build -mod=readonly -ldflags "-s -w" -o "$BIN_DIR/stub-gpu-device-plugin" .)
}

# Prometheus: the server only, with Kubernetes service discovery and no other SD plugin
# (remove_all_sd drops the cloud SDKs) and no web UI assets (the query API is what the
# autoscaler, the tests and Grafana use; without `builtinassets` nothing is embedded).
build_prometheus() {
  local tmp
  tmp="$(mktemp -d)"
  (cd "$tmp" && GOBIN="$tmp" go install -tags remove_all_sd,enable_kubernetes_sd \
    -ldflags "-s -w -X github.com/prometheus/common/version.Version=3.${PROMETHEUS_VERSION#v0.3}" \
    "github.com/prometheus/prometheus/cmd/prometheus@$PROMETHEUS_VERSION")
  mv "$tmp/prometheus" "$BIN_DIR/prometheus"
  rm -rf "$tmp"
}

# KEDA: `go install` refuses its module (one replace directive), so a generated module
# requires it and copies that replace; the build list is then exactly KEDA's own.
keda_module_dir() {
  go mod download -json "github.com/kedacore/keda/v2@$KEDA_VERSION" |
    sed -n 's/^[[:space:]]*"Dir": "\(.*\)",\{0,1\}$/\1/p'
}
build_keda() { # NAME CMD (operator | adapter)
  local dir="$CACHE_DIR/keda" src
  src="$(keda_module_dir)"
  mkdir -p "$dir"
  {
    echo "// Generated by hack/cluster-binaries.sh for KEDA $KEDA_VERSION; do not edit."
    echo "module tts-operator.local/keda-wrapper"
    echo
    grep -E '^go [0-9]' "$src/go.mod"
    echo
    echo "require github.com/kedacore/keda/v2 $KEDA_VERSION"
    echo
    grep -E '^replace .* => ' "$src/go.mod"
  } >"$dir/go.mod"
  printf 'package wrapper\n' >"$dir/doc.go"
  local pkg="github.com/kedacore/keda/v2/cmd/$2"
  if [[ $2 == adapter ]]; then
    # The adapter serves its own /metrics on ":PORT", every interface, with no flag to
    # change it; the local cluster binds everything to its own addresses, so the build
    # compiles a copy of that main with the address on loopback (and fails if upstream's
    # line moved, rather than silently listen everywhere).
    mkdir -p "$dir/adapter"
    sed 's/fmt.Sprintf(":%v", metricsAPIServerPort)/fmt.Sprintf("127.0.0.1:%v", metricsAPIServerPort)/' \
      "$src/cmd/adapter/main.go" >"$dir/adapter/main.go"
    grep -q '"127.0.0.1:%v", metricsAPIServerPort' "$dir/adapter/main.go" ||
      { echo "KEDA's adapter main no longer has the line to patch" >&2; return 1; }
    pkg=./adapter
  fi
  (cd "$dir" && go build -ldflags "-s -w -X github.com/kedacore/keda/v2/version.Version=${KEDA_VERSION#v}" \
    -o "$BIN_DIR/$1" "$pkg")
}
# KEDA's CRDs (ScaledObject, TriggerAuthentication, ...) from the same module.
write_keda_crds() {
  local src
  src="$(keda_module_dir)"
  for f in "$src"/config/crd/bases/*.yaml; do
    echo "---"
    cat "$f"
  done >"$BIN_DIR/keda-crds.yaml"
}

K8S_LDFLAGS="$(k8s_ldflags)"
STAGING_VERSION="v0.${K8S_VERSION#v1.}"
KWOK_LDFLAGS="-s -w -X sigs.k8s.io/kwok/pkg/consts.Version=${KWOK_VERSION#v}"
KWOK_LDFLAGS+=" -X sigs.k8s.io/kwok/pkg/consts.KubeVersion=${K8S_VERSION#v}"
HELM_LDFLAGS="-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
HELM_LDFLAGS+=" -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=1"
HELM_LDFLAGS+=" -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=$(k8s_minor)"

components() {
  for name in kube-apiserver kube-controller-manager kube-scheduler kubectl kubelet kube-proxy; do
    timed_build "$name" "k8s.io/kubernetes@$K8S_VERSION" \
      build_in_wrapper "$name" "k8s.io/kubernetes/cmd/$name" "$K8S_LDFLAGS"
  done
  timed_build etcd "go.etcd.io/etcd/server/v3 (as pinned by k8s.io/kubernetes@$K8S_VERSION)" \
    build_in_wrapper etcd go.etcd.io/etcd/server/v3 "-s -w"

  for name in kwok kwokctl; do
    timed_build "$name" "sigs.k8s.io/kwok@$KWOK_VERSION kube=$K8S_VERSION" \
      go_install "$name" "sigs.k8s.io/kwok/cmd/$name@$KWOK_VERSION" "$KWOK_LDFLAGS"
  done

  timed_build kwok-stages.yaml "sigs.k8s.io/kwok@$KWOK_VERSION stages" write_kwok_stages

  timed_build helm "helm.sh/helm/v3@$HELM_VERSION" \
    go_install helm "helm.sh/helm/v3/cmd/helm@$HELM_VERSION" "$HELM_LDFLAGS"

  timed_build custom-metrics-test-adapter \
    "sigs.k8s.io/custom-metrics-apiserver@$CUSTOM_METRICS_VERSION main=$(src_hash "$ADAPTER_MAIN")" \
    build_adapter

  timed_build coredns \
    "github.com/coredns/coredns@$COREDNS_VERSION k8s=$STAGING_VERSION main=$(src_hash "$COREDNS_MAIN")" \
    build_coredns

  timed_build prometheus "github.com/prometheus/prometheus@$PROMETHEUS_VERSION tags=k8s-sd-only" \
    build_prometheus

  timed_build keda-operator "github.com/kedacore/keda/v2@$KEDA_VERSION" build_keda keda-operator operator
  timed_build keda-adapter "github.com/kedacore/keda/v2@$KEDA_VERSION metrics=loopback" \
    build_keda keda-adapter adapter
  timed_build keda-crds.yaml "github.com/kedacore/keda/v2@$KEDA_VERSION crds" write_keda_crds

  timed_build stub-gpu-device-plugin "k8s.io/kubelet (go.mod) src=$(src_hash "${STUB_GPU_SRC[@]}")" \
    build_stub_gpu_device_plugin
}

components # plan
if $CHECK_ONLY; then
  if ((${#MISSING[@]})); then
    log "cluster binaries missing in $BIN_DIR: ${MISSING[*]} (run: make cluster-binaries)"
    exit 1
  fi
elif ((${#MISSING[@]})); then
  total_start=$SECONDS
  PASS=build
  components
  log "done: built $BUILT of $TOTAL in $((SECONDS - total_start))s (log: $BUILD_LOG)"
fi

cat <<EOF
K8S_VERSION=$K8S_VERSION
ETCD=$BIN_DIR/etcd
KUBE_APISERVER=$BIN_DIR/kube-apiserver
KUBE_CONTROLLER_MANAGER=$BIN_DIR/kube-controller-manager
KUBE_SCHEDULER=$BIN_DIR/kube-scheduler
KUBECTL=$BIN_DIR/kubectl
KUBELET=$BIN_DIR/kubelet
KUBE_PROXY=$BIN_DIR/kube-proxy
KWOK=$BIN_DIR/kwok
KWOKCTL=$BIN_DIR/kwokctl
KWOK_STAGES=$BIN_DIR/kwok-stages.yaml
HELM=$BIN_DIR/helm
CUSTOM_METRICS_ADAPTER=$BIN_DIR/custom-metrics-test-adapter
COREDNS=$BIN_DIR/coredns
STUB_GPU_DEVICE_PLUGIN=$BIN_DIR/stub-gpu-device-plugin
PROMETHEUS=$BIN_DIR/prometheus
KEDA_OPERATOR=$BIN_DIR/keda-operator
KEDA_ADAPTER=$BIN_DIR/keda-adapter
KEDA_CRDS=$BIN_DIR/keda-crds.yaml
BIN_DIR=$BIN_DIR
EOF
