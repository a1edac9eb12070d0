#!/usr/bin/env bash
# wsgateway side by side with Centrifugo's engine (bench/centrifuge-peer) and with the bare
# gorilla calibration server, in the same run on the same machine: the targets of issue 16 as
# ratios (BENCHMARKS.md, "Side by side with Centrifugo"). Each comparison is a pair of wsbench
# runs made one right after the other, the order alternating from one run to the next:
#
#   raw  gateway, clients without subprotocol  vs  centrifuge peer, plain pub/sub
#   v1   gateway, clients offering wsgateway.v1 vs  centrifuge peer with -history 100
#        (idle, throughput, latency at 2,000/s and at 10,000/s, connects/s from every run)
#   bare gateway (raw) vs the calibration server writing pre-built frames (broadcast, batch)
#
# It prints the medians of every figure and a Markdown table of the ratios against the
# targets, ready to paste; everything is also in $OUT (results.jsonl, one log per run).
#
#   cmd/wsbench/compare.sh              # 10,000 connections, 10 s phases, 3 runs: ~25 min
#   SHORT=1 cmd/wsbench/compare.sh      # what `make bench` runs: 2,000 connections, 3 s, 1 run
#   ONLY="throughput latency-2k" PAIRS=raw cmd/wsbench/compare.sh
#
# Settings (environment): GW (bin/gateway), WSBENCH (bin/wsbench), PEER (bin/centrifuge-peer,
# built from bench/centrifuge-peer when missing), BARE (bin/bare: `go test -c -o bin/bare
# ./cmd/wsbench`; the bare pair is skipped without it), REDIS (redis-server), CONNS, DUR
# (measured phase), IDLE_DUR (how long idle connections stay idle, 5s), RUNS, OUT, PAIRS
# ("raw v1 bare"), ONLY (scenario names: idle throughput latency-2k latency-10k broadcast
# batch), GATEWAY_CPU (0; the peer is pinned the same way), CLIENT_CPU (1: Redis and wsbench),
# PRIO (as in suite.sh: rt, nice or none), LOCK (/tmp/bench.lock: every run holds this flock,
# so benchmarks of others sharing the machine never overlap with one; empty = no lock),
# PROFILE=1 (then, per side of the raw and v1 pairs, one more throughput run with the server's
# CPU profile, `go tool pprof -top`, and `perf` of redis-server over the measured phase:
# $OUT/prof/; BENCHMARKS.md reads them where a target is missed).
set -euo pipefail

SHORT=${SHORT:-0}
if [ "$SHORT" = 1 ]; then
	CONNS=${CONNS:-2000} DUR=${DUR:-3s} IDLE_DUR=${IDLE_DUR:-2s} RUNS=${RUNS:-1}
fi
GW=${GW:-bin/gateway}
WSBENCH=${WSBENCH:-bin/wsbench}
PEER=${PEER:-bin/centrifuge-peer}
BARE=${BARE:-bin/bare}
REDIS=${REDIS:-redis-server}
CONNS=${CONNS:-10000}
DUR=${DUR:-10s}
IDLE_DUR=${IDLE_DUR:-5s}
RUNS=${RUNS:-3}
OUT=${OUT:-bin/bench-results/compare-$(date +%Y%m%d-%H%M%S)}
PAIRS=${PAIRS:-raw v1 bare}
ONLY=${ONLY:-idle throughput latency-2k latency-10k broadcast batch}
GATEWAY_CPU=${GATEWAY_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
LOCK=${LOCK-/tmp/bench.lock}
if [ -z "${PRIO:-}" ]; then
	if [ "$(id -u)" = 0 ] && [ "$SHORT" != 1 ]; then PRIO=rt; else PRIO=none; fi
fi

for bin in "$GW" "$WSBENCH"; do
	[ -x "$bin" ] || { echo "compare: $bin not found (make build; go build -o bin/wsbench ./cmd/wsbench)" >&2; exit 2; }
done
if [ ! -x "$PEER" ]; then
	src=$(cd "$(dirname "$0")/../../bench/centrifuge-peer" && pwd)
	echo "== building $PEER from $src"
	mkdir -p "$(dirname "$PEER")"
	peer_abs=$(cd "$(dirname "$PEER")" && pwd)/$(basename "$PEER")
	(cd "$src" && go build -o "$peer_abs" .)
fi
command -v "$REDIS" >/dev/null || { echo "compare: $REDIS not found" >&2; exit 2; }
command -v jq >/dev/null || { echo "compare: jq not found" >&2; exit 2; }
mkdir -p "$OUT"
touch "$OUT/results.jsonl"

prefix=()
extra=()
[ -n "$LOCK" ] && prefix=(flock "$LOCK")
case $PRIO in
rt) prefix+=(setsid -w chrt -r 1) ;;
nice) prefix+=(setsid -w) extra=(--autogroup-nice -20) ;;
none) ;;
*) echo "compare: PRIO must be rt, nice or none" >&2; exit 2 ;;
esac
[ -n "$CLIENT_CPU" ] && prefix+=(taskset -c "$CLIENT_CPU")
common=(--conns "$CONNS" --spawn-redis "$REDIS" --gateway-cpu "$GATEWAY_CPU" --redis-cpu "$CLIENT_CPU" "${extra[@]}")

