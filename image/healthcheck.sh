#!/bin/sh
# The image's HEALTHCHECK (image/Dockerfile): exit 0 when the supervisor's /healthz answers 200, else 1.
#
# Docker runs it inside the container, every 10 s, on the container's own CPU and memory limits. A `node -e` request
# (what the image ran before) is a Node start-up each time, 30-40 ms of CPU and 8 MB: under `--cpus 0.1`, beside a
# supervisor of 100 VLANs, it took 1.6-2.8 s and, in 2 tries of 6, more than the check's 5 s timeout, which Docker
# counts as a failure (three in a row and a gateway that was routing all along is `unhealthy`). Near the memory floor
# (README, "Resources") it was the one process that stalled. wget (busybox's, in Alpine) costs no measurable CPU. Node remains for a base without wget (the Debian base of the end-to-end tests).
url="${VLAN_GATEWAY_HEALTHZ_URL:-}"
if [ -z "$url" ]; then
  # Where the supervisor of this network namespace says its endpoints listen (a `run --listen` or the config's
  # http.listen): src/cli/endpoints-file.ts, one file per namespace, named by its inode (net:[N]).
  ns=$(readlink /proc/self/ns/net 2>/dev/null) || ns=
  ns=${ns#net:\[}
  file="${VLAN_GATEWAY_STATE_DIR:-/run/vlan-gateway/state}/http-${ns%]}.url"
  if [ -n "$ns" ] && [ -r "$file" ]; then read -r url < "$file" || url=; fi
fi
url="${url:-http://127.0.0.1:10123/healthz}"
# The container's proxy settings are not for its own endpoint (node's http.get ignores them too).
unset http_proxy HTTP_PROXY
if command -v wget >/dev/null 2>&1; then
  wget -q -O /dev/null -T 8 "$url" >/dev/null 2>&1 && exit 0
  exit 1
fi
exec node -e "require('node:http').get(process.argv[1], (r) => process.exit(r.statusCode === 200 ? 0 : 1)).on('error', () => process.exit(1)).setTimeout(8000, () => process.exit(1));" "$url"
