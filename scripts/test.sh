#!/usr/bin/env bash
# The test command (README "Tests"): installs what the tests need, builds, runs every test, lab tests included.
# Run as root on Debian 12 with Node 20. Under CI=true a missing prerequisite fails the run instead of skipping.
set -euo pipefail
cd "$(dirname "$0")/.."

need_pkgs=()
command -v gobgpd >/dev/null || need_pkgs+=(gobgpd)
command -v bird >/dev/null || need_pkgs+=(bird2)
command -v iptables-restore >/dev/null || need_pkgs+=(iptables)
command -v ip >/dev/null || need_pkgs+=(iproute2)
command -v conntrack >/dev/null || need_pkgs+=(conntrack)
[ -d /usr/share/gocode/src/github.com/osrg/gobgp/api ] || need_pkgs+=(golang-github-osrg-gobgp-dev)
command -v pkill >/dev/null || need_pkgs+=(procps)
if [ "${#need_pkgs[@]}" -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    echo "installing test prerequisites: ${need_pkgs[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_pkgs[@]}" >/dev/null
  else
    echo "missing test prerequisites (need root to install): ${need_pkgs[*]}" >&2
    [ "${CI:-}" = true ] && exit 1
  fi
fi
# A stray system bird/gobgpd service would hold port 179 in the root namespace: the tests use their own.
systemctl stop bird.service gobgpd.service >/dev/null 2>&1 || true

[ -d node_modules ] || npm ci --no-audit --no-fund
npx tsc -p tsconfig.json
log=$(mktemp)
trap 'rm -f "$log"' EXIT
set +e
npx tap --reporter=tap "$@" | tee "$log"
status=${PIPESTATUS[0]}
set -e
# A closing line any CI reads: "N passed, N failed[, N skipped]", from tap's own summary.
node -e '
  const text = require("fs").readFileSync(process.argv[1], "utf8");
  const m = [...text.matchAll(/^# \{ total: (\d+)(?:, pass: (\d+))?(?:, fail: (\d+))?(?:, skip: (\d+))?/gm)].pop();
  if (!m) { console.log("0 passed, 1 failed"); process.exit(0); }
  const [, , pass = "0", fail = "0", skip = "0"] = m;
  console.log(`${pass} passed, ${fail} failed${skip !== "0" ? `, ${skip} skipped` : ""}`);
' "$log"
exit "$status"
