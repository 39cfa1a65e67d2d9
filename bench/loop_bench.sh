#!/usr/bin/env bash
# Same-generator loop benchmark for vhost-user switches on a two-core machine.
#
# ONE dpdk-testpmd (the generator) owns two virtio-user ports with fixed MACs 02:00:00:00:00:01
# and 02:00:00:00:00:02, forwards in mac mode with each port's eth-peer set to the other port's
# MAC, and injects 64-byte frames with `start tx_first N`. The frames then circulate:
# generator port 0 -> backend -> generator port 1 -> backend -> port 0 ... The backend under test
# (a switch with two vhost-user server ports) runs its one busy poller on the other core; a
# learning switch forwards without flooding because every frame is unicast to a learnt MAC.
# Two busy pollers is what this machine holds. Every backend is measured the same way, so the
# ratios printed with `all` compare like with like.
#
# Throughput = frames received by the generator on both ports during the window / window length,
# i.e. the aggregate rate through the backend. For ovs and vswitch the backend's own cycles per
# packet over the same window is reported too.
#
# Usage: bench/loop_bench.sh [options] BACKEND...
#   BACKEND   testpmd | ovs | vswitch | all (= testpmd ovs vswitch, ratios printed)
#   -d SEC    measuring window (default 10)
#   -u SEC    warm-up before the window (default 3)
#   -r N      runs per backend, each with a fresh backend (default 1)
#   -b N      bursts injected per port by tx_first (default 64)
#   -w DIR    work dir for sockets, logs and results (default /tmp/nfv-loopbench)
#   -j FILE   JSON results file (default DIR/results.json)
#   -P        packed virtqueues: the generator's virtio-user ports ask for VIRTIO_F_RING_PACKED
#             (packed_vq=1), so every backend serves packed rings; the vswitch's are checked
#   -N        do not raise the priority of the busy pollers. By default the generator and the
#             backend run at nice -20: on a shared two-core machine any other runnable task
#             (a build, a test) preempts a poller and the loop rate collapses (seen: 2-18 Mpps
#             in one window at nice 0, a steady 18.5 at nice -20). The price: other work on the
#             machine nearly stops for the duration of the benchmark.
# Environment: VSWITCH, VSWITCHCTL (default target/release/{vswitch,vswitchctl} of this
# workspace), HUGE_PAGES (2 MB pages to have free, default 512).
# Needs root (hugepages, OVS), dpdk-testpmd, python3; ovs needs openvswitch-switch-dpdk.
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DUR=10
WARM=3
RUNS=1
BURSTS=64
W=/tmp/nfv-loopbench
JSON=""
PRIO=(nice -n -20)
VQ_OPTS=""      # extra net_virtio_user options of the generator (-P: packed_vq=1)
RING=split
VSWITCH=${VSWITCH:-$ROOT/target/release/vswitch}
VSWITCHCTL=${VSWITCHCTL:-$ROOT/target/release/vswitchctl}
HUGE_PAGES=${HUGE_PAGES:-512}
HUGE_DIR=/dev/hugepages-nfv           # same mount as the tests' hugepages.rs
HUGE_LOCK=/tmp/nfv-hugepages.lock     # same lock as the tests' hugepages.rs
HEAVY_LOCK=${TMPDIR:-/tmp}/nfv-dataplane-heavy-tests.lock  # tests' serial::heavy()
OVS_VSWITCHD=/usr/lib/openvswitch-switch-dpdk/ovs-vswitchd-dpdk
OVS_SCHEMA=/usr/share/openvswitch/vswitch.ovsschema
MAC0=02:00:00:00:00:01
MAC1=02:00:00:00:00:02
GEN_CORE=0   # generator's forwarding lcore
BE_CORE=1    # backend's busy poller
TAG="nfvlb-$$"  # prefix of every DPDK file prefix of this invocation

