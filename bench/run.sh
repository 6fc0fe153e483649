#!/usr/bin/env bash
# bench/run.sh measures meshd against its references and writes the
# results, as Markdown tables, to BENCHMARKS.md:
#
#   1. tunnel throughput: the real `meshd agent` tunnel vs plain wireguard-go
#      and raw veth between the same namespaces (TCP, UDP), the relayed path;
#   2. connection setup: agent start → first ping, → direct path;
#   3. control: maps at 1k/5k/10k peers, policy fan-out, agents joining/s;
#   4. signal (messages/s, latency) and relay (vs coturn);
#   5. memory: `meshd all` with 1,000 peers, the agent with 1 and 51 peers;
#   6. replicas on PostgreSQL next to SQLite: joins/s, a start's maps,
#      policy fan-out over 2 replicas, memory per peer, signal across
#      two instances over the PostgreSQL cluster.
#
# Usage, as root, from anywhere:
#
#   bench/run.sh             the full run, ~15-20 minutes
#   QUICK=1 bench/run.sh     a smoke run, a few minutes, same table
#
# Environment:
#   OUT=FILE   where to write (default: BENCHMARKS.md at the module root)
#   REV=REV    measure meshd as of git revision REV (built from `git archive`,
#              so uncommitted changes in the tree are left out); the harness
#              (bench/) always comes from the working tree
#   KEEP=1     keep the work directory (logs, profiles, raw results)
#
# Everything runs in network namespaces named mlab-<pid>-* (the lab) and
# mtb<pid>* (bench/tunnel.sh); nothing is added to the root namespace. An
# interrupt or a failure stops the running step, which removes its
# namespaces; namespaces of a step killed outright are removed at the end
# (and by the next lab run).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=${OUT:-$ROOT/BENCHMARKS.md}
QUICK=${QUICK:-0}
WORK=$(mktemp -d /tmp/meshd-bench.XXXXXX)
STEP_PID=""
FAILED=()

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

cleanup() {
	local rc=$?
	trap - EXIT INT TERM
	if [ -n "$STEP_PID" ] && kill -0 "$STEP_PID" 2>/dev/null; then
		log "stopping the running step (pid $STEP_PID)"
		kill -TERM -- "-$STEP_PID" 2>/dev/null || kill -TERM "$STEP_PID" 2>/dev/null || true
		for _ in $(seq 100); do kill -0 "$STEP_PID" 2>/dev/null || break; sleep 0.1; done
		kill -KILL -- "-$STEP_PID" 2>/dev/null || true
	fi
	sweep
	if [ "${KEEP:-0}" = 1 ]; then
		log "work directory kept: $WORK"
	else
		rm -rf "$WORK"
	fi
	exit "$rc"
}
trap cleanup EXIT
trap 'log interrupted; exit 130' INT TERM

# sweep removes the namespaces of this run's steps that are gone (a step
# killed with SIGKILL cannot clean up after itself).
sweep() {
	local ns pid
	for ns in $(ip netns list 2>/dev/null | awk '{print $1}'); do
		case "$ns" in
		mlab-*-*) pid=${ns#mlab-}; pid=${pid%%-*} ;;
		mtb*) pid=${ns#mtb}; pid=${pid%[ab]} ;;
		*) continue ;;
		esac
		[ -f "$WORK/pids" ] && grep -qx "$pid" "$WORK/pids" || continue
		kill -0 "$pid" 2>/dev/null && continue
		for p in $(ip netns pids "$ns" 2>/dev/null); do kill -KILL "$p" 2>/dev/null || true; done
		ip netns delete "$ns" 2>/dev/null && log "removed namespace $ns left by pid $pid"
	done
}

[ "$(id -u)" = 0 ] || { echo "run.sh: run as root (network namespaces, nftables, TUN)" >&2; exit 1; }
for bin in go ip nft iperf3 wg ping git; do
	command -v "$bin" >/dev/null || { echo "run.sh: needs $bin" >&2; exit 1; }
