#!/usr/bin/env bash
# The scale run of BENCHMARKS.md ("100,000 connections across 6 nodes"): for each setup, one
# redis-server ("redis") or a 3-master Redis Cluster ("cluster"), started here the way an
# operator does it (redis-server --cluster-enabled, then redis-cli --cluster create), then
# `wsbench scale`, which starts the 6 gateways and the client processes and measures each
# level; finally the chart of latency against connections for every setup.
#
#   flock /tmp/bench.lock cmd/wsbench/scale.sh                      # what `make bench-scale` runs
#   SETUPS=cluster LEVELS=10000 DUR=10s flock /tmp/bench.lock cmd/wsbench/scale.sh
#
# Settings (environment): SETUPS ("redis cluster"), LEVELS (10000,50000,100000), RATE (10000
# pushes/s), DUR (60s: the push phase at the highest level), SMALL_DUR (20s: at the others),
# BROADCASTS (3 per level), VIA (fcall: pushes straight into Redis, FCALL wsgateway_push;
# http: POST /api/v1/push through the nodes in turn), NODES (6), PROCS (6 client processes), GW (bin/gateway),
# WSBENCH (bin/wsbench), OUT (bin/scale-results/<time>).
# Wrap it in `flock /tmp/bench.lock` on a shared machine so benchmark runs never overlap.
set -euo pipefail

SETUPS=${SETUPS:-redis cluster}
LEVELS=${LEVELS:-10000,50000,100000}
RATE=${RATE:-10000}
DUR=${DUR:-60s}
SMALL_DUR=${SMALL_DUR:-20s}
BROADCASTS=${BROADCASTS:-3}
VIA=${VIA:-fcall}
NODES=${NODES:-6}
PROCS=${PROCS:-6}
GW=${GW:-bin/gateway}
WSBENCH=${WSBENCH:-bin/wsbench}
OUT=${OUT:-bin/scale-results/$(date +%Y%m%d-%H%M%S)}

for bin in "$GW" "$WSBENCH"; do
	[ -x "$bin" ] || { echo "scale: $bin not found (make build; go build -o bin/wsbench ./cmd/wsbench)" >&2; exit 2; }
done
for bin in redis-server redis-cli jq; do
	command -v "$bin" >/dev/null || { echo "scale: $bin not found" >&2; exit 2; }
done
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)

