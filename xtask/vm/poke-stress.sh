#!/bin/sh
# Flips the sched_switch tracepoint's static key N times (each flip is a
# text_poke_bp of __schedule and friends) while a background loop keeps
# both vCPUs scheduling and idling. Under TCG with a thread per vCPU,
# Debian's 6.12 oopses on a stale int3 within seconds; see docs/kernels.md.
#   cargo xtask vm --kernel 6.12 --tcg-thread multi -- sh xtask/vm/poke-stress.sh 3000
set -e
mountpoint -q /sys/kernel/tracing || mount -t tracefs nodev /sys/kernel/tracing
E=/sys/kernel/tracing/events/sched/sched_switch/enable
N=${1:-3000}
( while :; do sleep 0.002; done ) &
bg=$!
i=0
while [ "$i" -lt "$N" ]; do
    echo 1 > "$E"
    echo 0 > "$E"
    i=$((i + 1))
done
kill "$bg"
echo "poke-stress: $i flips survived"
