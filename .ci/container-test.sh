#!/usr/bin/env bash
# container-test: builds the project's Dockerfile with podman against a debootstrapped Debian
# base (shared/CONTAINERS.md) and checks the running container from the outside: health,
# /predict, /train with and without the token, a non-root server process, a clean stop on
# SIGTERM within 10 s, and a trained model that survives a new container on the same volume.
#
# Run as root (CI is). Removes what it started, by id, on any exit. The last line is
# "container-test: N passed, N failed"; the exit status is non-zero unless every check passed.
#
# Environment: IMAGE (default localhost/iris-service:test), BASE_IMAGE (default
# localhost/debian-python:bookworm, made by .ci/podman-setup.sh when missing),
# CA_BUNDLE (default /etc/ssl/certs/ca-certificates.crt, mounted into the build for pip).
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1

IMAGE=${IMAGE:-localhost/iris-service:test}
BASE_IMAGE=${BASE_IMAGE:-localhost/debian-python:bookworm}
CA_BUNDLE=${CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}
HEALTHY_WITHIN=60   # seconds from `podman run` to a passing HEALTHCHECK
TRAIN_WITHIN=60     # seconds for a training job to finish
STOP_WITHIN=10      # seconds for `podman stop` (SIGTERM, then SIGKILL at 10 s)
PREDICT_BODY='{"instances":[{"sepal_length":5.1,"sepal_width":3.5,"petal_length":1.4,"petal_width":0.2}]}'

passed=0
failed=0
containers=()
volume=""
work=$(mktemp -d /tmp/container-test.XXXXXX)

say() { printf 'container-test: %s\n' "$*"; }
pass() { passed=$((passed + 1)); printf 'PASS %s\n' "$*"; }
fail() { failed=$((failed + 1)); printf 'FAIL %s\n' "$*"; }
summary() { printf 'container-test: %d passed, %d failed\n' "$passed" "$failed"; }

cleanup() {
    local id
    for id in "${containers[@]}"; do
        podman rm --force --time 0 "$id" >/dev/null 2>&1 || say "could not remove container $id"
    done
    if [ -n "$volume" ]; then
        podman volume rm --force "$volume" >/dev/null 2>&1 || say "could not remove volume $volume"
    fi
    rm -rf -- "$work"
}
trap cleanup EXIT
trap 'say "interrupted"; exit 130' INT TERM

# Stops here: shows the container's log when there is one, then the count, and fails.
abort() {
    fail "$*"
    if [ "${#containers[@]}" -gt 0 ]; then
        say "last log lines of container ${containers[-1]:0:12}:"
        podman logs --tail 40 "${containers[-1]}" 2>&1 | sed 's/^/    /'
    fi
    say "stopped after this failure; later checks were not run"
    summary
    exit 1
}

now() { date +%s.%N; }
seconds_since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

# http METHOD PATH [curl args...]: sets $code, body in $work/body, headers in $work/headers.
http() {
    local method=$1 path=$2
    shift 2
    code=$(curl -sS --max-time 10 -X "$method" -o "$work/body" -D "$work/headers" \
        -w '%{http_code}' "$@" "http://127.0.0.1:$port$path" 2>"$work/curl.err") || code=000
}
body() { cat "$work/body"; }
json() { jq -r "$1" "$work/body" 2>/dev/null; }

# start_container NAME: runs the image on the test volume with the token, sets $cid, $port.
start_container() {
    local started
    started=$(now)
    # -e NAME without a value passes the variable from this environment: the token is
    # neither in the image nor on a command line.
    cid=$(IRIS_API_TOKEN="$token" podman run --detach \
        --publish 127.0.0.1::8000 \
        --volume "$volume:/data" \
        --env IRIS_API_TOKEN \
        --env IRIS_LOG_LEVEL=info \
        "$IMAGE" 2>"$work/run.err") || {
        sed 's/^/    /' "$work/run.err"
        abort "podman run $1"
    }
    containers+=("$cid")
    port=$(podman port "$cid" 8000/tcp | head -n 1 | sed 's/.*://')
    [ -n "$port" ] || abort "no host port published for $1"
    # podman runs HEALTHCHECKs from systemd timers, which this machine has not, so run the
    # image's own HEALTHCHECK command here until it passes.
    local deadline=$((SECONDS + HEALTHY_WITHIN))
    until podman healthcheck run "$cid" >/dev/null 2>&1; do
        if [ "$(podman inspect --format '{{.State.Running}}' "$cid" 2>/dev/null)" != true ]; then
            abort "$1 exited before it was healthy"
        fi
        [ "$SECONDS" -lt "$deadline" ] || abort "$1 not healthy within ${HEALTHY_WITHIN} s"
        sleep 0.2
    done
    healthy_after=$(seconds_since "$started")
}

