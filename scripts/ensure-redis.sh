#!/usr/bin/env bash
# Makes sure a Redis server answers on 127.0.0.1:6379 (the Redis state-store tests talk to a real
# one): starts one if none answers, installing Debian's redis-server first if it is missing.
set -euo pipefail

# The Redis state store is tested against a real server on 127.0.0.1:6379: start one if none answers.
redis_answers() {
    if command -v redis-cli >/dev/null 2>&1; then
        [ "$(redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null)" = "PONG" ]
    else
        # No redis-cli: speak just enough RESP over bash's /dev/tcp.
        (exec 3<>/dev/tcp/127.0.0.1/6379 && printf 'PING\r\n' >&3 && timeout 1 head -c 5 <&3 | grep -q PONG) 2>/dev/null
    fi
}
if ! redis_answers; then
    if ! command -v redis-server >/dev/null 2>&1; then
        sudo_cmd=""
        [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
        $sudo_cmd apt-get update -qq >/dev/null
        DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq redis-server >/dev/null
    fi
    # The package may have started a server on its own; start ours only if none answers yet.
    redis_answers || redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no >/dev/null
    for _ in $(seq 50); do redis_answers && break; sleep 0.1; done
    redis_answers || { echo ".ci/run: redis-server did not start on 127.0.0.1:6379" >&2; exit 1; }
fi