done
HAVE_PERF=1; command -v perf >/dev/null || { HAVE_PERF=0; log "no perf: no CPU profiles"; }
HAVE_COTURN=1; command -v turnserver >/dev/null || { HAVE_COTURN=0; log "no turnserver: the relay is measured without coturn"; }

STARTED=$(date -u +%Y-%m-%dT%H:%M:%SZ)
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg | sed 's/ /, /g')
CMDS=$WORK/commands.txt
RESULTS=$WORK/rows.jsonl
PROFILES=$WORK/profiles
mkdir -p "$PROFILES" "$WORK/bin"
: >"$RESULTS"

# The source measured: the working tree, or REV exported.
SRC=$ROOT
cd "$ROOT"
if [ -n "${REV:-}" ]; then
	COMMIT=$(git rev-parse --short "$REV")
	SRC=$WORK/src
	mkdir -p "$SRC"
	git archive "$COMMIT" | tar -x -C "$SRC"
	DESC="$COMMIT (git archive of $REV)"
else
	COMMIT=$(git rev-parse --short HEAD)
	DIRTY=$(git status --porcelain --untracked-files=no -- . ':!BENCHMARKS.md' | wc -l)
	DESC=$COMMIT
	[ "$DIRTY" = 0 ] || DESC="$COMMIT + uncommitted changes in $DIRTY files"
fi

if [ "$QUICK" = 1 ]; then
	MODE=quick SECS=3 ROUNDS=1 RELAY_ROUNDS=1 SETUP_RUNS=3 SIGNAL_N=5000x NETMAP_N=1x RELAY_PACKETS=100000 REPL_COUNT=1
else
	MODE=full SECS=10 ROUNDS=5 RELAY_ROUNDS=2 SETUP_RUNS=10 SIGNAL_N=20000x NETMAP_N=5x RELAY_PACKETS=300000 REPL_COUNT=3
fi
log "$MODE run of $DESC; work directory $WORK"

{
	echo "# $MODE run; SRC is the source measured (the module root, or \`git archive $COMMIT\`), WORK a temporary directory"
	echo "cd \$SRC"
	echo "go build -o \$WORK/bin/meshd ."
	echo "go build -o \$WORK/bin/wireguard-go golang.zx2c4.com/wireguard   # go.mod's version, from the module cache"
	echo "go build -o \$WORK/bin/relay ./bench/relay"
	echo "go test -c -o \$WORK/bin/netmap.test ./internal/netmap   # likewise control.test, signal.test"
	echo "go test -c -o \$WORK/bin/bench.test ./bench              # the harness, from the working tree"
	echo "export MESHD_LAB_BINARY=\$WORK/bin/meshd MESHD_BENCH_WIREGUARD_GO=\$WORK/bin/wireguard-go \\"
	echo "       MESHD_BENCH_RESULTS=\$WORK/rows.jsonl MESHD_BENCH_PROFILE=\$WORK/profiles MESHD_BENCH_SECONDS=$SECS MESHD_BENCH_QUICK=$QUICK \\"
	echo "       MESHD_LAB_LOGS=\$WORK/lab-logs"
} >"$CMDS"

log "building (meshd, wireguard-go, test binaries)"
(
	cd "$SRC"
	go build -o "$WORK/bin/meshd" .
	go build -o "$WORK/bin/wireguard-go" golang.zx2c4.com/wireguard
	go build -o "$WORK/bin/relay" ./bench/relay
	for p in netmap control signal; do go test -c -o "$WORK/bin/$p.test" "./internal/$p"; done
	go test -c -o "$WORK/bin/pgcluster.test" ./store/pgcluster
)
(cd "$ROOT" && go test -c -o "$WORK/bin/bench.test" ./bench && go build -o "$WORK/bin/report" ./bench/report)
WGVER=$(cd "$SRC" && go list -m -f '{{.Version}}' golang.zx2c4.com/wireguard)
TOOLS="$(iperf3 --version | head -1 | cut -d' ' -f1-2), wireguard-go $WGVER"
[ "$HAVE_COTURN" = 1 ] && TOOLS="$TOOLS, coturn $(turnserver --version 2>/dev/null | head -1 || echo '?')"

