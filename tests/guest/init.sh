#!/bin/busybox sh
# /init of the nfv-tests guest (busybox initramfs; embedded by tests/src/guest_image.rs).
#
# Driven by kernel command-line parameters (read from /proc/cmdline):
#   nfv.mode=ping|respond|pingloop   what to do once eth0 is up (default respond)
#   nfv.ip=10.0.0.1/24               address of eth0
#   nfv.mtu=9000                     MTU of eth0 (kernel default 1500 when absent)
#   nfv.ping=10.0.0.2                peer to ping (ping, pingloop)
#   nfv.count=5                      pings in ping mode
#   nfv.size=8000                    ping mode: then nfv.jcount (3) pings with -s SIZE (jumbo)
#   nfv.wait=60                      seconds to wait for the peer's first reply
#   nfv.interval=0.2                 seconds between pings in ping mode
#
# Everything the harness reads is a line starting with "NFV: " on the serial console:
#   BOOT, READY mac= mtu= ip=, NO_ETH0, INSMOD_FAIL m, MTU_FAIL n, BAD_MODE m
#   ping:     PEER_UP | PEER_TIMEOUT, PING_OK|PING_FAIL sent= recv=,
#             JUMBO_OK|JUMBO_FAIL sent= recv= (only with nfv.size), COUNTERS ..., DONE, then poweroff
#   respond:  RESPONDING, then COUNTERS every 2 s when they changed, until killed
#   pingloop: REPLY seq=N time=T [lost=K] per reply (K = requests lost just before it),
#             TIMEOUT after each second without a reply; runs until killed

/bin/busybox --install -s /bin
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev

say() { echo "NFV: $*"; }
up() { cut -d' ' -f1 /proc/uptime; }

counters() {
    l=$(grep 'eth0:' /proc/net/dev)
    [ -n "$l" ] || return 0
    # Fields after "eth0:": rx bytes packets errs drop fifo frame compressed multicast,
    # then tx bytes packets errs drop ...
    set -- ${l#*:}
    say "COUNTERS eth0 rx_packets=$2 rx_bytes=$1 rx_dropped=$4 tx_packets=${10} tx_bytes=$9 tx_dropped=${12}"
}

finish() {
    counters
    say "DONE uptime=$(up)"
    poweroff -f
    sleep 10
}

MODE=respond IP= MTU= PEER= COUNT=5 SIZE= JCOUNT=3 WAIT=60 INTERVAL=0.2
for a in $(cat /proc/cmdline); do
    case "$a" in
        nfv.mode=*) MODE=${a#*=} ;;
        nfv.ip=*) IP=${a#*=} ;;
        nfv.mtu=*) MTU=${a#*=} ;;
        nfv.ping=*) PEER=${a#*=} ;;
        nfv.count=*) COUNT=${a#*=} ;;
        nfv.size=*) SIZE=${a#*=} ;;
        nfv.jcount=*) JCOUNT=${a#*=} ;;
        nfv.wait=*) WAIT=${a#*=} ;;
        nfv.interval=*) INTERVAL=${a#*=} ;;
    esac
done
say "BOOT uptime=$(up) mode=$MODE"

for m in virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci failover net_failover virtio_net; do
    insmod /lib/modules/$m.ko || say "INSMOD_FAIL $m"
done
i=0
while [ ! -e /sys/class/net/eth0 ] && [ $i -lt 100 ]; do
    sleep 0.1
    i=$((i + 1))
done
if [ ! -e /sys/class/net/eth0 ]; then
    say "NO_ETH0"
    ls /sys/bus/pci/devices
    finish
fi

ip link set lo up
if [ -n "$MTU" ]; then
    ip link set eth0 mtu "$MTU" || say "MTU_FAIL $MTU"
fi
[ -n "$IP" ] && ip addr add "$IP" dev eth0
ip link set eth0 up
say "READY mac=$(cat /sys/class/net/eth0/address) mtu=$(cat /sys/class/net/eth0/mtu) ip=$IP uptime=$(up)"

# Pings the peer once a try until it answers or nfv.wait seconds pass: the peer boots at the same
# time as we do and its switch port may come up later still.
wait_peer() {
    deadline=$(($(date +%s) + WAIT))
    n=0
    while :; do
        n=$((n + 1))
        if ping -c 1 -W 1 "$PEER" >/dev/null 2>&1; then
            say "PEER_UP tries=$n uptime=$(up)"
            return 0
        fi
        if [ "$(date +%s)" -ge "$deadline" ]; then
            say "PEER_TIMEOUT tries=$n wait=${WAIT}s"
            return 1
        fi
        sleep 0.2
    done
}

# ping_check LABEL COUNT [SIZE]: LABEL_OK when every request got its reply.
ping_check() {
    label=$1
    cnt=$2
    if [ -n "$3" ]; then set -- -s "$3"; else set --; fi
    out=$(ping -c "$cnt" -i "$INTERVAL" -W 2 "$@" "$PEER" 2>&1)
    echo "$out"
    tx=$(echo "$out" | sed -n 's/^\([0-9][0-9]*\) packets transmitted.*/\1/p')
    rx=$(echo "$out" | sed -n 's/.*transmitted, \([0-9][0-9]*\) packets received.*/\1/p')
    if [ -n "$rx" ] && [ "$rx" -gt 0 ] && [ "$rx" = "$tx" ]; then
        say "${label}_OK sent=$tx recv=$rx"
    else
        say "${label}_FAIL sent=${tx:-?} recv=${rx:-?}"
    fi
}

ping_loop() {
    while :; do
        ping -i 0.2 "$PEER" 2>&1
        sleep 0.2
    done | {
        last=-1
        while :; do
            if read -t 1 -r line; then
                case "$line" in
                    *bytes\ from*seq=*)
                        s=${line#*seq=}
                        s=${s%% *}
                        t=${line#*time=}
                        lost=
                        if [ "$last" -ge 0 ] && [ "$s" -gt $((last + 1)) ]; then
                            lost=" lost=$((s - last - 1))"
                        fi
                        last=$s
                        say "REPLY seq=$s time=$t$lost"
                        ;;
                    PING*) last=-1 ;;
                esac
            else
                say "TIMEOUT"
            fi
        done
    }
}

case "$MODE" in
    ping)
        if [ -z "$PEER" ]; then
            say "BAD_MODE ping without nfv.ping"
        elif wait_peer; then
            ping_check PING "$COUNT"
            [ -n "$SIZE" ] && ping_check JUMBO "$JCOUNT" "$SIZE"
        else
            say "PING_FAIL sent=0 recv=0 (peer never answered)"
            [ -n "$SIZE" ] && say "JUMBO_FAIL sent=0 recv=0 (peer never answered)"
        fi
        finish
        ;;
    respond)
        say "RESPONDING"
        last=
        while :; do
            sleep 2
            now=$(counters)
            if [ "$now" != "$last" ]; then
                echo "$now"
                last=$now
            fi
        done
        ;;
    pingloop)
        if [ -z "$PEER" ]; then
            say "BAD_MODE pingloop without nfv.ping"
            finish
        fi
        say "PINGLOOP peer=$PEER"
        ping_loop
        ;;
    *)
        say "BAD_MODE $MODE"
        finish
        ;;
esac