# stop_container: podman stop, sets $stop_seconds and $exit_code.
stop_container() {
    local started
    started=$(now)
    podman stop --time "$STOP_WITHIN" "$cid" >/dev/null 2>&1
    stop_seconds=$(seconds_since "$started")
    exit_code=$(podman inspect --format '{{.State.ExitCode}}' "$cid")
}

current_version() {
    http GET /models
    [ "$code" = 200 ] && json .current
}

# ---- 0. tooling ---------------------------------------------------------------------------
if ! bash .ci/podman-setup.sh "$BASE_IMAGE"; then
    fail "podman set-up: the container tooling or the base image could not be made (see above)"
    summary
    exit 1
fi
export PATH="$PATH:/usr/sbin:/sbin"
say "$(podman --version), runtime $(runc --version | head -n 1), base $BASE_IMAGE"

# ---- 1. build ------------------------------------------------------------------------------
old_image=$(podman image inspect --format '{{.Id}}' "$IMAGE" 2>/dev/null || true)
ca_mount=()
[ -f "$CA_BUNDLE" ] && ca_mount=(--volume "$CA_BUNDLE:/etc/ssl/certs/ca-certificates.crt:ro")
started=$(now)
# --layers=false: no intermediate images are left behind to pile up between runs.
if podman build "${ca_mount[@]}" --layers=false --format docker \
    --build-arg "BASE_IMAGE=$BASE_IMAGE" --tag "$IMAGE" . >"$work/build.log" 2>&1; then
    pass "podman build $IMAGE from $BASE_IMAGE ($(seconds_since "$started") s)"
else
    tail -n 30 "$work/build.log" | sed 's/^/    /'
    abort "podman build"
fi
new_image=$(podman image inspect --format '{{.Id}}' "$IMAGE")
if [ -n "$old_image" ] && [ "$old_image" != "$new_image" ]; then
    # The previous build of this tag, now untagged: remove it by id (fails harmlessly if in use).
    podman rmi "$old_image" >/dev/null 2>&1 || true
fi
image_bytes=$(podman image inspect --format '{{.Size}}' "$IMAGE")
base_bytes=$(podman image inspect --format '{{.Size}}' "$BASE_IMAGE")
say "image size $((image_bytes / 1000000)) MB; base $((base_bytes / 1000000)) MB;" \
    "the project adds $(((image_bytes - base_bytes) / 1000000)) MB"

# ---- 2. image configuration ----------------------------------------------------------------
user=$(podman image inspect --format '{{.Config.User}}' "$IMAGE")
env=$(podman image inspect --format '{{json .Config.Env}}' "$IMAGE")
health=$(podman image inspect --format '{{json .Config.Healthcheck}}' "$IMAGE")
cmd=$(podman image inspect --format '{{json .Config.Cmd}}' "$IMAGE")
compilers=$(podman run --rm --entrypoint /bin/sh "$IMAGE" \
    -c 'for c in cc gcc g++ make; do command -v "$c"; done; ls -d /root/.cache/pip 2>/dev/null' \
    2>/dev/null)
problems=()
case "$user" in "" | 0 | 0:* | root | root:*) problems+=("USER is '${user}', i.e. root") ;; esac
[[ "$env" == *IRIS_API_TOKEN* ]] && problems+=("IRIS_API_TOKEN is set in the image")
[[ "$env" == *'"IRIS_HOST=0.0.0.0"'* ]] || problems+=("IRIS_HOST=0.0.0.0 missing")
[[ "$env" == *'"IRIS_DATA_DIR=/data"'* ]] || problems+=("IRIS_DATA_DIR=/data missing")
[[ "$health" == *healthz* ]] || problems+=("no HEALTHCHECK on /healthz (was --format docker used?)")
[[ "$cmd" == '["'* ]] || problems+=("CMD is not in exec form: $cmd")
[ -z "$compilers" ] || problems+=("build tools or pip cache in the image: $compilers")
if [ "${#problems[@]}" -eq 0 ]; then
    pass "image: USER $user, no token, exec-form CMD $cmd, HEALTHCHECK on /healthz, no compiler"
