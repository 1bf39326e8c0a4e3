#!/usr/bin/env python3
"""Side-by-side DNS benchmark: mailns, NSD, Knot and gdnsd on the same zone and query mix, on loopback.

Each round has three phases; in each phase every server runs once, one after the other, and
the order of the servers is reversed every other round:
  1. capacity: unpinned saturation, dnsperf -c 4 -q 300 -Q 1000000 (dnsperf and the server share
     both cores). Recorded per run: QPS, lost, the server's CPU (utime+stime of its whole process
     tree) and per thread, dnsperf's own CPU, and the box's steal and busy time from /proc/stat.
     QPS per server CPU-second (answers over all the server's CPU in the run) is the figure
     to compare; answers per busy CPU-second of the whole box is printed beside it.
  2. latency: a background load at 50 % and at 80 % of the saturation NSD reached in phase 1 of
     the same round (the first server's, without NSD), plus a 2k QPS probe (dnsperf -v):
     p50 / p99 / p99.9 of the probe's queries. The fixed rates are below saturation by
     construction, so the probe measures latency, not queueing. The server's CPU over each
     fixed-rate run gives a second QPS per server CPU-second, at a load every server carries.
  3. pinned saturation: server on CPU 0 (taskset), dnsperf on CPU 1.
Prints medians over rounds with the min-max spread, ratios to gdnsd and NSD, and every run's
steal, so a noisy run shows as one. Every address is 127.0.0.1; every run is bounded.

Usage: bench/dns.py [--rounds 3] [--len 10] [--only mailns,nsd,knot,gdnsd] [--peers DIR]
                    [--mix peers|nxdomain] [--edge] [--tcp] [--json FILE]
       bench/dns.py --health --only mailns,nsd,gdnsd-dyna   (health-checked owa/autodiscover)
       bench/dns.py --base /tmp/mailns-before --only mailns,mailns-base,gdnsd   (an A/B of a change)
  --mix nxdomain  every query a name that does not exist (100 % NXDOMAIN)
  --edge          mailns with RRL and cookies on for every client (rate far above the load, no
                  exemption: every query pays the bookkeeping)
  --tcp           dnsperf -m tcp: pipelined queries on persistent connections
The peers' start scripts and the zone/query mix come from ../shared/peers (see its README).
"""
import argparse, json, os, re, resource, shutil, signal, statistics, subprocess, sys, tempfile, time

from benchlib import HZ, cpu_seconds, process_tree

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


# Set by main: ["-m", "tcp"] with --tcp.
MODE = []

# --edge: RRL and cookies for every client, at a rate no bucket reaches (the cost, not the limit).
EDGE_CONFIG = """
[dns.rrl]
enabled = true
rate = 1000000000
exempt = []

[dns.cookies]
enabled = true
"""


def dnsperf(port, queries, length, extra, pin=None):
    cmd = ["dnsperf", "-s", "127.0.0.1", "-p", str(port), "-d", queries, "-l", str(length)] + MODE + extra
    if pin is not None:
        cmd = ["taskset", "-c", str(pin)] + cmd
    return cmd


def qps_of(out):
    m = re.search(r"Queries per second:\s+([\d.]+)", out)
    return float(m.group(1)) if m else 0.0


def lost_of(out):
    m = re.search(r"Queries lost:\s+\d+ \(([\d.]+)%\)", out)
    return float(m.group(1)) if m else 100.0


def completed_of(out):
    m = re.search(r"Queries completed:\s+(\d+)", out)
    return int(m.group(1)) if m else 0


def runtime_of(out):
    """dnsperf's sending time (its -l): the QPS it prints is over this, not over its wall time,
    which runs up to its timeout (-t, 5 s) longer when a query near the end was lost."""
    m = re.search(r"Run time \(s\):\s+([\d.]+)", out)
    return float(m.group(1)) if m else 0.0


