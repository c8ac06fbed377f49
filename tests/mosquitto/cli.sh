#!/usr/bin/env bash
# ringmq against the mosquitto command-line clients, MQTT 3.1.1 and 5.0.
#   RINGMQ_BIN=path/to/ringmq bash tests/mosquitto/cli.sh
# Prints `ok N - description` per check; stops at the first failure with
# `not ok N - description` and a non-zero exit. The broker runs with two
# shards on a free port and is stopped with SIGTERM at the end.
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
bin=${RINGMQ_BIN:-$root/target/release/ringmq}
host=127.0.0.1

for tool in mosquitto_pub mosquitto_sub python3 stdbuf; do
  command -v "$tool" >/dev/null || { echo "cli.sh: $tool is missing" >&2; exit 2; }
done
# the binary may be in the middle of a rebuild: give it a minute
for _ in $(seq 120); do [ -x "$bin" ] && break; sleep 0.5; done
[ -x "$bin" ] || { echo "cli.sh: broker binary $bin not found" >&2; exit 2; }

work=$(mktemp -d)
broker_pid=""
sub_pid=""
cleanup() {
  local rc=$?
  [ -n "$sub_pid" ] && kill "$sub_pid" 2>/dev/null || true
  if [ -n "$broker_pid" ] && kill -0 "$broker_pid" 2>/dev/null; then
    kill -TERM "$broker_pid"
    for _ in $(seq 50); do kill -0 "$broker_pid" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$broker_pid" 2>/dev/null; then
      echo "cli.sh: broker still running 5 s after SIGTERM; killing it" >&2
      kill -KILL "$broker_pid" 2>/dev/null || true
      rc=1
    fi
  fi
  if [ "$rc" != 0 ] && [ -s "$work/broker.log" ]; then
    echo "--- broker log (tail)" >&2
    tail -n 20 "$work/broker.log" >&2
  fi
  rm -rf "$work"
  exit "$rc"
}
trap cleanup EXIT

port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()')
"$bin" --listen "$host:$port" --admin-listen "" --data-dir "$work/data" --shards 2 --log-level info \
  >"$work/broker.log" 2>&1 &
broker_pid=$!
for _ in $(seq 100); do
  (exec 3<>"/dev/tcp/$host/$port") 2>/dev/null && break
  kill -0 "$broker_pid" 2>/dev/null || { echo "cli.sh: broker exited at start" >&2; exit 1; }
  sleep 0.1
done
(exec 3<>"/dev/tcp/$host/$port") 2>/dev/null || { echo "cli.sh: broker not listening on $port" >&2; exit 1; }

n=0
run_id="cli$$"

pass() { n=$((n + 1)); echo "ok $n - $1"; }
fail() {
  n=$((n + 1))
  echo "not ok $n - $1"
  shift
  printf '#   %s\n' "$@"
  exit 1
}

pub() { mosquitto_pub -h "$host" -p "$port" "$@"; }

# start_sub OUT ARGS...: a background mosquitto_sub (debug on, so that its
# SUBACK is visible; line-buffered, or a file would only see it at exit) that
# prints every message as a line starting "MSG " (pass -F 'MSG ...');
# returns once the subscription is acknowledged.
start_sub() {
  local out=$1
  shift
  stdbuf -oL mosquitto_sub -h "$host" -p "$port" -d -W 5 "$@" >"$out" 2>&1 &
  sub_pid=$!
  for _ in $(seq 100); do
    grep -q "received SUBACK" "$out" && return 0
    kill -0 "$sub_pid" 2>/dev/null || break
    sleep 0.05
  done
  echo "cli.sh: mosquitto_sub got no SUBACK:" >&2
  cat "$out" >&2
  return 1
}

# wait_sub: waits for the background subscriber; its exit status in $sub_rc
wait_sub() {
  sub_rc=0
  wait "$sub_pid" || sub_rc=$?
  sub_pid=""
}

msgs() { grep '^MSG ' "$1" | sed 's/^MSG //' || true; }