export MESHD_LAB_BINARY=$WORK/bin/meshd MESHD_BENCH_WIREGUARD_GO=$WORK/bin/wireguard-go \
	MESHD_BENCH_RESULTS=$RESULTS MESHD_BENCH_SECONDS=$SECS MESHD_BENCH_QUICK=$QUICK MESHD_LAB_LOGS=$WORK/lab-logs
[ "$HAVE_PERF" = 1 ] && export MESHD_BENCH_PROFILE=$PROFILES

# step NAME DIR SHOWN CMD...: runs CMD in DIR as its own process group,
# output to $WORK/NAME.log with the load average before and after, and
# records SHOWN (the command as a reader would type it). A failed step is
# noted and the run goes on.
step() {
	local name=$1 dir=$2 shown=$3
	shift 3
	local logf=$WORK/$name.log
	echo "$shown" >>"$CMDS"
	log "$name: $shown"
	echo "# load-before $(cut -d' ' -f1 /proc/loadavg)" >"$logf"
	(cd "$dir" && exec setsid "$@") >>"$logf" 2>&1 &
	STEP_PID=$!
	echo "$STEP_PID" >>"$WORK/pids"
	local rc=0
	wait "$STEP_PID" || rc=$?
	STEP_PID=""
	echo "# load-after $(cut -d' ' -f1 /proc/loadavg)" >>"$logf"
	if [ "$rc" != 0 ]; then
		FAILED+=("$name (exit $rc)")
		log "$name FAILED (exit $rc); last lines of $logf:"
		tail -20 "$logf" >&2
	fi
	sweep
}

B=$WORK/bin/bench.test
labbench() { # labbench NAME BENCH-REGEXP N
	step "$1" "$ROOT/bench" "go test ./bench -run '^\$' -bench '$2' -benchtime $3x -v" \
		"$B" -test.run '^$' -test.bench "$2" -test.benchtime "$3x" -test.v -test.timeout 30m
}

gobench() { # gobench NAME PKG BENCH-REGEXP BENCHTIME
	step "$1" "$SRC/internal/$2" "go test ./internal/$2 -run '^\$' -bench '$3' -benchtime $4" \
		"$WORK/bin/$2.test" -test.run '^$' -test.bench "$3" -test.benchtime "$4" -test.timeout 30m
}

# 1. Tunnel throughput.
labbench tunnel '^BenchmarkTunnel$' "$ROUNDS"
labbench relayed-symmetric '^BenchmarkRelayed$/^symmetric$' "$RELAY_ROUNDS"
if [ "$QUICK" != 1 ]; then
	labbench relayed-udp-blocked '^BenchmarkRelayed$/^udp-blocked$' 1
	step tunnel-device "$SRC" "bench/tunnel.sh $SECS 1 > tunnel-device.md   # package wg's device alone, static peers" \
		bash -c "bench/tunnel.sh $SECS 1 >$WORK/tunnel-device.md"
fi
# 2. Connection setup.
labbench setup '^BenchmarkSetup$' "$SETUP_RUNS"
# 5. Memory (the agent; `meshd all` comes with the joins).
labbench memory '^BenchmarkAgentMemory$' 1
# 3. Control plane: joins/s (and `meshd all` with N peers), maps, fan-out.
labbench server '^BenchmarkServer$' 1
gobench netmap netmap 'FullComputation|Build|PeerJoin' "$NETMAP_N"
if [ "$QUICK" = 1 ]; then
	gobench control control 'PolicyChangeFanout' 1x
	gobench signal signal 'Forward/tls/(inflight=8|rate=2000)$' "$SIGNAL_N"
else
	gobench control control 'PolicyChangeFanout|MemoryPerConnectedPeer' 1x
	gobench signal signal 'Forward/tls/' "$SIGNAL_N"
