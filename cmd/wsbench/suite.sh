#!/usr/bin/env bash
# Runs every wsbench scenario RUNS times against freshly spawned processes (redis-server and
# the gateway, pinned with taskset), collects the RESULT lines into $OUT/results.jsonl and
# prints the median, min and max of each figure. BENCHMARKS.md explains the method.
#
#   cmd/wsbench/suite.sh                      # full suite: 10,000 connections, 20 s, 3 runs
#   SHORT=1 cmd/wsbench/suite.sh              # what `make bench` runs: 2,000 connections, 3 s, 1 run
#   ONLY="latency-2k throughput" cmd/wsbench/suite.sh
#   COMPARE=/tmp/before/bin/gateway ONLY="memory throughput" cmd/wsbench/suite.sh
#
# Settings (environment): GW (gateway binary, default bin/gateway), WSBENCH (bin/wsbench),
# BARE (calibration server: `go test -c -o bin/bare ./cmd/wsbench`; its runs are skipped when
# missing), REDIS (redis-server), CONNS, DUR, RUNS, OUT, GATEWAY_CPU (0), CLIENT_CPU (1),
# PRIO (rt: SCHED_RR priority 1 for the whole benchmark, so other work on a shared machine
# does not preempt it — needs root; nice: autogroup nice -20; none), DROPS_DUR (length of the
# drops runs, 60s; SHORT 10s), EXPIRE_WAIT (memory: wait for the gateway's push ids to expire
# before the second readings, 65s; SHORT 0s), COMPARE (another gateway binary, e.g. an older
# build: every run of every scenario but the bare ones is made with both, alternating which
# goes first, named <scenario>@before and <scenario>@after).
set -euo pipefail

SHORT=${SHORT:-0}
if [ "$SHORT" = 1 ]; then
	CONNS=${CONNS:-2000} DUR=${DUR:-3s} RUNS=${RUNS:-1} DROPS_DUR=${DROPS_DUR:-10s} EXPIRE_WAIT=${EXPIRE_WAIT:-0s}
fi
GW=${GW:-bin/gateway}
WSBENCH=${WSBENCH:-bin/wsbench}
BARE=${BARE:-bin/bare}
REDIS=${REDIS:-redis-server}
CONNS=${CONNS:-10000}
DUR=${DUR:-20s}
RUNS=${RUNS:-3}
OUT=${OUT:-bin/bench-results/$(date +%Y%m%d-%H%M%S)}
GATEWAY_CPU=${GATEWAY_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
DROPS_DUR=${DROPS_DUR:-60s}
EXPIRE_WAIT=${EXPIRE_WAIT:-65s}
COMPARE=${COMPARE:-}
if [ -z "${PRIO:-}" ]; then
	if [ "$(id -u)" = 0 ] && [ "$SHORT" != 1 ]; then PRIO=rt; else PRIO=none; fi
fi

for bin in "$GW" "$WSBENCH" $COMPARE; do
	[ -x "$bin" ] || { echo "suite: $bin not found (make build; go build -o bin/wsbench ./cmd/wsbench)" >&2; exit 2; }
done
command -v "$REDIS" >/dev/null || { echo "suite: $REDIS not found" >&2; exit 2; }
mkdir -p "$OUT"

prefix=()
extra=()
case $PRIO in
rt) prefix=(setsid -w chrt -r 1) ;;
nice) prefix=(setsid -w) extra=(--autogroup-nice -20) ;;
none) ;;
*) echo "suite: PRIO must be rt, nice or none" >&2; exit 2 ;;
esac
[ -n "$CLIENT_CPU" ] && prefix+=(taskset -c "$CLIENT_CPU")

common=(--conns "$CONNS" --duration "$DUR" --spawn-redis "$REDIS" --gateway-cpu "$GATEWAY_CPU" --redis-cpu "$CLIENT_CPU" "${extra[@]}")

# name | wsbench arguments (the gateway is added below; "bare" runs use the calibration server)
scenarios=(
	"idle|--scenario idle"
	"latency-2k|--scenario latency --rate 2000"
	"latency-10k|--scenario latency --rate 10000"
	"latency-2k-redis|--scenario latency --rate 2000 --via redis"
	"throughput|--scenario throughput --publishers 64"
	"broadcast|--scenario broadcast"
	"batch|--scenario batch --batch 100 --publishers 8"
	"bulk|--scenario bulk --batch 100 --publishers 8"
	"cross-node|--scenario cross-node --rate 2000 --nodes 3"
	"drops-v1|--scenario drops --rate 2000 --duration $DROPS_DUR"
	"drops-raw|--scenario drops --mode raw --rate 2000 --duration $DROPS_DUR"
	"memory|--scenario memory --expire-wait $EXPIRE_WAIT"
	"bare-throughput|--scenario throughput --publishers 64 --dev"
	"bare-broadcast|--scenario broadcast --dev"
)

