# shellcheck shell=bash
# Sourced by scripts/quickstart and scripts/compare: a private dbus-daemon with the system
# bus's policy and an agentkeysd on it, both in $WORK, both stopped by `private_stop`.
# Needs: $WORK (a temp dir), agentkeysd on PATH. Sets AGENTKEYS_BUS, BUS_PID, DAEMON_PID.
# Optional: $DAEMON_CONFIG, TOML written to the daemon's configuration file (default: none).

BUS_PID=""; DAEMON_PID=""

private_start() {
  # The tests' bus configuration, which includes the policy agentkeysd ships, placed beside it.
  sed -e "s#@SOCKET@#$WORK/bus.sock#" -e "s#@EXTRA@##" "$ROOT/tests/data/bus.conf.in" > "$WORK/bus.conf"
  cp "$ROOT/systemd/dev.agentkeys.Daemon1.conf" "$WORK/"
  dbus-daemon --config-file="$WORK/bus.conf" --nofork --print-address=3 3>"$WORK/bus.address" \
    2>"$WORK/bus.log" &
  BUS_PID=$!
  for _ in $(seq 200); do [[ -s $WORK/bus.address ]] && break; sleep 0.05; done
  if [[ ! -s $WORK/bus.address ]]; then
    echo "the private dbus-daemon did not come up; its log:" >&2; cat "$WORK/bus.log" >&2; return 1
  fi
  AGENTKEYS_BUS=$(head -n1 "$WORK/bus.address")
  export AGENTKEYS_BUS
  printf '%s\n' "${DAEMON_CONFIG:-}" > "$WORK/agentkeysd.toml"
  agentkeysd --config "$WORK/agentkeysd.toml" --state-dir "$WORK/state" --runtime-dir "$WORK/run" \
    2>"$WORK/agentkeysd.log" &
  DAEMON_PID=$!
  for _ in $(seq 200); do agentkeysctl status >/dev/null 2>&1 && return 0; sleep 0.05; done
  echo "agentkeysd did not come up; its log:" >&2; cat "$WORK/agentkeysd.log" >&2; return 1
}

# Stops the daemon (SIGTERM, clean) and the bus. Safe to call twice.
private_stop() {
  if [[ -n $DAEMON_PID ]] && kill -TERM "$DAEMON_PID" 2>/dev/null; then
    wait "$DAEMON_PID" 2>/dev/null || true
  fi
  DAEMON_PID=""
  if [[ -n $BUS_PID ]] && kill -TERM "$BUS_PID" 2>/dev/null; then
    wait "$BUS_PID" 2>/dev/null || true
  fi
  BUS_PID=""
}