redis_pids=()
stop_redis() {
	for p in "${redis_pids[@]}"; do kill "$p" 2>/dev/null || true; done
	for p in "${redis_pids[@]}"; do
		for _ in $(seq 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
		kill -9 "$p" 2>/dev/null || true
	done
	redis_pids=()
}
trap stop_redis EXIT

# free_port prints a loopback TCP port nobody listens on.
free_port() {
	local p
	while :; do
		p=$((20000 + RANDOM % 12000))
		[ -z "$(ss -Htln "sport = :$p")" ] && [ -z "$(ss -Htln "sport = :$((p + 1))")" ] && { echo "$p"; return; }
	done
}

# start_redis DIR PORT [redis-server flags...] starts a redis-server without persistence and
# waits until it answers.
start_redis() {
	local dir=$1 port=$2
	shift 2
	mkdir -p "$dir"
	redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no --dir "$dir" \
		--maxclients 10000 "$@" >"$dir/redis-$port.log" 2>&1 &
	redis_pids+=($!)
	for _ in $(seq 100); do
		[ "$(redis-cli -p "$port" ping 2>/dev/null)" = PONG ] && return 0
		sleep 0.1
	done
	echo "scale: redis-server on $port did not start:" >&2
	tail -5 "$dir/redis-$port.log" >&2
	exit 1
}

for setup in $SETUPS; do
	dir=$OUT/$setup
	mkdir -p "$dir"
	case $setup in
	redis)
		port=$(free_port)
		start_redis "$dir" "$port"
		addrs=127.0.0.1:$port
		gwredis="--redis-url redis://127.0.0.1:$port"
		;;
	cluster)
		# Three masters, no replicas. The bus port is the client port + 1 (cluster-port), and
		# the join timeout is generous: redis-cli sends each CLUSTER MEET once.
		addrs=
		for i in 1 2 3; do
			port=$(free_port)
			start_redis "$dir" "$port" --cluster-enabled yes --cluster-port $((port + 1)) \
				--cluster-config-file "nodes-$port.conf" --cluster-node-timeout 15000
			addrs=${addrs:+$addrs,}127.0.0.1:$port
		done
		# shellcheck disable=SC2046
		timeout 60 redis-cli --cluster create $(tr , ' ' <<<"$addrs") --cluster-yes >"$dir/cluster-create.log" 2>&1 ||
			{ echo "scale: redis-cli --cluster create failed:" >&2; tail -20 "$dir/cluster-create.log" >&2; exit 1; }
		for a in ${addrs//,/ }; do
			for _ in $(seq 300); do
				redis-cli -p "${a#*:}" cluster info | grep -q 'cluster_state:ok' && break
				sleep 0.1
			done
			redis-cli -p "${a#*:}" cluster info | grep -q 'cluster_state:ok' || { echo "scale: cluster not ok on $a" >&2; exit 1; }
		done
		gwredis="--redis-cluster $addrs"
		;;
	*) echo "scale: SETUPS holds redis and/or cluster, got $setup" >&2; exit 2 ;;
	esac
	pids=$(IFS=,; echo "${redis_pids[*]}")
	echo "== $setup: Redis $addrs (pids $pids), load $(cut -d' ' -f1-3 /proc/loadavg) → $dir.log"
	"$WSBENCH" scale --label "$setup" --gateway "$GW" --gateway-redis "$gwredis" --redis-addrs "$addrs" \
		--redis-pids "$pids" --nodes "$NODES" --procs "$PROCS" --levels "$LEVELS" --rate "$RATE" \
		--duration "$DUR" --small-duration "$SMALL_DUR" --broadcasts "$BROADCASTS" --via "$VIA" --dir "$dir" \
		2>&1 | tee "$dir.log" || echo "== $setup: failed (see $dir.log)"
	grep '^RESULT ' "$dir.log" | sed 's/^RESULT //' >>"$OUT/results.jsonl" || true
	stop_redis
done

[ -s "$OUT/results.jsonl" ] || { echo "scale: no results" >&2; exit 1; }
"$WSBENCH" scale-chart --out "$OUT/scale.svg" --title "wsgateway: latency against connections, $NODES nodes, $RATE pushes/s ($VIA)" "$OUT/results.jsonl"
echo "== $OUT/results.jsonl"
jq -r '"\(.label) \(.conns) (\(.open) open): connect \(.connects_per_s|round)/s; gateway RSS \(.gateway_rss_per_conn_bytes|round) B/conn, Redis \(.redis_bytes_per_conn|round) B/conn; " +
  "broadcast last \([.broadcasts[].last_ms] | map(tostring) | join("/")) ms; " +
  "pushes (\(.push.via)) \(.push.accepted) at \(.push.pushes_per_s|round)/s, lost \(.push.lost), dup \(.push.duplicated), reordered \(.push.reordered), errors \(.push.send_errors); " +
  "p50 \(.push.latency_ms.p50) p99 \(.push.latency_ms.p99) max \(.push.latency_ms.max) ms; lag max \(.push.generator_lag_max_ms) ms; " +
  "CPU gw \(.push.cpu_pct.gateways|round) redis \(.push.cpu_pct.redis|round) clients \(.push.cpu_pct.clients|round) generator \(.push.cpu_pct.generator|round) others \(.push.cpu_pct.other|round) % (idle: gw \(.idle_cpu_pct.gateways|round) clients \(.idle_cpu_pct.clients|round) %); offline after \(.offline_after), ended by the gateways \(.ended_by_gateway) \(.close_codes // {}); load \(.loadavg)"' \
	"$OUT/results.jsonl"
