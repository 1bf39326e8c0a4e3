#!/bin/bash
# CPU per answer of one running DNS server at one dnsperf rate: the server's (utime+stime of
# its process, all threads, from /proc), dnsperf's, the box's softirq and busy time, and steal,
# each in microseconds per answered query. Used for the UDP worker A/B in BENCHMARKS.md.
#
# Usage: bench/fixed_rate.sh PID PORT QPS [SECONDS]   (C=clients, default 64; QUERIES=file)
# Example: C=4 bench/fixed_rate.sh "$(pgrep -f 'mailns run')" 5310 100000 6
# Needs dnsperf and time (apt-get install dnsperf time). Sends to 127.0.0.1 only.
set -euo pipefail
PID=$1 PORT=$2 Q=$3 L=${4:-6}
QUERIES=${QUERIES:-$(dirname "$0")/../../shared/peers/queries.txt}
ticks() { awk '{sub(/.*\) /,""); print $12+$13}' "/proc/$1/stat"; }
stat() { awk '/^cpu /{print $2+$3+$4+$7+$8, $8+$7, $9}' /proc/stat; }
t0=$(ticks "$PID"); read -r b0 q0 s0 <<<"$(stat)"
out=$( { /usr/bin/time -f "DPCPU %U %S" dnsperf -s 127.0.0.1 -p "$PORT" -d "$QUERIES" -c "${C:-64}" -q 300 -Q "$Q" -l "$L"; } 2>&1)
t1=$(ticks "$PID"); read -r b1 q1 s1 <<<"$(stat)"
qps=$(echo "$out" | awk '/Queries per second/{print $4}')
rt=$(echo "$out" | awk '/Run time/{print $4}')
dp=$(echo "$out" | awk '/DPCPU/{print $2+$3}')
python3 -c "
n=$qps*$rt; us=lambda t: t/n*1e6
print(f'port $PORT qps {$qps:7.0f} | us/answer server {us(($t1-$t0)/100):5.2f} dnsperf {us($dp):5.2f} softirq {us(($q1-$q0)/100):5.2f} box {us(($b1-$b0)/100):5.2f} steal {us(($s1-$s0)/100):4.2f}')"