else
    fail "image configuration: $(IFS=';'; echo "${problems[*]}")"
fi

# ---- 3. run and become healthy -------------------------------------------------------------
token=$(od -An -N24 -tx1 /dev/urandom | tr -d ' \n')
volume="iris-container-test-$$-$(date +%s)"
podman volume create "$volume" >/dev/null || { volume=""; abort "podman volume create"; }
start_container "the first container"
pass "healthy $healthy_after s after podman run (127.0.0.1:$port, volume $volume)"
say "run-to-healthy: $healthy_after s"

deadline=$((SECONDS + 20))
until http GET /readyz && [ "$code" = 200 ]; do
    [ "$SECONDS" -lt "$deadline" ] || abort "GET /readyz did not answer 200 within 20 s (last $code: $(body))"
    sleep 0.2
done

# ---- 4. predict ----------------------------------------------------------------------------
http POST /predict -H 'Content-Type: application/json' -d "$PREDICT_BODY"
initial_version=$(json .model_version)
# The first Iris sample is a setosa; a prediction is a label or an object with one.
if [ "$code" = 200 ] && [ "$(json '.predictions | length')" = 1 ] &&
    [ "$(json '.predictions[0] | if type == "object" then .label else . end')" = setosa ] &&
    [ -n "$initial_version" ] && [ "$initial_version" != null ]; then
    pass "POST /predict: 200, model_version $initial_version, $(jq -c '.predictions[0]' "$work/body")"
else
    fail "POST /predict: HTTP $code: $(body)"
fi

# ---- 5. /train refused without the token ---------------------------------------------------
http POST /train -H 'Content-Type: application/json' -d '{}'
no_token=$code
http POST /train -H 'Content-Type: application/json' -H 'Authorization: Bearer wrong-token' -d '{}'
bad_token=$code
if [ "$no_token" = 401 ] && { [ "$bad_token" = 401 ] || [ "$bad_token" = 403 ]; }; then
    pass "POST /train refused: $no_token without a token, $bad_token with a wrong one"
else
    fail "POST /train without a token gave $no_token, with a wrong token $bad_token (want 401, 401/403)"
fi

# ---- 6. /train with the token makes a new served version -----------------------------------
trained_version=""
http POST /train -H 'Content-Type: application/json' -H "Authorization: Bearer $token" \
    -d '{"hyperparameters":{"epochs":50}}'
job_id=$(json .job_id)
location=$(tr -d '\r' <"$work/headers" | awk 'tolower($1) == "location:" { print $2 }')
if [ "$code" != 202 ] || [ -z "$job_id" ] || [ "$job_id" = null ]; then
    fail "POST /train with the token: HTTP $code: $(body)"
elif [ "$location" != "/train/$job_id" ] && [[ "$location" != */train/"$job_id" ]]; then
    fail "POST /train: Location '$location', want /train/$job_id"
else
    deadline=$((SECONDS + TRAIN_WITHIN))
    status=""
    while :; do
        http GET "/train/$job_id" -H "Authorization: Bearer $token"
        status=$(json .status)
        case "$status" in succeeded | failed | cancelled) break ;; esac
        [ "$SECONDS" -lt "$deadline" ] || break
        sleep 0.3
    done
    trained_version=$(json .model_version)
    served=$(current_version)
    http POST /predict -H 'Content-Type: application/json' -d "$PREDICT_BODY"
    predicted_by=$(json .model_version)
    on_disk=$(podman exec "$cid" cat /data/models/CURRENT 2>/dev/null | tr -d '[:space:]')
    if [ "$status" = succeeded ] && [ -n "$trained_version" ] && [ "$trained_version" != null ] &&
        [ "$trained_version" != "$initial_version" ] && [ "$served" = "$trained_version" ] &&
        [ "$predicted_by" = "$trained_version" ] && [ "$on_disk" = "$trained_version" ]; then
        pass "POST /train with the token: job $job_id succeeded; /models, /predict and CURRENT now $trained_version"
    else
        fail "POST /train with the token: job $job_id status '$status', version '$trained_version'" \
            "(before $initial_version); /models current '$served', /predict '$predicted_by', CURRENT '$on_disk'"
        trained_version=""
    fi
fi