# scenario name | wsbench arguments
tests=(
	"idle|--scenario idle --duration $IDLE_DUR"
	"throughput|--scenario throughput --publishers 64 --duration $DUR"
	"latency-2k|--scenario latency --rate 2000 --duration $DUR"
	"latency-10k|--scenario latency --rate 10000 --duration $DUR"
	"broadcast|--scenario broadcast --duration $DUR"
	"batch|--scenario batch --batch 100 --publishers 8 --duration $DUR"
)
# side arguments per pair: "label|wsbench arguments" × 2
sides() {
	case $1 in
	raw) echo "gateway|--spawn-gateway $GW --mode raw"; echo "centrifuge|--spawn-centrifuge $PEER" ;;
	v1) echo "gateway|--spawn-gateway $GW --mode v1"; echo "centrifuge|--spawn-centrifuge $PEER --centrifuge-history 100" ;;
	bare) echo "gateway|--spawn-gateway $GW --mode raw"; echo "bare|--dev --spawn-gateway" ;;
	esac
}
# which pairs run which scenarios
applies() {
	case $1 in
	bare) [[ $2 == broadcast || $2 == batch ]] ;;
	*) [[ $2 != broadcast && $2 != batch ]] ;;
	esac
}

for run in $(seq 1 "$RUNS"); do
	for entry in "${tests[@]}"; do
		name=${entry%%|*}
		[[ " $ONLY " == *" $name "* ]] || continue
		read -r -a args <<<"${entry#*|}"
		for pair in $PAIRS; do
			applies "$pair" "$name" || continue
			if [ "$pair" = bare ] && [ ! -x "$BARE" ]; then
				echo "== bare/$name: skipped ($BARE missing: go test -c -o $BARE ./cmd/wsbench)"
				continue
			fi
			mapfile -t both < <(sides "$pair")
			[ $((run % 2)) = 0 ] && both=("${both[1]}" "${both[0]}")
			for side in "${both[@]}"; do
				label=${side%%|*}
				read -r -a sargs <<<"${side#*|}"
				# The calibration server's command line is one argument of --spawn-gateway.
				[ "$label" = bare ] && sargs+=("$BARE -test.run ^TestBareServer\$ -test.timeout 0 --")
				full=$pair/$name/$label
				log="$OUT/${full//\//-}-$run.log"
				echo "== $full run $run/$RUNS (load $(cut -d' ' -f1-3 /proc/loadavg)) → $log"
				if ! "${prefix[@]}" "$WSBENCH" "${common[@]}" "${args[@]}" "${sargs[@]}" >"$log" 2>&1; then
					echo "   failed:"; tail -5 "$log" | sed 's/^/   /'
				fi
				grep '^RESULT ' "$log" | sed 's/^RESULT //' |
					jq -c --arg name "$full" --arg pair "$pair" --arg test "$name" --arg side "$label" --argjson run "$run" \
						'. + {name: $name, pair: $pair, test: $test, side: $side, run: $run}' >>"$OUT/results.jsonl" || true
				grep -E '^(connect|sent|rate|deliveries|errors|latency|server RSS|redis|cpu): ' "$log" | sed 's/^/   /' || true
			done
		done
	done
done

