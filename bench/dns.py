#!/usr/bin/env python3
"""Side-by-side DNS benchmark: mailns, NSD, Knot and gdnsd on the same zone and query mix, on loopback.

For each round and each server, alternating:
  1. unpinned saturation: dnsperf -c 4 -q 300 -Q 1000000 (dnsperf and server share both cores);
     QPS, and the server's CPU (utime+stime of its whole process tree) -> QPS per server CPU-second;
  2. latency: a fixed 100k QPS background load plus a 2k QPS probe (dnsperf -v): p50 / p99;
  3. pinned saturation: server on CPU 0 (taskset), dnsperf on CPU 1.
Prints medians over rounds and ratios to NSD. Every address is 127.0.0.1; every run is bounded.

Usage: bench/dns.py [--rounds 2] [--len 10] [--only mailns,nsd,knot,gdnsd] [--peers DIR] [--zone FILE --queries FILE]
       bench/dns.py --health --only mailns,nsd,pdns-lua,gdnsd-dyna   (health-checked owa/autodiscover)
The peers' start scripts and the zone/query mix come from ../shared/peers (see its README).
"""
import argparse, os, re, shutil, signal, statistics, subprocess, sys, tempfile, time

from benchlib import cpu_seconds

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MAILNS_PORT = 5310
# name -> (start args, stop args, port, pid file under $PEERS_RUN)
PEERS = {
    "nsd":   (["nsd.sh", "start"], ["nsd.sh", "stop"], 5301, "nsd/pid"),
    "knot":  (["knot.sh", "start"], ["knot.sh", "stop"], 5302, "knot/pid"),
    "gdnsd": (["gdnsd.sh", "start", "plain"], ["gdnsd.sh", "stop", "plain"], 5305, "gdnsd-plain/pid"),
    # Health-checked peers (owa and autodiscover follow a TCP check on 443 of 127.0.1.1-3):
    "pdns-lua": (["pdns.sh", "start", "lua"], ["pdns.sh", "stop", "lua"], 5306, "pdns-lua/pid"),
    "gdnsd-dyna": (["gdnsd.sh", "start", "dyna"], ["gdnsd.sh", "stop", "dyna"], 5309, "gdnsd-dyna/pid"),
}

# --health: mailns answers owa and autodiscover from the same TCP check the peers use.
HEALTH_CONFIG = """
[[check]]
name = "https-port"
kind = "tcp"
port = 443

[[service]]
name = "owa.mail.example.test"
checks = ["https-port"]

[[service]]
name = "autodiscover.mail.example.test"
checks = ["https-port"]
"""


def dnsperf(port, queries, length, extra, pin=None):
    cmd = ["dnsperf", "-s", "127.0.0.1", "-p", str(port), "-d", queries, "-l", str(length)] + extra
    if pin is not None:
        cmd = ["taskset", "-c", str(pin)] + cmd
    return cmd


def qps_of(out):
    m = re.search(r"Queries per second:\s+([\d.]+)", out)
    return float(m.group(1)) if m else 0.0


def lost_of(out):
    m = re.search(r"Queries lost:\s+\d+ \(([\d.]+)%\)", out)
    return float(m.group(1)) if m else 100.0


def probe_latencies(port, queries, length, rate):
    """Sorted latencies (s) of a 2k QPS dnsperf -v probe while a background load runs at `rate`."""
    bg = subprocess.Popen(dnsperf(port, queries, length, ["-c", "4", "-q", "100", "-Q", str(int(rate))]),
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.5)
    probe = subprocess.run(dnsperf(port, queries, length - 1, ["-c", "1", "-q", "10", "-Q", "2000", "-v"]),
                           capture_output=True, text=True).stdout
    bg.wait()
    return sorted(float(l.split()[-1]) for l in probe.splitlines() if l.startswith(">") and l.split()[-1][0].isdigit())


def wait_answer(port, name="owa.mail.example.test", timeout=20):
    end = time.time() + timeout
    while time.time() < end:
        r = subprocess.run(["dig", "+short", "+time=1", "+tries=1", "-p", str(port), "@127.0.0.1", name, "A"],
                           capture_output=True, text=True)
        if r.stdout.strip():
            return True
        time.sleep(0.1)
    raise SystemExit(f"server on port {port} does not answer")


class Server:
    def __init__(self, name, args, workdir):
        self.name, self.args, self.workdir = name, args, workdir
        self.proc = None

    @property
    def port(self):
        return MAILNS_PORT if self.name == "mailns" else PEERS[self.name][2]

    def start(self, pin=None):
        prefix = ["taskset", "-c", str(pin)] if pin is not None else []
        if self.name == "mailns":
            cfg = os.path.join(self.workdir, "mailns.toml")
            self.proc = subprocess.Popen(prefix + [os.path.join(ROOT, "target/release/mailns"), "run", "--config", cfg],
                                         env=dict(os.environ, RUST_LOG="warn"), stdout=subprocess.DEVNULL,
                                         stderr=open(os.path.join(self.workdir, "mailns.log"), "a"), start_new_session=True)
        else:
            start = PEERS[self.name][0]
            subprocess.run(prefix + ["bash", os.path.join(self.args.peers, "servers", start[0])] + start[1:],
                           env=dict(os.environ, PEERS_RUN=self.workdir), check=True, capture_output=True)
        wait_answer(self.port)

    def pid(self):
        if self.name == "mailns":
            return self.proc.pid
        with open(os.path.join(self.workdir, PEERS[self.name][3])) as f:
            return int(f.read())

    def stop(self):
        if self.name == "mailns":
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=20)
        else:
            stop = PEERS[self.name][1]
            subprocess.run(["bash", os.path.join(self.args.peers, "servers", stop[0])] + stop[1:],
                           env=dict(os.environ, PEERS_RUN=self.workdir), capture_output=True)


