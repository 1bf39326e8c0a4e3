#!/usr/bin/env python3
"""Response rate limiting side by side: mailns, NSD 4.6 (built-in RRL) and Knot 3.2 (mod-rrl), on loopback.

Part 1, spoofed flood. Every server runs with the same limit (--rate, default 20 responses a second,
slip 2, /24 prefixes). A generator sends one query name and type again and again from addresses in
127.0.0.0/8, each standing for a victim whose address an attacker spoofs; it counts what comes back
to those addresses: full answers, slipped (TC=1) replies, and bytes. Scenarios (--len seconds each):
  one source at 10x and at 100x the limit; --prefixes /24s at 10x and at 100x the limit each.
mailns exempts loopback by default, so it runs here with `exempt = []` (a test on a real network
namespace does the same with 198.18.0.0/15 sources: tests/edge.rs).

Part 2, cost. The peers' normal query mix (../shared/peers/queries.txt) with dnsperf, server pinned to
CPU 0 and dnsperf to CPU 1, RRL off versus RRL on with a rate no bucket reaches (--high, 65,535/s: the
hottest bucket, owa A, sees about 25k/s; every query still goes through the bucket bookkeeping. Knot 3.2
does not take a higher rate: at 100,000 it limited the mix to 8.8k QPS). Per round and mode: saturation QPS, then
server CPU per answer at a fixed --fixed QPS (below every server's saturation, so both modes get the same load and the
same receive batching). Alternating off/on, --rounds rounds; the cost is the ratio on/off of the medians, with the
spread of per-round ratios.

Usage: bench/rrl.py [--rounds 6] [--len 10] [--rate 20] [--prefixes 16] [--only mailns,nsd,knot] [--skip-flood|--skip-cost]
Every address is in 127.0.0.0/8; every load is bounded by --len.
"""
import argparse, os, re, select, shutil, signal, socket, statistics, struct, subprocess, sys, tempfile, time

from benchlib import cpu_seconds, knot_conf

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ZONE = "mail.example.test"
PORTS = {"mailns": 5321, "nsd": 5322, "knot": 5323}
FLOOD_NAME = "mail." + ZONE  # three A records: a modest answer, the same for every server


def write(path, text):
    with open(path, "w") as f:
        f.write(text)


class Server:
    """One DNS server with RRL set to `rrl`: None (off) or (rate, slip)."""

    def __init__(self, name, work, zone, rrl):
        self.name, self.rrl, self.port = name, rrl, PORTS[name]
        self.dir = os.path.join(work, f"{name}-{'off' if rrl is None else rrl[0]}")
        os.makedirs(self.dir, exist_ok=True)
        shutil.copy(zone, os.path.join(self.dir, ZONE + ".zone"))
        self.proc = None

    def config(self):
        d, p = self.dir, self.port
        if self.name == "mailns":
            rrl = "enabled = false" if self.rrl is None else \
                f"rate = {self.rrl[0]}\nslip = {self.rrl[1]}\nexempt = []"
            path = os.path.join(d, "mailns.toml")
            write(path, f'[dns]\nlisten = ["127.0.0.1:{p}"]\n\n[dns.rrl]\n{rrl}\n\n'
                        f'[[zone]]\nname = "{ZONE}"\nfile = "{ZONE}.zone"\n')
            return [os.path.join(ROOT, "target/release/mailns"), "run", "--config", path]
        if self.name == "nsd":
            rate, slip = (0, 2) if self.rrl is None else self.rrl
            path = os.path.join(d, "nsd.conf")
            write(path, f"""server:
  ip-address: 127.0.0.1@{p}
  port: {p}
  do-ip6: no
  server-count: 2
  reuseport: yes
  rrl-ratelimit: {rate}
  rrl-slip: {slip}
  rrl-ipv4-prefix-length: 24
  rrl-whitelist-ratelimit: {rate}
  verbosity: 0
  username: ""
  chroot: ""
  database: ""
  zonesdir: "{d}"
  zonelistfile: "{d}/zone.list"
  xfrdfile: "{d}/xfrd.state"
  xfrdir: "{d}"
  pidfile: "{d}/nsd.pid"
  logfile: "{d}/nsd.log"
  zonefiles-write: 0
remote-control:
  control-enable: no
zone:
  name: {ZONE}
  zonefile: {ZONE}.zone
""")
            return ["nsd", "-d", "-c", path]
        # knot
        module = "" if self.rrl is None else \
            f"mod-rrl:\n  - id: default\n    rate-limit: {self.rrl[0]}\n    slip: {self.rrl[1]}\n"
        glob = "" if self.rrl is None else "    global-module: mod-rrl/default\n"
        path = knot_conf(d, p, ZONE, module, glob)
        return ["knotd", "-c", path]

    def start(self, pin=None):
        cmd = self.config()
        if pin is not None:
            cmd = ["taskset", "-c", str(pin)] + cmd
        self.proc = subprocess.Popen(cmd, env=dict(os.environ, RUST_LOG="warn"), stdout=subprocess.DEVNULL,
                                     stderr=open(os.path.join(self.dir, "log"), "a"), start_new_session=True)
        end = time.time() + 20
        while time.time() < end:
            if query_once(self.port, "owa." + ZONE):
                return self
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        raise SystemExit(f"{self.name} on port {self.port} does not answer; see {self.dir}/log")

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        time.sleep(0.3)  # let the port go before the next server binds it