# ---- 7. the server runs as a non-root user -------------------------------------------------
# PID 1 is the server itself (exec-form CMD); its real, effective, saved and fs uids.
ids=$(podman exec "$cid" /bin/sh -c \
    'tr "\0" " " </proc/1/cmdline; echo; grep -E "^(Uid|Gid):" /proc/1/status' 2>&1)
uids=$(printf '%s\n' "$ids" | awk '$1 == "Uid:" { print $2, $3, $4, $5 }')
if [ -n "$uids" ] && ! printf '%s\n' "$uids" | grep -qw 0; then
    pass "server process (PID 1: $(printf '%s\n' "$ids" | head -n 1 | sed 's/ *$//')) runs as uid $uids"
else
    fail "server process runs as root or could not be read: $ids"
fi

# ---- 8. SIGTERM: an in-flight request is answered, then the server exits 0 within 10 s -----
# The request is in flight across the signal: its headers and half its body are sent, then
# `podman stop` runs, and the rest of the body follows only once the server logs that it is
# shutting down. A drained server still answers it; one killed or closing early does not.
length=${#PREDICT_BODY}
half=$((length / 2))
in_flight="not sent"
if exec 3<>"/dev/tcp/127.0.0.1/$port"; then
    printf 'POST /predict HTTP/1.1\r\nHost: 127.0.0.1:%s\r\nContent-Type: application/json\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s' \
        "$port" "$length" "${PREDICT_BODY:0:half}" >&3
    sleep 0.5 # let the server parse the headers and start the request
    started=$(now)
    podman stop --time "$STOP_WITHIN" "$cid" >/dev/null 2>&1 &
    stopper=$!
    deadline=$((SECONDS + 5))
    until podman logs "$cid" 2>&1 | grep -q 'Shutting down'; do
        [ "$SECONDS" -lt "$deadline" ] || break
        sleep 0.1
    done
    saw_shutdown=$(podman logs "$cid" 2>&1 | grep -c 'Shutting down')
    printf '%s' "${PREDICT_BODY:half}" >&3 2>/dev/null
    in_flight=$(timeout 12 head -n 1 <&3 | tr -d '\r')
    exec 3<&-
    wait "$stopper"
    stop_seconds=$(seconds_since "$started")
    exit_code=$(podman inspect --format '{{.State.ExitCode}}' "$cid")
else
    stop_container
    saw_shutdown=0
fi
if [ "$saw_shutdown" -gt 0 ] && [[ "$in_flight" == "HTTP/1.1 200"* ]] && [ "$exit_code" = 0 ] &&
    awk -v s="$stop_seconds" -v m="$STOP_WITHIN" 'BEGIN { exit !(s < m) }'; then
    pass "podman stop: the request in flight at SIGTERM got '$in_flight'; exited 0 in $stop_seconds s"
else
    fail "podman stop: in-flight request got '${in_flight:-no answer}' (shutdown logged: $saw_shutdown);" \
        "exit code $exit_code after $stop_seconds s (want 200, then 0 within $STOP_WITHIN s; 137 is SIGKILL)"
    podman logs --tail 20 "$cid" 2>&1 | sed 's/^/    /'
fi
if podman logs "$cid" 2>&1 | grep -q Traceback; then
    say "warning: the first container's log holds a traceback:"
    podman logs "$cid" 2>&1 | grep -B2 -A12 Traceback | head -n 40 | sed 's/^/    /'
fi

# ---- 9. the trained version survives a new container on the same volume --------------------
start_container "the second container"
deadline=$((SECONDS + 20))
until http GET /readyz && [ "$code" = 200 ]; do
    [ "$SECONDS" -lt "$deadline" ] || break
    sleep 0.2
done
served=$(current_version)
http POST /predict -H 'Content-Type: application/json' -d "$PREDICT_BODY"
predicted_by=$(json .model_version)
stop_container
if [ -z "$trained_version" ]; then
    fail "restart on the same volume: no trained version to look for (the /train check failed)"
elif [ "$served" = "$trained_version" ] && [ "$predicted_by" = "$trained_version" ]; then
    pass "new container on volume $volume: healthy in $healthy_after s, serves $trained_version;" \
        "stopped with exit $exit_code in $stop_seconds s"
else
    fail "new container on the same volume serves '$served' (/predict '$predicted_by'), want $trained_version"
fi
if [ "$exit_code" != 0 ]; then
    fail "podman stop of the second container: exit code $exit_code after $stop_seconds s"
fi

summary
[ "$failed" -eq 0 ]