def measure(server, a):
    r = {}
    # 1. unpinned saturation, with server CPU
    server.start()
    time.sleep(1)
    pid = server.pid()
    c0, t0 = cpu_seconds(pid), time.time()
    out = subprocess.run(dnsperf(server.port, a.queries, a.len, ["-c", "4", "-q", "300", "-Q", "1000000"]),
                         capture_output=True, text=True).stdout
    c1, t1 = cpu_seconds(pid), time.time()
    r["qps"] = qps_of(out)
    r["lost"] = lost_of(out)
    r["cpu"] = (c1 - c0) / (t1 - t0)
    r["qps_per_cpu"] = r["qps"] / max(r["cpu"], 1e-9)
    # 2. latency under a fixed load
    lat = probe_latencies(server.port, a.queries, a.len, 100000)
    r["p50_ms"] = lat[len(lat) // 2] * 1e3 if lat else float("nan")
    r["p99_ms"] = lat[int(len(lat) * 0.99)] * 1e3 if lat else float("nan")
    server.stop()
    # 3. pinned: server CPU 0, dnsperf CPU 1
    server.start(pin=0)
    time.sleep(1)
    out = subprocess.run(dnsperf(server.port, a.queries, a.len, ["-c", "4", "-q", "300", "-Q", "1000000"], pin=1),
                         capture_output=True, text=True).stdout
    r["pinned"] = qps_of(out)
    server.stop()
    return r


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--len", type=int, default=10, help="seconds per dnsperf run")
    ap.add_argument("--only", default="mailns,nsd,knot,gdnsd")
    ap.add_argument("--peers", default=os.path.join(os.path.dirname(ROOT), "shared", "peers"))
    ap.add_argument("--zone", default=None, help="zone file (default: the peers' mail.example.test zone)")
    ap.add_argument("--queries", default=None, help="dnsperf query file (default: the peers' mix)")
    ap.add_argument("--health", action="store_true",
                    help="health-checked names: mailns with tcp checks on owa/autodiscover, beside pdns-lua and gdnsd-dyna "
                         "(starts the peers' TCP 443 listeners on 127.0.1.1-3)")
    a = ap.parse_args()
    a.zone = a.zone or os.path.join(a.peers, "zone", "mail.example.test.zone")
    a.queries = a.queries or os.path.join(a.peers, "queries.txt")
    for tool in ["dnsperf", "dig", "taskset"]:
        if not shutil.which(tool):
            sys.exit(f"{tool} is missing: apt-get install dnsperf bind9-dnsutils util-linux (and nsd knot gdnsd for the peers)")
    subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=ROOT, check=True)
    work = tempfile.mkdtemp(prefix="mailns-bench-")
    shutil.copy(a.zone, os.path.join(work, "bench.zone"))
    with open(os.path.join(work, "mailns.toml"), "w") as f:
        f.write(f'[dns]\nlisten = ["127.0.0.1:{MAILNS_PORT}"]\n\n[[zone]]\nname = "mail.example.test"\nfile = "bench.zone"\n')
        if a.health:
            f.write(HEALTH_CONFIG)
    if a.health:
        subprocess.run(["bash", os.path.join(a.peers, "servers", "tcp_up.sh"), "start"],
                       env=dict(os.environ, PEERS_RUN=work), check=True, capture_output=True)
    names = a.only.split(",")
    results = {n: [] for n in names}
    print(f"workdir {work}; {a.rounds} rounds x {len(names)} servers, {a.len} s per run", flush=True)
    for rnd in range(1, a.rounds + 1):
        for n in names:
            r = measure(Server(n, a, work), a)
            results[n].append(r)
            print(f"round {rnd} {n:7s} qps {r['qps']:9.0f} (lost {r['lost']:.2f}%) cpu {r['cpu']*100:5.1f}% "
                  f"qps/cpu-s {r['qps_per_cpu']:9.0f} p50 {r['p50_ms']:.3f} ms p99 {r['p99_ms']:.3f} ms pinned {r['pinned']:9.0f}",
                  flush=True)
    med = {n: {k: statistics.median(x[k] for x in rs) for k in rs[0]} for n, rs in results.items()}
    ref = med.get("nsd")
    print("\n| server | QPS | server CPU | QPS per server CPU-s | p50 / p99 ms @100k QPS | pinned QPS | vs NSD: QPS / per CPU / pinned |")
    print("|---|---|---|---|---|---|---|")
    for n, m in med.items():
        ratio = (f"{m['qps']/ref['qps']:.2f}x / {m['qps_per_cpu']/ref['qps_per_cpu']:.2f}x / {m['pinned']/ref['pinned']:.2f}x"
                 if ref else "-")
        print(f"| {n} | {m['qps']:.0f} | {m['cpu']*100:.0f} % | {m['qps_per_cpu']:.0f} | {m['p50_ms']:.3f} / {m['p99_ms']:.3f} "
              f"| {m['pinned']:.0f} | {ratio} |")
    if a.health:
        subprocess.run(["bash", os.path.join(a.peers, "servers", "tcp_up.sh"), "stop"],
                       env=dict(os.environ, PEERS_RUN=work), capture_output=True)
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