def encode_query(qid, name, qtype=1):
    wire = b"".join(bytes([len(l)]) + l.encode() for l in name.split(".")) + b"\0"
    return struct.pack(">HHHHHH", qid, 0x0000, 1, 0, 0, 0) + wire + struct.pack(">HH", qtype, 1)


def query_once(port, name, src="127.0.0.1"):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((src, 0))
    s.settimeout(0.5)
    try:
        s.sendto(encode_query(1, name), ("127.0.0.1", port))
        return s.recv(4096)
    except OSError:
        return None
    finally:
        s.close()


def flood(port, sources, per_source_qps, length):
    """Send FLOOD_NAME A from every source at per_source_qps for length seconds; count replies.
    Returns dict: sent, answers (TC=0, NOERROR), slips (TC=1), other, bytes_in (queries), bytes_out."""
    socks = []
    for src in sources:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
        s.bind((src, 0))
        s.setblocking(False)
        socks.append(s)
    query = encode_query(0x4242, FLOOD_NAME)
    st = dict(sent=0, answers=0, slips=0, other=0, bytes_in=0, bytes_out=0)
    interval = 1.0 / per_source_qps
    t0 = time.monotonic()
    due = 0  # packets per source that should have gone by now

    def drain(timeout):
        r, _, _ = select.select(socks, [], [], timeout)
        for s in r:
            while True:
                try:
                    data = s.recv(65535)
                except BlockingIOError:
                    break
                st["bytes_out"] += len(data)
                flags = data[2] if len(data) > 3 else 0
                rcode = data[3] & 0x0F if len(data) > 3 else 0xF
                if flags & 0x02:
                    st["slips"] += 1
                elif rcode == 0:
                    st["answers"] += 1
                else:
                    st["other"] += 1

    while True:
        now = time.monotonic() - t0
        if now >= length:
            break
        target = min(int(now / interval) + 1, int(length * per_source_qps))
        while due < target:
            for s in socks:
                try:
                    s.sendto(query, ("127.0.0.1", port))
                    st["sent"] += 1
                    st["bytes_in"] += len(query)
                except BlockingIOError:
                    pass
            due += 1
        drain(min(interval, 0.002))
    end = time.monotonic() + 0.5
    while time.monotonic() < end:
        drain(0.05)
    for s in socks:
        s.close()
    st["secs"] = length
    return st


def flood_part(a, work, zone, names):
    scenarios = [
        ("1 source, 10x", ["127.1.0.1"], 10 * a.rate),
        ("1 source, 100x", ["127.1.0.1"], 100 * a.rate),
        (f"{a.prefixes} prefixes, 10x each", [f"127.2.{i}.1" for i in range(a.prefixes)], 10 * a.rate),
        (f"{a.prefixes} prefixes, 100x each", [f"127.3.{i}.1" for i in range(a.prefixes)], 100 * a.rate),
    ]
    rows = []
    for n in names[:1]:  # the reference: what the same flood gets out with RRL off
        srv = Server(n, work, zone, None).start()
        st = flood(srv.port, ["127.1.0.1"], 10 * a.rate, a.len)
        srv.stop()
        print(f"RRL off, {n}, 1 source at {10 * a.rate}/s: {st['answers'] + st['slips']} of {st['sent']} answered, "
              f"bytes out/in {st['bytes_out'] / max(st['bytes_in'], 1):.3f}", flush=True)
    print(f"\n## Spoofed flood: limit {a.rate}/s per prefix, slip 2, {a.len} s per scenario", flush=True)
    for title, sources, qps in scenarios:
        for n in names:
            srv = Server(n, work, zone, (a.rate, 2)).start()
            st = flood(srv.port, sources, qps, a.len)
            srv.stop()
            k = len(sources) * a.len
            row = (title, n, st["sent"], st["answers"], st["slips"], st["other"], st["answers"] / k,
                   (st["answers"] + st["slips"]) / max(st["sent"], 1), st["bytes_out"] / max(st["bytes_in"], 1))
            rows.append(row)
            print(f"{title:26s} {n:7s} sent {st['sent']:7d} answers {st['answers']:6d} slips {st['slips']:6d} "
                  f"other {st['other']:4d}  answers/s per prefix {row[6]:6.1f}  replies/queries {row[7]:.3f}  "
                  f"bytes out/in {row[8]:.3f}", flush=True)
    print("\n| flood | server | queries sent | full answers | slipped (TC=1) | answers/s per prefix "
          "| replies / queries | bytes out / bytes in |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r[0]} | {r[1]} | {r[2]:,} | {r[3]:,} | {r[4]:,} | {r[6]:.1f} | {r[7]:.3f} | {r[8]:.3f} |")