for v in mqttv31 mqttv311 mqttv5; do
  t="$run_id/$v"

  # 1. QoS 1 round trip
  out="$work/qos1-$v"
  start_sub "$out" -V "$v" -q 1 -t "$t/qos1" -C 1 -F 'MSG %q %t %p'
  pub -V "$v" -q 1 -t "$t/qos1" -m "hello qos1"
  wait_sub
  got=$(msgs "$out")
  [ "$sub_rc" = 0 ] && [ "$got" = "1 $t/qos1 hello qos1" ] ||
    fail "$v: QoS 1 publish reaches a QoS 1 subscriber at QoS 1" "exit $sub_rc, got: '$got'"
  pass "$v: QoS 1 publish reaches a QoS 1 subscriber at QoS 1"

  # 2. retained message for a later subscriber
  pub -V "$v" -q 1 -r -t "$t/retained" -m "kept"
  out="$work/retained-$v"
  mosquitto_sub -h "$host" -p "$port" -V "$v" -q 1 -t "$t/retained" -C 1 -W 5 \
    -F 'MSG %r %p' >"$out" 2>&1 && sub_rc=0 || sub_rc=$?
  got=$(msgs "$out")
  [ "$sub_rc" = 0 ] && [ "$got" = "1 kept" ] ||
    fail "$v: a later subscriber gets the retained message with the retain flag" "exit $sub_rc, got: '$got'"
  pass "$v: a later subscriber gets the retained message with the retain flag"

  # ... and an empty retained publish clears it
  pub -V "$v" -q 1 -r -t "$t/retained" -n
  out="$work/cleared-$v"
  mosquitto_sub -h "$host" -p "$port" -V "$v" -q 1 -t "$t/retained" -C 1 -W 1 \
    -F 'MSG %r %p' >"$out" 2>&1 && sub_rc=0 || sub_rc=$?
  got=$(msgs "$out")
  [ "$sub_rc" != 0 ] && [ -z "$got" ] ||
    fail "$v: an empty retained publish clears the retained message" "exit $sub_rc, got: '$got'"
  pass "$v: an empty retained publish clears the retained message"

  # 3. -C N: exactly N messages, then the subscriber exits by itself
  out="$work/count-$v"
  start_sub "$out" -V "$v" -q 1 -t "$t/count" -C 3 -F 'MSG %p'
  printf 'm1\nm2\nm3\nm4\nm5\n' | pub -V "$v" -q 1 -t "$t/count" -l
  wait_sub
  got=$(msgs "$out" | tr '\n' ' ')
  [ "$sub_rc" = 0 ] && [ "$got" = "m1 m2 m3 " ] ||
    fail "$v: -C 3 prints the first 3 of 5 messages in order and exits 0" "exit $sub_rc, got: '$got'"
  pass "$v: -C 3 prints the first 3 of 5 messages in order and exits 0"

  # 4. '+' matches exactly one level
  out="$work/plus-$v"
  start_sub "$out" -V "$v" -q 1 -t "$t/+/temp" -C 1 -F 'MSG %t %p'
  pub -V "$v" -q 1 -t "$t/room1/deeper/temp" -m "no"
  pub -V "$v" -q 1 -t "$t/room1/humidity" -m "no"
  pub -V "$v" -q 1 -t "$t/room1/temp" -m "21.5"
  wait_sub
  got=$(msgs "$out")
  [ "$sub_rc" = 0 ] && [ "$got" = "$t/room1/temp 21.5" ] ||
    fail "$v: '+' wildcard matches one level only" "exit $sub_rc, got: '$got'"
  pass "$v: '+' wildcard matches one level only"
done

# 5. v5 user properties travel with the message
t="$run_id/props"
out="$work/userprop"
start_sub "$out" -V mqttv5 -q 1 -t "$t/up" -C 1 -F 'MSG %P|%p'
pub -V mqttv5 -q 1 -t "$t/up" -m "with props" -D publish user-property color blue
wait_sub
got=$(msgs "$out")
[ "$sub_rc" = 0 ] && [ "$got" = "color:blue|with props" ] ||
  fail "mqttv5: a user property set by mosquitto_pub -D is printed by %P" "exit $sub_rc, got: '$got'"
pass "mqttv5: a user property set by mosquitto_pub -D is printed by %P"

# 6. v5 response topic and correlation data travel too
out="$work/resp"
start_sub "$out" -V mqttv5 -q 1 -t "$t/req" -C 1 -F 'MSG %R|%D|%p'
pub -V mqttv5 -q 1 -t "$t/req" -m "ask" -D publish response-topic "$t/reply" \
  -D publish correlation-data abc123
wait_sub
got=$(msgs "$out")
[ "$sub_rc" = 0 ] && [ "$got" = "$t/reply|abc123|ask" ] ||
  fail "mqttv5: response topic and correlation data reach the subscriber" "exit $sub_rc, got: '$got'"
pass "mqttv5: response topic and correlation data reach the subscriber"

# 7. a 3.1.1 publisher reaches a v5 subscriber and the other way round
out="$work/mixed"
start_sub "$out" -V mqttv5 -q 2 -t "$t/mixed" -C 1 -F 'MSG %q %p'
pub -V mqttv311 -q 2 -t "$t/mixed" -m "from 3.1.1"
wait_sub
got=$(msgs "$out")
[ "$sub_rc" = 0 ] && [ "$got" = "2 from 3.1.1" ] ||
  fail "a QoS 2 message from a 3.1.1 publisher reaches a v5 subscriber at QoS 2" "exit $sub_rc, got: '$got'"
pass "a QoS 2 message from a 3.1.1 publisher reaches a v5 subscriber at QoS 2"

# stop the broker here so a bad exit is a failed check, not just a log line
kill -TERM "$broker_pid"
stop_rc=0
for _ in $(seq 50); do kill -0 "$broker_pid" 2>/dev/null || break; sleep 0.1; done
if kill -0 "$broker_pid" 2>/dev/null; then
  fail "broker exits within 5 s of SIGTERM" "still running"
fi
wait "$broker_pid" || stop_rc=$?
broker_pid=""
[ "$stop_rc" = 0 ] || fail "broker exits with code 0 on SIGTERM" "exit code $stop_rc"
pass "broker exits with code 0 on SIGTERM"
