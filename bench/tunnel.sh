#!/usr/bin/env bash
# Tunnel throughput (the data-plane part): single-stream TCP
# with iperf3 between two network namespaces joined by a veth, measured in
# one run for
#   raw          the veth itself (the ceiling)
#   wireguard-go plain wireguard-go, the module version in go.mod, built from
#                the module cache, configured with wg(8) and ip(8)
#   meshd        package wg's userspace device with the one-socket bind
#                (bench/wgpair, static peers; not the full agent)
#   meshd relayed the same, with the peers on a relayed path: a connected
#                UDP socket per side as the net.Conn (no TURN server), which
#                measures the relay endpoint's own cost
#   meshd rules  (RULES=1 only) the direct device enforcing firewall rules
#                (only TCP 5201 to and from the peer, stateful), which
#                measures the packet filter's cost
#   ... over IPv6 wireguard-go and meshd again with IPv6 endpoints on the veth
#                (the tunnel inside stays IPv4), where meshd's bind sends
#                through its own IPv6 path (wg/bind/send6.go)
# Tunnels use MTU 1280; veth and TUN offloads stay at their defaults (on).
#
# Usage (root):  bench/tunnel.sh [SECONDS] [REPEATS]
#   defaults 10 s, 1 repeat; results as a Markdown table on stdout.
#   PROFILE=DIR  also write CPU profiles of both meshd devices to DIR.
#   RULES=1      also measure the device with firewall rules (a row more).
set -euo pipefail

SECS=${1:-10}
REPS=${2:-1}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
ID=mtb$$
NA=${ID}a
NB=${ID}b
WORK=$(mktemp -d)
PIDS=()

cleanup() {
	for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
	for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
	ip netns del "$NA" 2>/dev/null || true
	ip netns del "$NB" 2>/dev/null || true
	rm -rf "$WORK"
}
trap cleanup EXIT

for bin in ip wg iperf3 go jq ss; do
	command -v "$bin" >/dev/null || { echo "tunnel.sh: needs $bin" >&2; exit 1; }
done
[ "$(id -u)" = 0 ] || { echo "tunnel.sh: run as root (namespaces, TUN)" >&2; exit 1; }

echo "building wireguard-go (go.mod's version) and bench/wgpair..." >&2
(cd "$ROOT" && go build -o "$WORK/wireguard-go" golang.zx2c4.com/wireguard)
(cd "$ROOT" && go build -o "$WORK/wgpair" ./bench/wgpair)
WGVER=$(cd "$ROOT" && go list -m -f '{{.Version}}' golang.zx2c4.com/wireguard)

ip netns add "$NA"
ip netns add "$NB"
ip link add veth0 netns "$NA" type veth peer name veth0 netns "$NB"
for i in 1 2; do
	ns=$NA; [ $i = 2 ] && ns=$NB
	ip -n "$ns" link set lo up
	ip -n "$ns" addr add 10.88.0.$i/24 dev veth0
	ip -n "$ns" addr add fd88::$i/64 dev veth0 nodad
	ip -n "$ns" link set veth0 up
done

# iperf3 single stream from A to B at address $1; prints Gb/s.
measure() {
	ip netns exec "$NB" iperf3 -s -B "$1" >/dev/null 2>&1 &
	local srv=$!
	PIDS+=("$srv")
	for _ in $(seq 50); do
		ip netns exec "$NB" ss -Hltn "sport = :5201" | grep -q "$1" && break
		sleep 0.1
	done
	if ! ip netns exec "$NA" iperf3 -c "$1" -t "$SECS" -J >"$WORK/iperf.json"; then
		echo "iperf3 to $1 failed:" >&2
		cat "$WORK/iperf.json" >&2
	fi
	kill "$srv" 2>/dev/null || true
	wait "$srv" 2>/dev/null || true
	jq -r '.end.sum_received.bits_per_second // 0' "$WORK/iperf.json" 2>/dev/null | awk '{printf "%.2f\n", $1/1e9}'
}