def dnsperf_pinned(port, queries, length, qps):
    cmd = ["taskset", "-c", "1", "dnsperf", "-s", "127.0.0.1", "-p", str(port), "-d", queries, "-l", str(length),
           "-c", "4", "-q", "300", "-Q", str(qps)]
    out = subprocess.run(cmd, capture_output=True, text=True).stdout
    m = re.search(r"Queries per second:\s+([\d.]+)", out)
    return float(m.group(1)) if m else 0.0


def cost_part(a, work, zone, names):
    print(f"\n## Cost: RRL off vs on (rate {a.high:,}/s), server on CPU 0, dnsperf on CPU 1, "
          f"{a.rounds} rounds x {a.len} s: saturation, then a fixed {a.fixed:,} QPS", flush=True)
    res = {(n, m): [] for n in names for m in ("off", "on")}
    for rnd in range(1, a.rounds + 1):
        for n in names:
            modes = ("off", "on") if rnd % 2 else ("on", "off")  # alternate which goes first
            for m in modes:
                srv = Server(n, work, zone, None if m == "off" else (a.high, 2)).start(pin=0)
                time.sleep(0.5)
                sat = dnsperf_pinned(srv.port, a.queries, a.len, 1000000)
                c0, t0 = cpu_seconds(srv.proc.pid), time.time()
                got = dnsperf_pinned(srv.port, a.queries, a.len, a.fixed)
                cpu = cpu_seconds(srv.proc.pid) - c0
                srv.stop()
                us = cpu / max(got * a.len, 1) * 1e6
                res[(n, m)].append((sat, us))
                print(f"round {rnd} {n:7s} rrl {m:3s} saturation {sat:9.0f} QPS; at {got:7.0f} QPS: "
                      f"{us:.3f} us server CPU per answer", flush=True)
    print("\n| server | saturation QPS off | on | on/off | server CPU per answer off (us) | on | "
          "on/off (min-max of rounds) |")
    print("|---|---|---|---|---|---|---|")
    for n in names:
        off, on = res[(n, "off")], res[(n, "on")]
        q_off, q_on = statistics.median(x[0] for x in off), statistics.median(x[0] for x in on)
        c_off, c_on = statistics.median(x[1] for x in off), statistics.median(x[1] for x in on)
        per_round = [b[1] / a_[1] for a_, b in zip(off, on)]
        print(f"| {n} | {q_off:,.0f} | {q_on:,.0f} | {q_on/q_off:.3f} | {c_off:.3f} | {c_on:.3f} | "
              f"{c_on/c_off:.3f} ({min(per_round):.3f}-{max(per_round):.3f}) |")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--len", type=int, default=10, help="seconds per flood scenario and per dnsperf run")
    ap.add_argument("--rate", type=int, default=20, help="the RRL limit, responses a second per bucket")
    ap.add_argument("--prefixes", type=int, default=16)
    ap.add_argument("--fixed", type=int, default=30000, help="the fixed rate of the CPU-per-answer runs")
    ap.add_argument("--high", type=int, default=65535, help="the RRL rate of the cost runs (never reached)")
    ap.add_argument("--only", default="mailns,nsd,knot")
    ap.add_argument("--peers", default=os.path.join(os.path.dirname(ROOT), "shared", "peers"))
    ap.add_argument("--skip-flood", action="store_true")
    ap.add_argument("--skip-cost", action="store_true")
    a = ap.parse_args()
    zone = os.path.join(a.peers, "zone", ZONE + ".zone")
    a.queries = os.path.join(a.peers, "queries.txt")
    for tool in ["dnsperf", "taskset", "nsd", "knotd"]:
        if not shutil.which(tool):
            sys.exit(f"{tool} is missing: apt-get install dnsperf util-linux nsd knot")
    subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=ROOT, check=True)
    names = a.only.split(",")
    work = tempfile.mkdtemp(prefix="mailns-rrl-")
    print(f"workdir {work}; servers {names}", flush=True)
    try:
        if not a.skip_flood:
            flood_part(a, work, zone, names)
        if not a.skip_cost:
            cost_part(a, work, zone, names)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
