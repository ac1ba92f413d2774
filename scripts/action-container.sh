# Sourced by action.yml's container steps (pending, gate, publish); bash 4.4+.
#
# Each step runs one container of the gate image, by the ID the `image` step
# recorded (sha256:...), never by a tag. Which step holds what:
#   pending  token, no GPU, no workspace: posts `pending`, checks the inputs
#   gate     GPU, workspace, model, engine: computes, and holds NO token
#   publish  token, no GPU, the result folder only: posts the result
# Needs WORKDIR (the action's folder under RUNNER_TEMP) in the environment.

# One line into $WORKDIR/failure (the `error` step posts it) and the log; exit.
gate_fail() {
  local m="$1"; printf '%s\n' "$m" > "$WORKDIR/failure"
  m="${m//'%'/%25}"; m="${m//$'\r'/%0D}"; m="${m//$'\n'/%0A}"
  echo "::error title=parity-gate::$m"; exit "${2:-2}"
}

# gate_env_args PHASE: `-e NAME` (by name: values never on a command line)
# into env_args for the runner's context, PARITY_GATE_GOLDEN_SHA and every
# INPUT_* the step's env sets, plus proxy and CA settings (a CA file or
# folder is mounted read-only at its own path, into mounts). For the gate
# (compute) phase, no variable whose name says TOKEN, whatever the step's
# env holds: that container runs the code under test.
gate_env_args() {
  local phase="$1" var
  env_args=()
  for var in GITHUB_ACTIONS CI GITHUB_WORKSPACE GITHUB_EVENT_PATH GITHUB_EVENT_NAME GITHUB_REPOSITORY \
             GITHUB_API_URL GITHUB_SERVER_URL GITHUB_RUN_ID GITHUB_RUN_ATTEMPT GITHUB_SHA GITHUB_REF \
             PARITY_GATE_GOLDEN_SHA $(compgen -v INPUT_ || true); do
    if [[ "$phase" == compute && "${var^^}" == *TOKEN* ]]; then
      continue
    fi
    env_args+=(-e "$var")
  done
  for var in HTTP_PROXY HTTPS_PROXY NO_PROXY ALL_PROXY http_proxy https_proxy no_proxy all_proxy \
             SSL_CERT_FILE SSL_CERT_DIR REQUESTS_CA_BUNDLE CURL_CA_BUNDLE; do
    [[ -n "${!var:-}" ]] || continue
    env_args+=(-e "$var")
    case "$var" in
      SSL_*|*_CA_BUNDLE) [[ "${!var}" != /* || ! -e "${!var}" ]] || mounts+=(-v "${!var}:${!var}:ro") ;;
    esac
  done
  if [[ -n "${GITHUB_EVENT_PATH:-}" && -f "$GITHUB_EVENT_PATH" ]]; then
    mounts+=(-v "$GITHUB_EVENT_PATH:$GITHUB_EVENT_PATH:ro")
  fi
}

# gate_run PHASE DOCKER_RUN_ARGS...: `docker run --rm --init` of a named,
# labelled container in the background (the image and the gate's own
# arguments end DOCKER_RUN_ARGS); sets rc. A cancel kills the docker CLI,
# not the container, so INT and TERM stop the container by name: docker
# stop sends SIGTERM through --init to the gate, which in the pending and
# publish phases posts its own `error` status. The gate phase holds no
# token: its cancel is left in $WORKDIR/failure for the `error` step.
gate_run() {
  gate_phase="$1"; shift
  local run_key="${GITHUB_RUN_ID:-0}-${GITHUB_RUN_ATTEMPT:-1}"
  gate_name="parity-gate-${run_key}-$(printf '%04x%04x' "$RANDOM" "$RANDOM")"
  local labels=(--label parity-gate.action=1 --label "parity-gate.run=$run_key"
                --label "parity-gate.phase=$gate_phase"
                --label "parity-gate.runner=${RUNNER_NAME:-}" --label "parity-gate.runner-temp=${RUNNER_TEMP:-}")
  gate_pid=""
  gate_stopping=""
  trap 'gate_on_signal SIGINT 130' INT
  trap 'gate_on_signal SIGTERM 143' TERM
  docker run --rm --init --name "$gate_name" "${labels[@]}" "$@" &
  gate_pid=$!
  rc=0
  wait "$gate_pid" || rc=$?
  trap - INT TERM
}

gate_on_signal() {
  [[ -z "$gate_stopping" ]] || return 0
  gate_stopping=1
  echo "::warning title=parity-gate::$1: stopping the gate container $gate_name"
  if docker stop --time 8 "$gate_name" >/dev/null 2>&1; then
    if [[ "$gate_phase" == compute ]]; then
      echo "cancelled ($1) while the gate computed the result" > "$WORKDIR/failure"
    else
      rm -f "$WORKDIR/failure"
    fi
  else
    echo "cancelled ($1) before the gate container started" > "$WORKDIR/failure"
  fi
  [[ -z "$gate_pid" ]] || { kill -TERM "$gate_pid" 2>/dev/null || true; wait "$gate_pid" 2>/dev/null || true; }
  exit "$2"
}

# gate_docker_failure RC IMAGE: the one line for a docker run that did not
# run the gate to an end (exit 125: docker's own; 126/127: the entrypoint).
gate_docker_failure() {
  case "$1" in
    125) gate_fail "docker run failed before the gate started (exit 125; --gpus needs the NVIDIA Container Toolkit): see the log above" 3 ;;
    126|127) gate_fail "docker run could not start the gate in $2 (exit $1)" 3 ;;
    *) gate_fail "the gate container ended without a result (exit $1: killed, or out of memory?)" 3 ;;
  esac
}