keypair() { local k; k=$(wg genkey); echo "$k $(echo "$k" | wg pubkey)"; }

# endpoint N: host N's WireGuard endpoint on the veth, IPv6 when FAM=6.
endpoint() {
	if [ "${FAM:-4}" = 6 ]; then echo "[fd88::$1]:51820"; else echo "10.88.0.$1:51820"; fi
}

run_wggo() {
	read -r KA PA <<<"$(keypair)"
	read -r KB PB <<<"$(keypair)"
	local pa pb
	ip netns exec "$NA" "$WORK/wireguard-go" -f "${ID}g0" >/dev/null 2>&1 &
	pa=$!
	ip netns exec "$NB" "$WORK/wireguard-go" -f "${ID}g1" >/dev/null 2>&1 &
	pb=$!
	PIDS+=("$pa" "$pb")
	for _ in $(seq 50); do
		[ -S "/var/run/wireguard/${ID}g0.sock" ] && [ -S "/var/run/wireguard/${ID}g1.sock" ] && break
		sleep 0.1
	done
	echo "$KA" >"$WORK/ka"
	echo "$KB" >"$WORK/kb"
	ip netns exec "$NA" wg set "${ID}g0" private-key "$WORK/ka" listen-port 51820 \
		peer "$PB" allowed-ips 100.65.0.2/32 endpoint "$(endpoint 2)"
	ip netns exec "$NB" wg set "${ID}g1" private-key "$WORK/kb" listen-port 51820 \
		peer "$PA" allowed-ips 100.65.0.1/32 endpoint "$(endpoint 1)"
	ip -n "$NA" addr add 100.65.0.1/24 dev "${ID}g0"
	ip -n "$NB" addr add 100.65.0.2/24 dev "${ID}g1"
	ip -n "$NA" link set "${ID}g0" mtu 1280 up
	ip -n "$NB" link set "${ID}g1" mtu 1280 up
	measure 100.65.0.2
	kill "$pa" "$pb"
	wait "$pa" "$pb" 2>/dev/null || true
}

# run_meshd [relay-port] [allowed-tcp-ports]
run_meshd() {
	read -r KA PA <<<"$(keypair)"
	read -r KB PB <<<"$(keypair)"
	local pa pb profa="" profb="" relay="" rules="" tag=direct
	if [ -n "${1:-}" ]; then
		relay="-relay-port=$1"
		tag=relayed
	fi
	if [ -n "${2:-}" ]; then
		rules="-allow-tcp=$2"
		tag=rules
	fi
	if [ -n "${PROFILE:-}" ]; then
		mkdir -p "$PROFILE"
		profa="-cpuprofile=$PROFILE/meshd-$tag-sender.pprof"
		profb="-cpuprofile=$PROFILE/meshd-$tag-receiver.pprof"
	fi
	ip netns exec "$NA" "$WORK/wgpair" -iface "${ID}m0" -key "$KA" -addr 100.66.0.1/24 -port 51820 \
		-peer "$PB,100.66.0.2/32,$(endpoint 2)" $relay $rules $profa >"$WORK/ma.out" &
	pa=$!
	ip netns exec "$NB" "$WORK/wgpair" -iface "${ID}m1" -key "$KB" -addr 100.66.0.2/24 -port 51820 \
		-peer "$PA,100.66.0.1/32,$(endpoint 1)" $relay $rules $profb >"$WORK/mb.out" &
	pb=$!
	PIDS+=("$pa" "$pb")
	for _ in $(seq 100); do
		grep -q ready "$WORK/ma.out" && grep -q ready "$WORK/mb.out" && break
		sleep 0.1
	done
	measure 100.66.0.2
	kill "$pa" "$pb"
	wait "$pa" "$pb" 2>/dev/null || true
}