def probe_latencies(port, queries, length, rate):
    """A 2k QPS dnsperf -v probe while a background load runs at `rate`: the probe's sorted
    latencies (s) and the queries answered in all (background and probe)."""
    bg = subprocess.Popen(dnsperf(port, queries, length, ["-c", "4", "-q", "100", "-Q", str(int(rate))]),
                          stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    time.sleep(0.5)
    probe = subprocess.run(dnsperf(port, queries, length - 1, ["-c", "1", "-q", "10", "-Q", "2000", "-v"]),
                           capture_output=True, text=True).stdout
    bg_out, _ = bg.communicate()
    lat = sorted(float(l.split()[-1]) for l in probe.splitlines() if l.startswith(">") and l.split()[-1][0].isdigit())
    return lat, completed_of(bg_out) + completed_of(probe)


def pct(lat, q):
    return lat[min(len(lat) - 1, int(len(lat) * q))] * 1e3 if lat else float("nan")


def box_ticks():
    """(busy, steal, total) jiffies of the whole box, from /proc/stat's cpu line."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    user, nice, system, idle, iowait, irq, softirq, steal = (v + [0] * 8)[:8]
    busy = user + nice + system + irq + softirq
    return busy, steal, busy + idle + iowait + steal


def thread_cpu(root):
    """CPU seconds per thread name over root's process tree ({'dns-udp-0': s, ...})."""
    out = {}
    for p in process_tree(root):
        try:
            tasks = os.listdir(f"/proc/{p}/task")
        except OSError:
            continue
        for t in tasks:
            try:
                with open(f"/proc/{p}/task/{t}/stat") as f:
                    raw = f.read()
            except OSError:
                continue
            name = raw[raw.index("(") + 1:raw.rindex(")")]
            fields = raw.rsplit(")", 1)[1].split()
            out[name] = out.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / HZ
    return out


def delta(after, before):
    return {k: v - before.get(k, 0.0) for k, v in after.items() if v - before.get(k, 0.0) > 0.005}


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
        if self.name.startswith("mailns"):
            return MAILNS_PORT + (1 if self.name == "mailns-base" else 0)
        return PEERS[self.name][2]

    def start(self, pin=None):
        prefix = ["taskset", "-c", str(pin)] if pin is not None else []
        if self.name.startswith("mailns"):
            base = self.name == "mailns-base"
            cfg = os.path.join(self.workdir, "mailns-base.toml" if base else "mailns.toml")
            binary = self.args.base if base else os.path.join(ROOT, "target/release/mailns")
            self.proc = subprocess.Popen(prefix + [binary, "run", "--config", cfg],
                                         env=dict(os.environ, RUST_LOG="warn"), stdout=subprocess.DEVNULL,
                                         stderr=open(os.path.join(self.workdir, "mailns.log"), "a"), start_new_session=True)
        else:
            start = PEERS[self.name][0]
            subprocess.run(prefix + ["bash", os.path.join(self.args.peers, "servers", start[0])] + start[1:],
                           env=dict(os.environ, PEERS_RUN=self.workdir), check=True, capture_output=True)
        wait_answer(self.port)
        if self.proc is not None and self.proc.poll() is not None:
            # Something else answers on the port (a server left over from another run).
            sys.exit(f"{self.name} exited (see {self.workdir}/mailns.log) while port {self.port} answers")

    def pid(self):
        if self.name.startswith("mailns"):
            return self.proc.pid
        with open(os.path.join(self.workdir, PEERS[self.name][3])) as f:
            return int(f.read())

    def stop(self):
        if self.name.startswith("mailns"):
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=20)
        else:
            stop = PEERS[self.name][1]
            subprocess.run(["bash", os.path.join(self.args.peers, "servers", stop[0])] + stop[1:],
                           env=dict(os.environ, PEERS_RUN=self.workdir), capture_output=True)