# profile PAIR SIDE: one throughput run with both processes profiled over its measured phase.
profile() {
	local pair=$1 label=$2 base=$OUT/prof/$1-$2 port bin secs sargs redis_pid i
	port=$((20000 + RANDOM % 10000))
	case $label in
	gateway)
		bin=$GW
		sargs=(--spawn-gateway "$GW" --mode "$pair" --gateway-args "--pprof-addr 127.0.0.1:$port")
		;;
	centrifuge)
		bin=$PEER
		sargs=(--spawn-centrifuge "$PEER -pprof 127.0.0.1:$port")
		[ "$pair" = v1 ] && sargs+=(--centrifuge-history 100)
		;;
	esac
	secs=${DUR%s}
	echo "== profile $pair/throughput/$label → $base.*"
	"${prefix[@]}" "$WSBENCH" "${common[@]}" --scenario throughput --publishers 64 --duration "$DUR" "${sargs[@]}" \
		--server-profile "http://127.0.0.1:$port/debug/pprof/profile" --server-profile-out "$base.pprof" >"$base.log" 2>&1 &
	local job=$!
	# perf of redis-server from the start of the measured phase (the "throughput:" line).
	for i in $(seq 1 1200); do
		grep -q '^throughput: ' "$base.log" 2>/dev/null && break
		kill -0 "$job" 2>/dev/null || break
		sleep 0.1
	done
	redis_pid=$(sed -n 's/^spawned redis-server pid \([0-9]*\).*/\1/p' "$base.log" | head -1)
	if command -v perf >/dev/null && [ -n "$redis_pid" ] && kill -0 "$job" 2>/dev/null; then
		perf record -q -e cpu-clock -p "$redis_pid" -o "$base.redis.perf" -- sleep "$secs" >/dev/null 2>&1 || true
	fi
	wait "$job" || echo "   failed: $(tail -3 "$base.log")"
	grep -E '^(sent|cpu|redis cmds): ' "$base.log" | sed 's/^/   /' || true
	[ -s "$base.pprof" ] && go tool pprof -top -nodecount 35 "$bin" "$base.pprof" >"$base.top.txt" 2>&1 &&
		sed -n '1,15p' "$base.top.txt" | sed 's/^/   /'
	if [ -s "$base.redis.perf" ]; then
		perf report -i "$base.redis.perf" --stdio --no-children --sort sym 2>/dev/null | grep -v '^#' | grep -v '^$' |
			head -40 >"$base.redis.txt" || true
		echo "   redis-server (perf, top symbols):"; head -12 "$base.redis.txt" | sed 's/^/   /'
	fi
}
if [ "${PROFILE:-0}" = 1 ]; then
	mkdir -p "$OUT/prof"
	for pair in $PAIRS; do
		[ "$pair" = bare ] && continue
		profile "$pair" gateway
		profile "$pair" centrifuge
	done
fi

echo
echo "== medians over runs (min–max) — $OUT/results.jsonl"
echo "   µs/push: CPU of the server (core 0) and of Redis per accepted push during the send phase"
jq -s -r '
  def med: sort | if length == 0 then null elif length % 2 == 1 then .[length/2|floor] else (.[length/2-1] + .[length/2]) / 2 end;
  def r1: .*10|round/10;
  def fig($xs): ($xs | map(select(. != null))) as $v | if ($v|length) == 0 then "-" else
    "\($v|med|r1) (\($v|min|r1)–\($v|max|r1))" end;
  group_by(.name)[] |
  "\(.[0].name) [\(length) runs]: connect/s \(fig(map(.connects_per_s)))" +
  (if .[0].scenario == "idle" then
     ", RSS B/conn \(fig(map(.server_rss_per_conn_bytes))), Redis B/user \(fig(map(.redis_bytes_per_user)))"
   else
     ", pushes/s \(fig(map(.pushes_per_s))), deliveries/s \(fig(map(.deliveries_per_s)))" +
     ", p50 ms \(fig(map(.latency_ms.p50))), p99 ms \(fig(map(.latency_ms.p99)))" +
     ", lost \(fig(map(.lost))), dup \(fig(map(.duplicated)))" +
     ", server CPU % \(fig(map(.server_cpu_pct[0]))), Redis CPU % \(fig(map(.redis_cpu_pct)))" +
     ", µs/push server \(fig(map(select(.pushes_per_s > 0) | (.server_cpu_pct[0] // 0) * 1e4 / .pushes_per_s)))" +
     " Redis \(fig(map(select(.pushes_per_s > 0) | (.redis_cpu_pct // 0) * 1e4 / .pushes_per_s)))" +
     ", other CPU % \(fig(map(.other_cpu_pct)))"
   end) +
   (if .[0].error then ", ERROR in \(map(select(.error)) | length) run(s)" else "" end)' "$OUT/results.jsonl"