declare -a RAW WGGO MESHD RELAYED RULES_ PAIR WGGO6 MESHD6 PAIR6
for r in $(seq "$REPS"); do
	echo "round $r/$REPS: raw veth" >&2
	RAW+=("$(measure 10.88.0.2)")
	# alternate the order so that neither side always runs first
	if [ $((r % 2)) = 1 ]; then
		echo "round $r/$REPS: wireguard-go, meshd" >&2
		WGGO+=("$(run_wggo)")
		MESHD+=("$(run_meshd)")
	else
		echo "round $r/$REPS: meshd, wireguard-go" >&2
		MESHD+=("$(run_meshd)")
		WGGO+=("$(run_wggo)")
	fi
	PAIR+=("$(awk -v a="${MESHD[-1]}" -v b="${WGGO[-1]}" 'BEGIN { if (b > 0) printf "%.2f", a/b; else print 0 }')")
	echo "round $r/$REPS: wireguard-go and meshd over IPv6" >&2
	if [ $((r % 2)) = 1 ]; then
		WGGO6+=("$(FAM=6 run_wggo)")
		MESHD6+=("$(FAM=6 run_meshd)")
	else
		MESHD6+=("$(FAM=6 run_meshd)")
		WGGO6+=("$(FAM=6 run_wggo)")
	fi
	PAIR6+=("$(awk -v a="${MESHD6[-1]}" -v b="${WGGO6[-1]}" 'BEGIN { if (b > 0) printf "%.2f", a/b; else print 0 }')")
	echo "round $r/$REPS: meshd relayed" >&2
	RELAYED+=("$(run_meshd 3478)")
	if [ -n "${RULES:-}" ]; then
		echo "round $r/$REPS: meshd with firewall rules" >&2
		RULES_+=("$(run_meshd "" 5201)")
	fi
done

median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
raw=$(median "${RAW[@]}")
wggo=$(median "${WGGO[@]}")
meshd=$(median "${MESHD[@]}")
relayed=$(median "${RELAYED[@]}")
wggo6=$(median "${WGGO6[@]}")
meshd6=$(median "${MESHD6[@]}")
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a/b; else print "n/a" }'; }

RULESROW=""
if [ -n "${RULES:-}" ]; then
	rules=$(median "${RULES_[@]}")
	RULESROW="| meshd with rules (TCP 5201 only, stateful filter) | ${rules} | ${RULES_[*]} | $(ratio "$meshd" "$rules") |"
fi

cat <<EOF
Tunnel throughput, single-stream TCP (iperf3, ${SECS} s, median of ${REPS}), $(date -u +%Y-%m-%d), $(nproc) CPUs, kernel $(uname -r), commit $(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo "(not a git tree)"), wireguard-go ${WGVER}

| path | Gb/s | runs | meshd / this |
| --- | ---: | --- | ---: |
| raw veth | ${raw} | ${RAW[*]} | $(ratio "$meshd" "$raw") |
| wireguard-go | ${wggo} | ${WGGO[*]} | $(ratio "$meshd" "$wggo") |
| meshd (wg.Device, one-socket bind) | ${meshd} | ${MESHD[*]} | 1.00 |
| meshd relayed (UDP net.Conn as relay) | ${relayed} | ${RELAYED[*]} | $(ratio "$meshd" "$relayed") |
| wireguard-go, IPv6 endpoints | ${wggo6} | ${WGGO6[*]} | $(ratio "$meshd" "$wggo6") |
| meshd, IPv6 endpoints | ${meshd6} | ${MESHD6[*]} | $(ratio "$meshd" "$meshd6") |
${RULESROW}

meshd / wireguard-go = $(ratio "$meshd" "$wggo") (median of the per-round ratios: $(median "${PAIR[@]}"), rounds: ${PAIR[*]}), meshd / raw = $(ratio "$meshd" "$raw"), meshd relayed / wireguard-go = $(ratio "$relayed" "$wggo")
over IPv6: meshd / wireguard-go = $(ratio "$meshd6" "$wggo6") (median of the per-round ratios: $(median "${PAIR6[@]}"), rounds: ${PAIR6[*]})
EOF
