# Sourced by deploy/test.sh and deploy/test-sanitizers.sh.
# stage NAME COMMAND...: a banner, the command, its wall time.
stage() {
  local name="$1" start
  shift
  echo "==== ${name} ===="
  start=$(date +%s)
  "$@"
  echo "==== ${name}: $(( $(date +%s) - start )) s ===="
}