echo
echo "== ratios (wsgateway ÷ the other side; medians of $RUNS alternating run(s), $CONNS connections, $(date -u +%Y-%m-%d))"
echo
jq -s -r --arg runs "$RUNS" '
  def med: map(select(. != null)) | sort | if length == 0 then null elif length % 2 == 1 then .[length/2|floor] else (.[length/2-1] + .[length/2]) / 2 end;
  def of($pair; $test; $side): map(select(.pair == $pair and .test == $test and .side == $side and (.error == null)));
  def allof($pair; $side): map(select(.pair == $pair and .side == $side and .connects_per_s != null and .connected == .conns));
  def n($x): if $x == null then "–" elif ($x|fabs) >= 100 then ($x|round|tostring) else ($x*100|round/100|tostring) end;
  def ratio($a; $b): if $a == null or $b == null or $b == 0 then null else $a / $b end;
  def verdict($r; $ok): if $r == null then "no data" elif $ok then "**met**" else "missed" end;
  # rem: how much the ratio must still improve, from the ratio (shown when missed).
  def row($target; $pair; $a; $b; $want; ok; rem; $note):
    ratio($a; $b) as $r | ($r != null and ($r|ok)) as $met |
    "| \($target) | \($pair) | \(n($a)) | \(n($b)) | \(if $r == null then "–" else "\(n($r))×" end) | \($want) | \(verdict($r; $met))\($note) | \(if $r == null or $met then "" else "\(n($r|rem))×" end) |";
  . as $all |
  "| target | pairing | wsgateway | other side | ratio | wanted | | remaining factor |",
  "|---|---|---|---|---|---|---|---|",
  (["raw", "v1"][] as $p | ($all | of($p; "throughput"; "gateway")) as $g | ($all | of($p; "throughput"; "centrifuge")) as $c |
    ($g | map(.lost) | add // 0) as $lost |
    row("1. single-user HTTP pushes/s"; "\($p) vs centrifuge\(if $p == "v1" then " -history 100" else "" end)";
      ($g | map(.pushes_per_s) | med); ($c | map(.pushes_per_s) | med); "≥ 2.0×, none lost"; . >= 2 and $lost == 0; [2 / ., 1] | max;
      if $lost > 0 then " (\($lost) lost)" else "" end)),
  (["2k", "10k"][] as $rate | ["raw", "v1"][] as $p |
    ($all | of($p; "latency-\($rate)"; "gateway")) as $g | ($all | of($p; "latency-\($rate)"; "centrifuge")) as $c |
    ($g | map(.lost) | add // 0) as $lost |
    ($g | map(.pushes_per_s / .target_rate) | med) as $kept |
    row("2. p99 push → client at \($rate)/s, ms"; $p; ($g | map(.latency_ms.p99) | med); ($c | map(.latency_ms.p99) | med);
      "≤ 0.5×, keeps up"; . <= 0.5 and $lost == 0 and ($kept // 0) >= 0.98; [. / 0.5, 1] | max;
      if $lost > 0 or ($kept // 0) < 0.98 then " (reached \(n(($kept // 0) * 100))% of the rate, \($lost) lost)" else "" end)),
  (["raw", "v1"][] as $p |
    row("3. connects/s (all runs of the pairing)"; $p; ($all | allof($p; "gateway") | map(.connects_per_s) | med);
      ($all | allof($p; "centrifuge") | map(.connects_per_s) | med); "≥ 1.5×"; . >= 1.5; 1.5 / .; "")),
  (["raw", "v1"][] as $p |
    row("4. server RSS per idle connection, B"; $p; ($all | of($p; "idle"; "gateway") | map(.server_rss_per_conn_bytes) | med);
      ($all | of($p; "idle"; "centrifuge") | map(.server_rss_per_conn_bytes) | med); "≤ 0.25×"; . <= 0.25; . / 0.25; "")),
  (["raw", "v1"][] as $p | ($all | of($p; "idle"; "gateway") | map(.redis_bytes_per_user) | med) as $g |
    "| 4. Redis memory per idle user, B | \($p) | \(n($g)) | \(n($all | of($p; "idle"; "centrifuge") | map(.redis_bytes_per_user) | med)) | – | ≤ 300 B | \(if $g == null then "no data" elif $g <= 300 then "**met**" else "missed" end) | \(if $g != null and $g > 300 then "\(n($g / 300))×" else "" end) |"),
  (["broadcast", "batch"][] as $t |
    row("5. \($t) deliveries/s"; "raw vs bare"; ($all | of("bare"; $t; "gateway") | map(.deliveries_per_s) | med);
      ($all | of("bare"; $t; "bare") | map(.deliveries_per_s) | med); "≥ 0.85×"; . >= 0.85; 0.85 / .; ""))
' "$OUT/results.jsonl"
echo
echo "(runs that ended in an error are left out of the ratios; see the medians above and the logs in $OUT)"