usage() { sed -n '2,/^set -uo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; }
log() { printf '[loop_bench] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
is_uint() { [[ $1 =~ ^[0-9]+$ ]]; }
# Sleep that a trapped signal interrupts at once.
NAP_PID=""
nap() { sleep "$1" & NAP_PID=$!; wait "$NAP_PID" 2>/dev/null; NAP_PID=""; }
now() { date +%s.%N; }

while getopts "d:u:r:b:w:j:NPh" opt; do
  case $opt in
    d) DUR=$OPTARG ;;
    u) WARM=$OPTARG ;;
    r) RUNS=$OPTARG ;;
    b) BURSTS=$OPTARG ;;
    w) W=$OPTARG ;;
    j) JSON=$OPTARG ;;
    N) PRIO=() ;;
    P) VQ_OPTS=",packed_vq=1"; RING=packed ;;
    h) usage; exit 0 ;;
    *) usage >&2; exit 2 ;;
  esac
done
shift $((OPTIND - 1))
[ $# -ge 1 ] || { usage >&2; exit 2; }
for v in DUR WARM RUNS BURSTS HUGE_PAGES; do
  is_uint "${!v}" && [ "${!v}" -gt 0 ] || die "$v must be a positive integer, got '${!v}'"
done
BACKENDS=()
for b in "$@"; do
  case $b in
    all) BACKENDS+=(testpmd ovs vswitch) ;;
    testpmd|ovs|vswitch) BACKENDS+=("$b") ;;
    *) die "unknown backend '$b' (testpmd, ovs, vswitch or all)" ;;
  esac