fi
# 6. Replicas on PostgreSQL (internal/pgtest starts a server of its own;
# the benchmarks skip without PostgreSQL): each PostgreSQL figure next to
# SQLite's (one instance's for signal), run REPL_COUNT times.
step replicas-control "$SRC/internal/control" "go test ./internal/control -run '^\$' -bench ReplicaJoins -benchtime 500x -count $REPL_COUNT && go test ./internal/control -run '^\$' -bench 'ReplicaPolicyFanout|ReplicaMemoryPerPeer|StartMaps' -benchtime 1x -count $REPL_COUNT" \
	bash -c "'$WORK/bin/control.test' -test.run '^\$' -test.bench 'ReplicaJoins' -test.benchtime 500x -test.count $REPL_COUNT -test.timeout 30m &&
		'$WORK/bin/control.test' -test.run '^\$' -test.bench 'ReplicaPolicyFanout|ReplicaMemoryPerPeer|StartMaps' -test.benchtime 1x -test.count $REPL_COUNT -test.timeout 60m"
step replicas-signal "$SRC/internal/signal" "go test ./internal/signal -run '^\$' -bench 'CrossInstance(PG)?/' -benchtime $SIGNAL_N -count $REPL_COUNT" \
	"$WORK/bin/signal.test" -test.run '^$' -test.bench 'CrossInstance(PG)?/' -test.benchtime "$SIGNAL_N" -test.count "$REPL_COUNT" -test.timeout 30m
step replicas-pgcluster "$SRC/store/pgcluster" "go test ./store/pgcluster -run '^\$' -bench 'Publish/batched=true' -benchtime $SIGNAL_N -count $REPL_COUNT" \
	"$WORK/bin/pgcluster.test" -test.run '^$' -test.bench 'Publish/batched=true' -test.benchtime "$SIGNAL_N" -test.count "$REPL_COUNT" -test.timeout 30m
# 4. Relay: meshd and coturn, then again in the other order.
TARGETS=meshd
[ "$HAVE_COTURN" = 1 ] && TARGETS=meshd,coturn
step relay-1 "$SRC" "go run ./bench/relay -target $TARGETS -pairs 1,10 -packets $RELAY_PACKETS" \
	"$WORK/bin/relay" -target "$TARGETS" -pairs 1,10 -packets "$RELAY_PACKETS"
if [ "$QUICK" != 1 ] && [ "$HAVE_COTURN" = 1 ]; then
	step relay-2 "$SRC" "go run ./bench/relay -target coturn,meshd -pairs 1,10 -packets $RELAY_PACKETS" \
		"$WORK/bin/relay" -target coturn,meshd -pairs 1,10 -packets "$RELAY_PACKETS"
fi

log "writing $OUT"
args=(-results "$RESULTS" -profiles "$PROFILES" -commands "$CMDS" -commit "$DESC" -mode "$MODE"
	-started "$STARTED" -load-start "$LOAD_START" -finished "$(date -u +%Y-%m-%dT%H:%M:%SZ)"
	-load-end "$(cut -d' ' -f1-3 /proc/loadavg | sed 's/ /, /g')" -tools "$TOOLS" -out "$OUT")
for n in netmap control signal replicas-control replicas-signal replicas-pgcluster; do [ -f "$WORK/$n.log" ] && args+=(-gobench "$WORK/$n.log"); done
for n in relay-1 relay-2; do [ -f "$WORK/$n.log" ] && args+=(-relay "$WORK/$n.log"); done
[ -s "$WORK/tunnel-device.md" ] && args+=(-extra "1. Tunnel throughput::**The data plane alone** (\`bench/tunnel.sh\`: package wg's device with the one-socket bind and static peers, no agent, in two namespaces joined by one veth; its relayed row is a plain UDP conn standing in for TURN)::$WORK/tunnel-device.md")
for f in "${FAILED[@]}"; do args+=(-failed "$f"); done
[ -f "$ROOT/bench/NOTES.md" ] && args+=(-notes "$ROOT/bench/NOTES.md")
printf '%q ' "$WORK/bin/report" "${args[@]}" >"$WORK/report.cmd" # to render again from the kept results
"$WORK/bin/report" "${args[@]}"
log "done: $OUT${FAILED:+ (failed steps: ${FAILED[*]})}"
[ "${#FAILED[@]}" = 0 ]