def capacity(server, a):
    """Phase 1: unpinned saturation, with the server's CPU (total and per thread), dnsperf's
    CPU and the box's steal."""
    server.start()
    time.sleep(1)
    pid = server.pid()
    c0, th0, b0, t0 = cpu_seconds(pid), thread_cpu(pid), box_ticks(), time.time()
    # dnsperf is the only child that ends in this window: its CPU is the children's delta.
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    perf = subprocess.Popen(dnsperf(server.port, a.queries, a.len, ["-c", str(a.clients), "-q", "300", "-Q", "1000000"]),
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    # The box's CPU is taken over the sending time only: dnsperf spins through its timeout wait.
    time.sleep(max(t0 + a.len - time.time(), 0))
    b_sent = box_ticks()
    out, _ = perf.communicate()
    c1, th1, b1, t1 = cpu_seconds(pid), thread_cpu(pid), box_ticks(), time.time()
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    server.stop()
    total = max(b1[2] - b0[2], 1)
    # Every share is over dnsperf's sending time, and the cost per answer is the answers over
    # all the server's CPU: dividing the QPS by the CPU share of the wall window (as this did
    # until 2026-12-04) flattered a server that lost a query near the end by up to 11/6, the
    # 5 s dnsperf then waits idle.
    run = max(runtime_of(out), 1e-9)
    ncpu = os.cpu_count() or 1
    r = {"qps": qps_of(out), "lost": lost_of(out), "cpu": (c1 - c0) / run,
         "steal": (b1[1] - b0[1]) / total, "busy": (b_sent[0] - b0[0]) / HZ / (a.len * ncpu),
         "wall": t1 - t0,
         "dnsperf_cpu": (ru1.ru_utime + ru1.ru_stime - ru0.ru_utime - ru0.ru_stime) / run,
         "threads": {k: v / run for k, v in delta(th1, th0).items()}}
    r["qps_per_cpu"] = completed_of(out) / max(c1 - c0, 1e-9)
    # The whole box's busy CPU (dnsperf, softirq wherever it ran) per answer while dnsperf
    # sends: what a server saves its clients or pushes onto them shows here.
    r["qps_per_box_cpu"] = r["qps"] * a.len / max((b_sent[0] - b0[0]) / HZ, 1e-9)
    return r


def latency(server, a, rates):
    """Phase 2, at each fixed background rate: the probe's p50 / p99 / p99.9 (ms), and the
    queries answered per server CPU-second (the cost per answer below saturation, where it
    does not hang on how the load generator and the server happen to be scheduled)."""
    server.start()
    time.sleep(1)
    pid = server.pid()
    r, cost = {}, {}
    for label, rate in rates:
        c0 = cpu_seconds(pid)
        lat, answered = probe_latencies(server.port, a.queries, a.len, max(rate - 2000, 1000))
        r[label] = (pct(lat, 0.5), pct(lat, 0.99), pct(lat, 0.999))
        cost[label] = answered / max(cpu_seconds(pid) - c0, 1e-9)
    server.stop()
    return r, cost


def pinned(server, a):
    """Phase 3: server on CPU 0, dnsperf on CPU 1."""
    server.start(pin=0)
    time.sleep(1)
    out = subprocess.run(dnsperf(server.port, a.queries, a.len, ["-c", "4", "-q", "300", "-Q", "1000000"], pin=1),
                         capture_output=True, text=True).stdout
    server.stop()
    return qps_of(out)


def nxdomain_queries(path, n=100000):
    """n distinct names under the zone that do not exist, A and AAAA."""
    with open(path, "w") as f:
        for i in range(n):
            f.write(f"nx{i:06d}-{(i * 7919) % 100003}.mail.example.test {'A' if i % 2 else 'AAAA'}\n")


def spread(xs):
    return f"{statistics.median(xs):,.0f} ({min(xs):,.0f}-{max(xs):,.0f})"


def main():
    global MODE
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--len", type=int, default=10, help="seconds per dnsperf run")
    ap.add_argument("--only", default="mailns,nsd,knot,gdnsd")
    ap.add_argument("--peers", default=os.path.join(os.path.dirname(ROOT), "shared", "peers"))
    ap.add_argument("--zone", default=None, help="zone file (default: the peers' mail.example.test zone)")
    ap.add_argument("--queries", default=None, help="dnsperf query file (default: the peers' mix)")
    ap.add_argument("--mix", default="peers", choices=["peers", "nxdomain"])
    ap.add_argument("--edge", action="store_true", help="mailns with RRL and cookies on for every client")
    ap.add_argument("--tcp", action="store_true", help="dnsperf -m tcp (pipelined, persistent connections)")
    ap.add_argument("--skip-latency", action="store_true")
    ap.add_argument("--skip-pinned", action="store_true")
    ap.add_argument("--json", default=None, help="write every run's figures here")
    ap.add_argument("--clients", type=int, default=4,
                    help="dnsperf -c in the capacity runs: its source ports, i.e. the flows SO_REUSEPORT spreads")
    ap.add_argument("--udp-workers", type=int, default=0, help="mailns's dns.udp_workers (default: one per core)")
    ap.add_argument("--udp-workers-this-only", action="store_true",
                    help="with --base: only this build gets --udp-workers (an A/B of the setting)")
    ap.add_argument("--base", default=None,
                    help="another mailns binary, run as server mailns-base beside this build (an A/B of a change)")
    ap.add_argument("--health", action="store_true",
                    help="health-checked names: mailns with tcp checks on owa/autodiscover, beside pdns-lua and gdnsd-dyna "
                         "(starts the peers' TCP 443 listeners on 127.0.1.1-3)")
    a = ap.parse_args()
    MODE = ["-m", "tcp"] if a.tcp else []
    a.zone = a.zone or os.path.join(a.peers, "zone", "mail.example.test.zone")
    for tool in ["dnsperf", "dig", "taskset"]:
        if not shutil.which(tool):
            sys.exit(f"{tool} is missing: apt-get install dnsperf bind9-dnsutils util-linux (and nsd knot gdnsd for the peers)")
    subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=ROOT, check=True)
    work = tempfile.mkdtemp(prefix="mailns-bench-")
    if a.mix == "nxdomain" and not a.queries:
        a.queries = os.path.join(work, "nxdomain.txt")
        nxdomain_queries(a.queries)
    a.queries = a.queries or os.path.join(a.peers, "queries.txt")
    shutil.copy(a.zone, os.path.join(work, "bench.zone"))
    for file, port in [("mailns.toml", MAILNS_PORT), ("mailns-base.toml", MAILNS_PORT + 1)]:
        with open(os.path.join(work, file), "w") as f:
            workers = a.udp_workers and (file == "mailns.toml" or not a.udp_workers_this_only)
            f.write(f'[dns]\nlisten = ["127.0.0.1:{port}"]\n' + (f'udp_workers = {a.udp_workers}\n' if workers else '')
                    + '\n[[zone]]\nname = "mail.example.test"\nfile = "bench.zone"\n')
            f.write(f'\n[admin]\nlisten = "127.0.0.1:{port + 1000}"\n')
            if a.health:
                f.write(HEALTH_CONFIG)
            if a.edge:
                f.write(EDGE_CONFIG)
    if a.health:
        subprocess.run(["bash", os.path.join(a.peers, "servers", "tcp_up.sh"), "start"],
                       env=dict(os.environ, PEERS_RUN=work), check=True, capture_output=True)
    names = a.only.split(",")
    ref_name = "nsd" if "nsd" in names else names[0]
    runs = {n: [] for n in names}
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    print(f"commit {commit}; workdir {work}; {a.rounds} rounds x {len(names)} servers, {a.len} s per run; "
          f"mix {a.mix}{', edge on' if a.edge else ''}{', tcp' if a.tcp else ''}", flush=True)
    for rnd in range(1, a.rounds + 1):
        order = names if rnd % 2 else list(reversed(names))
        cap = {}
        for n in order:
            cap[n] = capacity(Server(n, a, work), a)
            r = cap[n]
            th = " ".join(f"{k}={v * 100:.0f}%" for k, v in sorted(r["threads"].items()))
            print(f"round {rnd} {n:10s} qps {r['qps']:9.0f} (lost {r['lost']:.2f}%) cpu {r['cpu'] * 100:5.1f}% "
                  f"qps/cpu-s {r['qps_per_cpu']:9.0f} box {r['qps_per_box_cpu']:7.0f} dnsperf {r['dnsperf_cpu'] * 100:.0f}% steal {r['steal'] * 100:.1f}% "
                  f"busy {r['busy'] * 100:.0f}% wall {r['wall']:.1f}s [{th}]",
                  flush=True)
        sat = cap[ref_name]["qps"]
        rates = [("50%", 0.5 * sat), ("80%", 0.8 * sat)]
        for n in order:
            if not a.skip_latency:
                cap[n]["latency"], cap[n]["fixed_qps_per_cpu"] = latency(Server(n, a, work), a, rates)
                cap[n]["rates"] = rates
                lat = " ".join(f"@{l} {x[0]:.3f}/{x[1]:.3f}/{x[2]:.3f} qps/cpu-s {cap[n]['fixed_qps_per_cpu'][l]:.0f}"
                               for l, x in cap[n]["latency"].items())
                print(f"round {rnd} {n:10s} p50/p99/p99.9 ms {lat} ({ref_name} saturation {sat:.0f})", flush=True)
        for n in order:
            if not a.skip_pinned:
                cap[n]["pinned"] = pinned(Server(n, a, work), a)
                print(f"round {rnd} {n:10s} pinned {cap[n]['pinned']:9.0f}", flush=True)
        for n in names:
            runs[n].append(cap[n])
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"commit": commit, "args": vars(a), "runs": runs}, f, indent=1)
    med = {n: statistics.median(r["qps_per_cpu"] for r in rs) for n, rs in runs.items()}
    box = {n: statistics.median(r["qps_per_box_cpu"] for r in rs) for n, rs in runs.items()}
    gd = "gdnsd" if "gdnsd" in med else "gdnsd-dyna"
    print(f"\n| server | QPS | server CPU | QPS per server CPU-s (min-max) | vs gdnsd | vs NSD "
          f"| QPS per box CPU-s (min-max) | vs gdnsd | steal (max) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for n, rs in runs.items():
        vs = lambda m, ref: f"{m[n] / m[ref]:.2f}x" if ref in m else "-"
        print(f"| {n} | {statistics.median(r['qps'] for r in rs):,.0f} | {statistics.median(r['cpu'] for r in rs) * 100:.0f} % "
              f"| {spread([r['qps_per_cpu'] for r in rs])} | {vs(med, gd)} | {vs(med, 'nsd')} "
              f"| {spread([r['qps_per_box_cpu'] for r in rs])} | {vs(box, gd)} "
              f"| {max(r['steal'] for r in rs) * 100:.1f} % |")
    if not a.skip_latency:
        print(f"\n| server | p50 / p99 / p99.9 ms at 50 % of {ref_name}'s saturation | at 80 % |")
        print("|---|---|---|")
        for n, rs in runs.items():
            cells = []
            for l in ["50%", "80%"]:
                cells.append(" / ".join(f"{statistics.median(r['latency'][l][k] for r in rs):.3f}" for k in range(3)))
            print(f"| {n} | {cells[0]} | {cells[1]} |")
        ref = "gdnsd" if "gdnsd" in runs else "gdnsd-dyna"
        print(f"\n| server | QPS per server CPU-s at 50 % (min-max) | vs {ref} | at 80 % | vs {ref} |")
        print("|---|---|---|---|---|")
        fixed = {n: {l: statistics.median(r["fixed_qps_per_cpu"][l] for r in rs) for l in ["50%", "80%"]}
                 for n, rs in runs.items()}
        for n, rs in runs.items():
            cells = []
            for l in ["50%", "80%"]:
                vs = f"{fixed[n][l] / fixed[ref][l]:.2f}x" if ref in fixed else "-"
                cells.append(f"{spread([r['fixed_qps_per_cpu'][l] for r in rs])} | {vs}")
            print(f"| {n} | {cells[0]} | {cells[1]} |")
    if not a.skip_pinned:
        pin = {n: statistics.median(r["pinned"] for r in rs) for n, rs in runs.items()}
        print("\n| server | pinned QPS (min-max) | vs NSD |")
        print("|---|---|---|")
        for n, rs in runs.items():
            print(f"| {n} | {spread([r['pinned'] for r in rs])} | "
                  f"{pin[n] / pin['nsd']:.2f}x |" if "nsd" in pin else f"| {n} | {spread([r['pinned'] for r in rs])} | - |")
    if a.health:
        subprocess.run(["bash", os.path.join(a.peers, "servers", "tcp_up.sh"), "stop"],
                       env=dict(os.environ, PEERS_RUN=work), capture_output=True)
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