for entry in "${scenarios[@]}"; do
	name=${entry%%|*}
	read -r -a args <<<"${entry#*|}"
	if [ -n "${ONLY:-}" ] && [[ " $ONLY " != *" $name "* ]]; then continue; fi
	# builds: "label=binary" in the order of the first run; with COMPARE the order alternates.
	builds=("=$GW")
	# drops needs the seq of every push: only builds with the inbox answer one.
	[ -n "$COMPARE" ] && [[ $name != drops-* ]] && builds=("before=$COMPARE" "after=$GW")
	if [[ $name == bare-* ]]; then
		[ -x "$BARE" ] || { echo "== $name: skipped ($BARE missing)"; continue; }
		builds=("=$BARE -test.run ^TestBareServer$ -test.timeout 0 --")
	fi
	for run in $(seq 1 "$RUNS"); do
		order=("${builds[@]}")
		if [ "${#builds[@]}" = 2 ] && [ $((run % 2)) = 0 ]; then order=("${builds[1]}" "${builds[0]}"); fi
		for build in "${order[@]}"; do
			label=${build%%=*} gw=${build#*=}
			full=$name${label:+@$label}
			log="$OUT/$full-$run.log"
			svg=()
			[[ $name == latency-* && $run == 1 && $label != before ]] && svg=(--svg "$OUT/$name.svg")
			echo "== $full run $run/$RUNS (load $(cut -d' ' -f1-3 /proc/loadavg)) → $log"
			if ! "${prefix[@]}" "$WSBENCH" "${common[@]}" "${args[@]}" "${svg[@]}" --spawn-gateway "$gw" >"$log" 2>&1; then
				echo "   failed:"; tail -5 "$log" | sed 's/^/   /'
			fi
			grep '^RESULT ' "$log" | sed 's/^RESULT //' | jq -c --arg name "$full" --argjson run "$run" '. + {name: $name, run: $run}' >>"$OUT/results.jsonl" || true
			grep -E '^(connect|sent|rate|deliveries|errors|latency|server RSS|redis|stored|history|cpu|drops|delivered|wire|replay): ' "$log" | sed 's/^/   /' || true
		done
	done
done

echo
echo "== medians over runs (min–max) — $OUT/results.jsonl"
jq -s -r '
  def med: sort | if length == 0 then null elif length % 2 == 1 then .[length/2|floor] else (.[length/2-1] + .[length/2]) / 2 end;
  def fig($xs): ($xs | map(select(. != null))) as $v | if ($v|length) == 0 then "-" else
    "\($v|med|.*10|round/10) (\($v|min|.*10|round/10)–\($v|max|.*10|round/10))" end;
  group_by(.name)[] |
  "\(.[0].name) [\(length) runs]: connect/s \(fig(map(.connects_per_s)))" +
  (if .[0].scenario == "idle" then
     ", RSS B/conn \(fig(map(.server_rss_per_conn_bytes))), Redis B/user \(fig(map(.redis_bytes_per_user)))"
   elif .[0].scenario == "memory" then
     ", Redis B per idle user \(fig(map(.memory.idle_bytes_per_user)))" +
     ", per stored message \(fig(map(.memory.stored_bytes_per_msg))) (fresh \(fig(map(.memory.stored_bytes_per_msg_fresh))))" +
     ", per active user with history \(fig(map(.memory.history_bytes_per_user))) (fresh \(fig(map(.memory.history_bytes_per_user_fresh))))"
   elif .[0].scenario == "drops" then
     ", delivered % \(map(.drops.delivered_pct) | map(select(. != null)) | if length == 0 then "-" else
        "\(med*1000|round/1000) (\(min*1000|round/1000)–\(max*1000|round/1000))" end)" +
     ", accepted \(fig(map(.drops.accepted))), missing \(fig(map(.drops.missing)))" +
     ", duplicates \(fig(map(.drops.duplicates))), wire duplicates \(fig(map(.drops.wire_duplicates)))" +
     ", replays \(fig(map(.drops.replays))), replay p50 ms \(fig(map(.drops.replay_p50_ms))), p99 ms \(fig(map(.drops.replay_p99_ms)))" +
     ", outage p50 ms \(fig(map(.drops.outage_p50_ms)))" +
     ", gateway CPU % \(fig(map(.server_cpu_pct[0]))), wsbench CPU % \(fig(map(.generator_cpu_pct))), other CPU % \(fig(map(.other_cpu_pct)))"
   else
     ", pushes/s \(fig(map(.pushes_per_s))), deliveries/s \(fig(map(.deliveries_per_s)))" +
     ", p50 ms \(fig(map(.latency_ms.p50))), p99 ms \(fig(map(.latency_ms.p99))), max ms \(fig(map(.latency_ms.max)))" +
     ", lost \(fig(map(.lost))), dup \(fig(map(.duplicated))), reordered \(fig(map(.reordered)))" +
     ", gateway CPU % \(fig(map(.server_cpu_pct[0])))" +
     ", other CPU % \(fig(map(.other_cpu_pct)))"
   end)' "$OUT/results.jsonl"