done
case $W in /*) ;; *) W=$PWD/$W ;; esac
JSON=${JSON:-$W/results.json}
# sun_path holds 108 bytes; the longest socket is $W/ovs/p0.
[ ${#W} -le 90 ] || die "work dir path too long for Unix sockets: $W"

# ---------------------------------------------------------------- preflight
[ "$(id -u)" = 0 ] || die "run as root: hugepages, hugetlbfs and OVS-DPDK need it"
for c in dpdk-testpmd stdbuf timeout flock python3 mountpoint; do
  command -v "$c" >/dev/null || die "'$c' not found (dpdk-testpmd: apt-get install dpdk-dev)"
done
want() { local b; for b in "${BACKENDS[@]}"; do [ "$b" = "$1" ] && return 0; done; return 1; }
if want ovs; then
  for c in ovsdb-tool ovsdb-server ovs-vsctl ovs-appctl ovs-ofctl; do
    command -v "$c" >/dev/null || die "ovs backend: '$c' not found (apt-get install openvswitch-switch-dpdk)"
  done
  [ -x "$OVS_VSWITCHD" ] || die "ovs backend: $OVS_VSWITCHD not found (apt-get install openvswitch-switch-dpdk)"
  [ -f "$OVS_SCHEMA" ] || die "ovs backend: $OVS_SCHEMA not found"
fi
if want vswitch; then
  [ -x "$VSWITCH" ] || die "vswitch backend: $VSWITCH is not built. Build it with 'cargo build --release -p vswitch' (or point VSWITCH= at the binary)"
  [ -x "$VSWITCHCTL" ] || die "vswitch backend: $VSWITCHCTL is not built. Build it with 'cargo build --release -p vswitch' (or point VSWITCHCTL= at the binary)"
fi

mkdir -p "$W" || die "cannot create $W"
RESULTS=$W/results.tsv
: > "$RESULTS"

# ---------------------------------------------------------------- cleanup (also on Ctrl-C)
GEN_PID=""
GEN_IN_FD=""
BE_PID=""
BE_KIND=""
OVS_DIR=$W/ovs

# stop_pid PID SIGNAL: signal, wait up to 5 s, then SIGKILL (the process group too: our
# children run under timeout(1), which leads its own group).
stop_pid() {
  local pid=$1 sig=$2 i
  [ -n "$pid" ] || return 0
  kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null; return 0; }
  kill "-$sig" "$pid" 2>/dev/null
  for i in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$pid" 2>/dev/null; then
    log "pid $pid ignored SIG$sig for 5 s: SIGKILL"
    kill -KILL -- "-$pid" 2>/dev/null
    kill -KILL "$pid" 2>/dev/null
  fi
  wait "$pid" 2>/dev/null
  return 0
}

# stop_pidfile FILE: TERM, bounded wait, KILL, for daemons that detached.
stop_pidfile() {
  local f=$1 pid i
  [ -f "$f" ] || return 0
  pid=$(cat "$f" 2>/dev/null)
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null
    for i in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && { log "pid $pid (from $f) ignored SIGTERM: SIGKILL"; kill -KILL "$pid" 2>/dev/null; }
  fi
  rm -f "$f"
}

stop_generator() {
  if [ -n "$GEN_PID" ] && kill -0 "$GEN_PID" 2>/dev/null && [ -n "$GEN_IN_FD" ]; then
    echo quit >&"$GEN_IN_FD" 2>/dev/null
    local i
    for i in $(seq 50); do kill -0 "$GEN_PID" 2>/dev/null || break; sleep 0.1; done
  fi
  stop_pid "$GEN_PID" INT
  GEN_PID=""
  if [ -n "$GEN_IN_FD" ]; then exec {GEN_IN_FD}>&-; GEN_IN_FD=""; fi
  rm -f "$W/gen.in"
}

stop_ovs() {
  [ -d "$OVS_DIR" ] || return 0
  if [ -f "$OVS_DIR/ovs-vswitchd.pid" ] && [ -S "$OVS_DIR/ovs-vswitchd.ctl" ]; then
    timeout 10 ovs-appctl -t "$OVS_DIR/ovs-vswitchd.ctl" exit >/dev/null 2>&1
  fi
  stop_pidfile "$OVS_DIR/ovs-vswitchd.pid"
  stop_pidfile "$OVS_DIR/ovsdb-server.pid"
}

stop_backend() {
  case $BE_KIND in
    testpmd) stop_pid "$BE_PID" INT ;;
    vswitch) stop_pid "$BE_PID" TERM ;;
    ovs) stop_ovs ;;
  esac
  BE_PID=""
  BE_KIND=""
}

remove_leftovers() {
  rm -f "$W/p0" "$W/p1" "$W/ctl" "$OVS_DIR/p0" "$OVS_DIR/p1" "$W/gen.in"
  rm -rf /var/run/dpdk/"$TAG"-* 2>/dev/null
  rm -f "$HUGE_DIR"/"$TAG"-*map_* 2>/dev/null
}

cleanup() {
  trap - EXIT INT TERM HUP
  [ -n "$NAP_PID" ] && kill "$NAP_PID" 2>/dev/null
  stop_generator
  stop_backend
  stop_ovs
  remove_leftovers
}
trap cleanup EXIT
trap 'log "interrupted, cleaning up"; exit 130' INT TERM HUP

# ---------------------------------------------------------------- helpers
# wait_until SECONDS WHAT CMD...: poll CMD every 0.1 s; fail after SECONDS.
wait_until() {
  local secs=$1 what=$2 deadline
  shift 2
  deadline=$(( $(date +%s) + secs ))
  until "$@"; do
    [ "$(date +%s)" -lt "$deadline" ] || { log "timed out after ${secs}s waiting for $what"; return 1; }
    sleep 0.1
  done
}

alive() { [ -n "$1" ] && kill -0 "$1" 2>/dev/null; }
sockets_ready() { [ -S "$1" ] && [ -S "$2" ]; }

# backend_up PID S0 S1: sockets exist, or the backend died (then fail at once).
backend_up() {
  local pid=$1
  if [ -n "$pid" ] && ! alive "$pid"; then return 0; fi
  sockets_ready "$2" "$3"
}

ensure_hugepages() {
  local need=$1 sys=/sys/kernel/mm/hugepages/hugepages-2048kB lock total free knob
  [ -d "$sys" ] || die "the kernel offers no 2 MB hugepages"
  exec {lock}>"$HUGE_LOCK" || die "cannot open $HUGE_LOCK"
  flock -w 60 "$lock" || die "could not lock $HUGE_LOCK within 60 s"
  total=$(cat "$sys/nr_hugepages"); free=$(cat "$sys/free_hugepages")
  if [ "$free" -lt "$need" ]; then
    # Only ever raise the pool, by the shortfall: pages in use stay with their owners.
    knob=$sys/nr_hugepages
    grep -q '^Hugepagesize: *2048 kB' /proc/meminfo && knob=/proc/sys/vm/nr_hugepages
    echo $(( total + need - free )) > "$knob" || die "cannot raise $knob"
    free=$(cat "$sys/free_hugepages")
    [ "$free" -ge "$need" ] || die "wanted $need free 2 MB hugepages, the kernel gave $free"
  fi
  mkdir -p "$HUGE_DIR"
  if ! awk -v d="$HUGE_DIR" '$2 == d && $3 == "hugetlbfs" { f = 1 } END { exit !f }' /proc/mounts; then
    mount -t hugetlbfs -o pagesize=2M nodev "$HUGE_DIR" || die "cannot mount hugetlbfs at $HUGE_DIR"
  fi
  flock -u "$lock"
  exec {lock}>&-
}

# ---------------------------------------------------------------- generator
GEN_LOG=""

gen_cmd() { echo "$1" >&"$GEN_IN_FD" || die "generator stdin closed"; }

gen_ready() { grep -q 'testpmd> ' "$GEN_LOG" || ! alive "$GEN_PID"; }

# start_generator S0 S1 LOG
start_generator() {
  local s0=$1 s1=$2
  GEN_LOG=$3
  rm -f "$W/gen.in"
  mkfifo -m 600 "$W/gen.in" || die "mkfifo $W/gen.in"
  exec {GEN_IN_FD}<>"$W/gen.in"
  : > "$GEN_LOG"
  "${PRIO[@]}" timeout --signal=INT --kill-after=5 $(( WARM + 2 * DUR + 120 )) \
    stdbuf -oL -eL dpdk-testpmd -l $GEN_CORE,$BE_CORE --main-lcore $BE_CORE --no-pci \
      --file-prefix "$TAG-gen" --huge-dir "$HUGE_DIR" -m 256 --single-file-segments --in-memory \
      --vdev "net_virtio_user0,path=$s0,queues=1,mac=$MAC0$VQ_OPTS" \
      --vdev "net_virtio_user1,path=$s1,queues=1,mac=$MAC1$VQ_OPTS" -- \
      -i --nb-cores=1 --forward-mode=mac --eth-peer=0,$MAC1 --eth-peer=1,$MAC0 \
      --txpkts=64 --total-num-mbufs=32768 \
      < "$W/gen.in" > "$GEN_LOG" 2>&1 &
  GEN_PID=$!
  wait_until 30 "the generator's prompt" gen_ready || return 1
  alive "$GEN_PID" || { log "generator exited:"; tail -20 "$GEN_LOG" >&2; return 1; }
  # Both virtio-user ports must have come up (a failed vdev leaves testpmd running portless).
  local ports
  ports=$(grep -cE '^Port [01]: ([0-9A-F]{2}:){5}[0-9A-F]{2}' "$GEN_LOG")
  [ "$ports" -ge 2 ] || { log "generator has $ports of 2 ports:"; tail -20 "$GEN_LOG" >&2; return 1; }
}

# port_stats_done OFFSET: two complete port blocks printed after OFFSET.
port_stats_done() {
  [ "$(tail -c +$(( $1 + 1 )) "$GEN_LOG" | grep -cE '^ *#{40,} *$')" -ge 2 ] || ! alive "$GEN_PID"
}

# show_rx: prints "rx0 rx1 pps0 pps1": the RX-packets counters of ports 0 and 1 and their
# Rx-pps, which testpmd computes from its own clock since the previous show, so the rates do
# not depend on how promptly this script runs (at nice 0 beside two nice -20 pollers it is slow).
show_rx() {
  local off
  off=$(stat -c %s "$GEN_LOG")
  gen_cmd "show port stats all"
  wait_until 20 "port statistics" port_stats_done "$off" || return 1
  tail -c +$(( off + 1 )) "$GEN_LOG" | awk '
    /NIC statistics for port/ { port = $6 }
    /RX-packets:/ { rx[port] = $2 }
    /Rx-pps:/ { pps[port] = $2 }
    END {
      if (!("0" in rx) || !("1" in rx) || !("0" in pps) || !("1" in pps)) exit 1
      print rx["0"], rx["1"], pps["0"], pps["1"]
    }'
}


# inject_until_flowing: `start tx_first`, then make sure both loops carry frames. A backend
# that enables its queues a moment after the frontend connected (OVS does) drops the first
# bursts, and a loop that lost all its frames stays empty; re-injecting fixes that. Loops
# saturate (they hold more frames than their rings), so extra bursts only get dropped.
inject_until_flowing() {
  local attempt s1 s2 x0 x1 y0 y1
  gen_cmd "start tx_first $BURSTS"
  for attempt in 1 2 3 4 5; do
    nap 0.5
    s1=$(show_rx) || return 1
    nap 0.5
    s2=$(show_rx) || return 1
    read -r x0 x1 _ <<< "$s1"
    read -r y0 y1 _ <<< "$s2"
    if [ "$y0" -gt "$x0" ] && [ "$y1" -gt "$x1" ]; then
      [ "$attempt" -gt 1 ] && log "both loops flowing after $attempt injections"
      return 0
    fi
    log "loop into port $([ "$y0" -gt "$x0" ] && echo 1 || echo 0) carries nothing (rx $x0->$y0, $x1->$y1): injecting again"
    gen_cmd "stop"
    gen_cmd "start tx_first $BURSTS"
  done
  log "the backend does not forward both ways: generator rx/pps $s2 (see $GEN_LOG, $BE_LOG)"
  return 1
}

# ---------------------------------------------------------------- backends
S0=""
S1=""
BE_LOG=""

start_testpmd_backend() {
  S0=$W/p0; S1=$W/p1; rm -f "$S0" "$S1"
  "${PRIO[@]}" timeout --signal=INT --kill-after=5 $(( WARM + 2 * DUR + 180 )) \
    dpdk-testpmd -l $GEN_CORE,$BE_CORE --main-lcore $GEN_CORE --no-pci \
      --file-prefix "$TAG-be" --huge-dir "$HUGE_DIR" -m 256 --huge-unlink \
      --vdev "net_vhost0,iface=$S0,queues=1" --vdev "net_vhost1,iface=$S1,queues=1" -- \
      --nb-cores=1 --forward-mode=io --total-num-mbufs=32768 --stats-period 3600 \
      < /dev/null > "$BE_LOG" 2>&1 &
  BE_PID=$!
  BE_KIND=testpmd
}

ovs_vsctl() { ovs-vsctl --db="unix:$OVS_DIR/db.sock" --timeout=60 "$@"; }
ovs_appctl() { ovs-appctl --timeout=10 -t "$OVS_DIR/ovs-vswitchd.ctl" "$@"; }

start_ovs_backend() {
  BE_KIND=ovs
  rm -rf "$OVS_DIR"; mkdir -p "$OVS_DIR"
  export OVS_RUNDIR=$OVS_DIR OVS_LOGDIR=$OVS_DIR OVS_DBDIR=$OVS_DIR OVS_SYSCONFDIR=$OVS_DIR
  S0=$OVS_DIR/p0; S1=$OVS_DIR/p1   # dpdkvhostuser sockets live in OVS_RUNDIR
  ovsdb-tool create "$OVS_DIR/conf.db" "$OVS_SCHEMA" >> "$BE_LOG" 2>&1 || return 1
  ovsdb-server "$OVS_DIR/conf.db" --remote="punix:$OVS_DIR/db.sock" \
    --pidfile="$OVS_DIR/ovsdb-server.pid" --unixctl="$OVS_DIR/ovsdb-server.ctl" \
    --log-file="$OVS_DIR/ovsdb-server.log" --detach >> "$BE_LOG" 2>&1 || return 1
  ovs_vsctl --no-wait init || return 1
  ovs_vsctl --no-wait set Open_vSwitch . other_config:dpdk-init=true \
    other_config:dpdk-lcore-mask=$(printf '0x%x' $(( 1 << GEN_CORE ))) \
    other_config:pmd-cpu-mask=$(printf '0x%x' $(( 1 << BE_CORE ))) \
    other_config:dpdk-socket-mem=512 other_config:dpdk-hugepage-dir="$HUGE_DIR" \
    other_config:dpdk-extra="--no-pci --file-prefix=$TAG-ovs" || return 1
  "${PRIO[@]}" timeout 60 "$OVS_VSWITCHD" "unix:$OVS_DIR/db.sock" --pidfile="$OVS_DIR/ovs-vswitchd.pid" \
    --unixctl="$OVS_DIR/ovs-vswitchd.ctl" --log-file="$OVS_DIR/ovs-vswitchd.log" --detach \
    >> "$BE_LOG" 2>&1 || { log "ovs-vswitchd did not start:"; tail -20 "$OVS_DIR/ovs-vswitchd.log" >&2; return 1; }
  ovs_vsctl add-br br0 -- set bridge br0 datapath_type=netdev || return 1
  ovs_vsctl add-port br0 p0 -- set Interface p0 type=dpdkvhostuser ofport_request=1 || return 1
  ovs_vsctl add-port br0 p1 -- set Interface p1 type=dpdkvhostuser ofport_request=2 || return 1
  # Port to port, no learning: the classic OVS-DPDK PVP configuration.
  timeout 10 ovs-ofctl del-flows br0 || return 1
  timeout 10 ovs-ofctl add-flow br0 in_port=1,actions=output:2 || return 1
  timeout 10 ovs-ofctl add-flow br0 in_port=2,actions=output:1 || return 1
  BE_PID=$(cat "$OVS_DIR/ovs-vswitchd.pid")
}

start_vswitch_backend() {
  S0=$W/p0; S1=$W/p1; rm -f "$S0" "$S1" "$W/ctl"
  "${PRIO[@]}" timeout --signal=TERM --kill-after=5 $(( WARM + 2 * DUR + 180 )) \
    "$VSWITCH" --vhost-server "p0=$S0" --vhost-server "p1=$S1" --pmd-cores $BE_CORE --ctl "$W/ctl" \
    < /dev/null > "$BE_LOG" 2>&1 &
  BE_PID=$!
  BE_KIND=vswitch
}

# Backend-side counters around the window.
ovs_pmd_section() {
  # The "pmd thread ... core_id N:" block of pmd-stats-show.
  awk -v core="$BE_CORE" '
    /^pmd thread/ { on = ($0 ~ ("core_id " core ":")) ; next }
    /^[^ \t]/ { on = 0 }
    on { print }' "$1"
}

vswitch_snapshot() { timeout 10 "$VSWITCHCTL" --ctl "$W/ctl" pmd-stats --json > "$1" 2>>"$BE_LOG"; }

# vswitch_cpp BEFORE AFTER: (busy_after - busy_before) / (packets_after - packets_before) over
# all PMDs; falls back to the switch's own cycles_per_packet when the diff is not possible.
vswitch_cpp() {
  python3 - "$1" "$2" <<'PY'
import json, sys
def load(p):
    try:
        with open(p) as f:
            return json.load(f).get("pmds", [])
    except Exception:
        return None
b, a = load(sys.argv[1]), load(sys.argv[2])
def tot(pmds, k):
    return sum(int(p.get(k, 0) or 0) for p in pmds)
if a is not None and b is not None:
    dp = tot(a, "packets") - tot(b, "packets")
    db = tot(a, "busy_cycles") - tot(b, "busy_cycles")
    if dp > 0 and db >= 0:
        print(f"{db / dp:.1f}")
        sys.exit(0)
if a:
    v = [float(p["cycles_per_packet"]) for p in a if p.get("cycles_per_packet") is not None]
    if v:
        print(f"{sum(v) / len(v):.1f}")
        sys.exit(0)
print("NA")
PY
}

# ---------------------------------------------------------------- one measurement
# run_one BACKEND RUN: appends "backend run mpps rx seconds cpp loadavg p50 min" to $RESULTS.
run_one() {
  local b=$1 r=$2 rx0 rx1 secs mpps p50 pmin load cpp=NA
  BE_LOG=$W/$b-$r.backend.log
  : > "$BE_LOG"
  log "$b run $r: starting backend"
  case $b in
    testpmd) start_testpmd_backend ;;
    ovs) start_ovs_backend || { log "OVS setup failed:"; tail -20 "$BE_LOG" "$OVS_DIR/ovs-vswitchd.log" >&2; return 1; } ;;
    vswitch) start_vswitch_backend ;;
  esac
  if ! wait_until 60 "$b's vhost-user sockets" backend_up "$BE_PID" "$S0" "$S1" || ! alive "$BE_PID"; then
    log "$b did not come up; its output:"
    tail -20 "$BE_LOG" >&2
    [ "$b" = ovs ] && tail -20 "$OVS_DIR/ovs-vswitchd.log" >&2
    return 1
  fi

  start_generator "$S0" "$S1" "$W/$b-$r.generator.log" || return 1
  inject_until_flowing || return 1
  if [ "$b" = vswitch ]; then
    # The layout asked for is the one served: every queue of the switch says so.
    local rings
    rings=$(timeout 10 "$VSWITCHCTL" --ctl "$W/ctl" show 2>>"$BE_LOG" |
      awk '$1 ~ /^[0-9]+$/ && NF >= 7 { print $6 }' | sort -u | tr '\n' ' ')
    [ "$rings" = "$RING " ] || { log "vswitch queues run '$rings' rings, expected $RING"; return 1; }
  fi
  nap "$WARM"
  alive "$BE_PID" || { log "$b died during warm-up:"; tail -20 "$BE_LOG" >&2; return 1; }

  case $b in
    ovs) ovs_appctl dpif-netdev/pmd-stats-clear > /dev/null || log "pmd-stats-clear failed" ;;
    vswitch) vswitch_snapshot "$W/$b-$r.pmd-before.json" || log "vswitchctl pmd-stats failed" ;;
  esac
  # Counters are diffed, not cleared: `clear port stats all` while virtio-user ports forward
  # does not reliably zero them (seen: one port kept counting from the start). One sample a
  # second shows how steady the window was.
  local samples=$W/$b-$r.samples s
  s=$(show_rx) || { log "no port statistics from the generator:"; tail -20 "$GEN_LOG" >&2; return 1; }
  echo "$(now) $s" > "$samples"
  # Sample until DUR seconds of wall time have passed (this script may run late; the rates
  # are testpmd's own, see show_rx).
  local end_ns=$(( $(date +%s%N) + DUR * 1000000000 ))
  while [ "$(date +%s%N)" -lt "$end_ns" ]; do
    nap 1
    s=$(show_rx) || { log "no port statistics from the generator:"; tail -20 "$GEN_LOG" >&2; return 1; }
    echo "$(now) $s" >> "$samples"
  done
  case $b in
    ovs)
      ovs_appctl dpif-netdev/pmd-stats-show > "$W/$b-$r.pmd-stats.txt" 2>&1
      cpp=$(ovs_pmd_section "$W/$b-$r.pmd-stats.txt" |
        awk '/avg processing cycles per packet:/ { print $6; exit }')
      ;;
    vswitch)
      vswitch_snapshot "$W/$b-$r.pmd-after.json" || log "vswitchctl pmd-stats failed"
      cpp=$(vswitch_cpp "$W/$b-$r.pmd-before.json" "$W/$b-$r.pmd-after.json")
      ;;
  esac
  [ -n "$cpp" ] || cpp=NA
  # Our two pollers make 2; more means something else competed for the cores (noise).
  load=$(cut -d' ' -f1 /proc/loadavg)
  gen_cmd "stop"
  # Each interval's length is testpmd's own (port 0's packets / its Rx-pps; port 1's if port 0
  # was idle); the window rate is all packets over the sum of the intervals.
  read -r rx0 rx1 secs mpps p50 pmin < <(awk '
    NR > 1 {
      d0 = $2 - p0; d1 = $3 - p1
      dt = ($4 > 0) ? d0 / $4 : (($5 > 0) ? d1 / $5 : $1 - pt)
      r[n++] = ($4 + $5) / 1e6
      s0 += d0; s1 += d1; T += dt
    }
    { pt = $1; p0 = $2; p1 = $3 }
    END {
      for (i = 0; i < n; i++) for (j = i + 1; j < n; j++) if (r[j] < r[i]) { x = r[i]; r[i] = r[j]; r[j] = x }
      med = (n % 2) ? r[int(n / 2)] : (r[n / 2 - 1] + r[n / 2]) / 2
      printf "%.0f %.0f %.3f %.3f %.3f %.3f\n", s0, s1, T, (T > 0) ? (s0 + s1) / T / 1e6 : 0, med, r[0]
    }' "$samples")
  log "$b run $r: $mpps Mpps (port0 rx $rx0, port1 rx $rx1 in ${secs}s; 1 s samples median $p50, min $pmin), cycles/packet $cpp, loadavg $load"
  echo "$b $r $mpps $((rx0 + rx1)) $secs $cpp $load $p50 $pmin" >> "$RESULTS"
  stop_generator
  stop_backend
  remove_leftovers
  sleep 1
}

# ---------------------------------------------------------------- main
exec {heavy}>"$HEAVY_LOCK" || die "cannot open $HEAVY_LOCK"
if ! flock -n "$heavy"; then
  log "waiting (up to 15 min) for running heavy tests to finish ($HEAVY_LOCK)"
  flock -w 900 "$heavy" || die "heavy tests still running after 15 min"
fi
ensure_hugepages "$HUGE_PAGES"
# Logs of an earlier invocation would read as this one's.
rm -f "$W"/{testpmd,ovs,vswitch}-*.{log,samples,json,txt}
log "backends: ${BACKENDS[*]}; window ${DUR}s after ${WARM}s warm-up; $RUNS run(s) each; pollers at ${PRIO[*]:-normal priority}; work dir $W"

FAILED=0
# Round-robin (testpmd ovs vswitch testpmd ovs vswitch ...): a slow phase of the machine lowers
# one run of every backend, not every run of one, and run r of each backend can be paired.
for r in $(seq "$RUNS"); do
  for b in "${BACKENDS[@]}"; do
    if ! run_one "$b" "$r"; then
      log "$b run $r FAILED (logs in $W)"
      FAILED=1
      stop_generator; stop_backend; remove_leftovers
    fi
  done
done

python3 - "$RESULTS" "$JSON" "$DUR" "$WARM" "$BURSTS" "$RING" <<'PY'
import json, statistics, sys
res, out, dur, warm, bursts, ring = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5]), sys.argv[6]
runs = []
for line in open(res):
    b, r, mpps, rx, secs, cpp, load, p50, pmin = line.split()
    runs.append({"backend": b, "run": int(r), "mpps": float(mpps), "rx_packets": int(rx),
                 "seconds": float(secs), "cycles_per_packet": None if cpp == "NA" else float(cpp),
                 "mpps_1s_median": float(p50), "mpps_1s_min": float(pmin), "loadavg_1m": float(load)})
order = []
for x in runs:
    if x["backend"] not in order:
        order.append(x["backend"])
summary = {}
for b in order:
    m = [x["mpps"] for x in runs if x["backend"] == b]
    c = [x["cycles_per_packet"] for x in runs if x["backend"] == b and x["cycles_per_packet"] is not None]
    summary[b] = {"runs": len(m), "mpps_median": statistics.median(m), "mpps_min": min(m), "mpps_max": max(m),
                  "cycles_per_packet_median": statistics.median(c) if c else None}
ratios = {}
if "vswitch" in summary:
    for other in ("testpmd", "ovs"):
        if other in summary and summary[other]["mpps_median"] > 0:
            ratios[f"vswitch/{other}"] = round(summary["vswitch"]["mpps_median"] / summary[other]["mpps_median"], 3)
doc = {"benchmark": "loop", "frame_bytes": 64, "ring": ring, "duration_s": dur, "warmup_s": warm, "tx_first_bursts": bursts,
       "runs": runs, "summary": summary, "ratios": ratios}
print()
if not runs:
    print("no successful measurement")
print(f"{'backend':<9} {'run':>3} {'Mpps':>8} {'1s-med':>7} {'1s-min':>7} {'cycles/pkt':>11} {'loadavg':>8}")
for x in runs:
    c = "-" if x["cycles_per_packet"] is None else f"{x['cycles_per_packet']:.1f}"
    print(f"{x['backend']:<9} {x['run']:>3} {x['mpps']:>8.2f} {x['mpps_1s_median']:>7.2f} {x['mpps_1s_min']:>7.2f} {c:>11} {x['loadavg_1m']:>8.2f}")
if any(s["runs"] > 1 for s in summary.values()):
    for b, s in summary.items():
        c = "-" if s["cycles_per_packet_median"] is None else f"{s['cycles_per_packet_median']:.1f}"
        print(f"{b:<9} {'med':>3} {s['mpps_median']:>8.2f} {'':>7} {'':>7} {c:>11}   (runs: min {s['mpps_min']:.2f}, max {s['mpps_max']:.2f})")
for k, v in ratios.items():
    print(f"ratio {k}: {v:.3f}")
with open(out, "w") as f:
    json.dump(doc, f, indent=2)
print(f"results: {out}")
print("LOOP_BENCH_JSON " + json.dumps(doc, separators=(",", ":")))
PY
exit $FAILED
