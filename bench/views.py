#!/usr/bin/env python3
"""Split-horizon cost: mailns with 1, 2 and 8 views, beside NSD, Knot (no views) and BIND with one
and with two views, on the peers' zone and query mix, on loopback.

Every mailns variant serves the same health-driven names (owa and autodiscover follow a TCP check
on 443 of 127.0.1.1-3, the peers' listeners), so each view has its own prebuilt health answers.
With N views, N-1 match 127.0.8.0/24, 127.0.9.0/24, ... and the last is the catch-all that
dnsperf's queries (from 127.0.0.1) fall into; each view has its own copy of the zone.

First a calibration: NSD's saturation rate S in this run. Then, for each round, each server in
turn (the order reversed every other round):
  1. unpinned saturation: dnsperf -c 4 -q 300 -Q 1000000; QPS and the server's CPU (utime+stime
     of its process tree from /proc) -> QPS per server CPU-second;
  2. latency below saturation: a background load at 50 % of S plus a 2k QPS probe (dnsperf -v),
     p50 / p99 / p99.9 of the probe's answers.
Prints per-round lines, then medians with the min-max spread, and ratios to mailns with one view.

Usage: bench/views.py [--rounds 3] [--len 10] [--only mailns-1,mailns-2,mailns-8,nsd,knot,bind-1,bind-2]
"""
import argparse, os, shutil, signal, statistics, subprocess, sys, tempfile, time

from benchlib import cpu_seconds
from dns import dnsperf, qps_of, lost_of, probe_latencies, wait_answer, HEALTH_CONFIG

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ZONE = "mail.example.test"
PORT = {"mailns": 5310, "nsd": 5301, "knot": 5302, "bind-1": 5303, "bind-2": 5311}


def mailns_config(work, n):
    """The config of mailns with n views (n = 1: no [[view]] at all, as before views existed)."""
    d = os.path.join(work, f"mailns-{n}")
    os.makedirs(d, exist_ok=True)
    out = [f'[dns]\nlisten = ["127.0.0.1:{PORT["mailns"]}"]\n']
    if n == 1:
        shutil.copy(os.path.join(work, "bench.zone"), os.path.join(d, "v0.zone"))
        out.append(f'[[zone]]\nname = "{ZONE}"\nfile = "v0.zone"\n')
    else:
        for i in range(n):
            shutil.copy(os.path.join(work, "bench.zone"), os.path.join(d, f"v{i}.zone"))
            match = '"0.0.0.0/0", "::/0"' if i == n - 1 else f'"127.0.{8 + i}.0/24"'
            out.append(f'[[view]]\nname = "v{i}"\nmatch = [{match}]\n')
            out.append(f'[[zone]]\nname = "{ZONE}"\nfile = "v{i}.zone"\nviews = ["v{i}"]\n')
    out.append(HEALTH_CONFIG)
    out.append('[admin]\nlisten = "127.0.0.1:0"\n')
    path = os.path.join(d, "mailns.toml")
    with open(path, "w") as f:
        f.write("\n".join(out))
    return path


def bind_two_views(work):
    """named.conf for BIND 9 with two views (127.0.8.0/24, then everyone), one zone copy each."""
    d = os.path.join(work, "bind-2")
    os.makedirs(d, exist_ok=True)
    for v in ["internal", "external"]:
        shutil.copy(os.path.join(work, "bench.zone"), os.path.join(d, f"{v}.zone"))
    conf = f"""options {{
  directory "{d}";
  pid-file "{d}/named.pid";
  session-keyfile "{d}/session.key";
  listen-on port {PORT['bind-2']} {{ 127.0.0.1; }};
  listen-on-v6 {{ none; }};
  recursion no;
  querylog no;
  notify no;
  dnssec-validation no;
  minimal-responses no-auth;
}};
controls {{ }};
logging {{ category default {{ null; }}; category lame-servers {{ null; }}; }};
view "internal" {{ match-clients {{ 127.0.8.0/24; }}; zone "{ZONE}" {{ type primary; file "{d}/internal.zone"; }}; }};
view "external" {{ match-clients {{ any; }}; zone "{ZONE}" {{ type primary; file "{d}/external.zone"; }}; }};
"""
    path = os.path.join(d, "named.conf")
    with open(path, "w") as f:
        f.write(conf)
    return path


class Server:
    def __init__(self, name, a, work):
        self.name, self.a, self.work, self.proc = name, a, work, None
        self.port = PORT["mailns"] if name.startswith("mailns") else PORT[name]

    def start(self):
        if self.name.startswith("mailns"):
            cfg = mailns_config(self.work, int(self.name.split("-")[1]))
            self.proc = subprocess.Popen([os.path.join(ROOT, "target/release/mailns"), "run", "--config", cfg],
                                         env=dict(os.environ, RUST_LOG="warn"), stdout=subprocess.DEVNULL,
                                         stderr=subprocess.DEVNULL, start_new_session=True)
        elif self.name == "bind-2":
            self.proc = subprocess.Popen(["named", "-f", "-n", "2", "-c", bind_two_views(self.work)],
                                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        else:
            script = {"nsd": "nsd.sh", "knot": "knot.sh", "bind-1": "bind.sh"}[self.name]
            subprocess.run(["bash", os.path.join(self.a.peers, "servers", script), "start"],
                           env=dict(os.environ, PEERS_RUN=self.work), check=True, capture_output=True)
        wait_answer(self.port)
        time.sleep(1)

    def pid(self):
        if self.proc:
            return self.proc.pid
        sub = {"nsd": "nsd/pid", "knot": "knot/pid", "bind-1": "bind/pid"}[self.name]
        with open(os.path.join(self.work, sub)) as f:
            return int(f.read())

    def stop(self):
        if self.proc:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=20)
            self.proc = None
        else:
            script = {"nsd": "nsd.sh", "knot": "knot.sh", "bind-1": "bind.sh"}[self.name]
            subprocess.run(["bash", os.path.join(self.a.peers, "servers", script), "stop"],
                           env=dict(os.environ, PEERS_RUN=self.work), capture_output=True)


def saturation(server, a):
    pid = server.pid()
    c0, t0 = cpu_seconds(pid), time.time()
    out = subprocess.run(dnsperf(server.port, a.queries, a.len, ["-c", "4", "-q", "300", "-Q", "1000000"]),
                         capture_output=True, text=True).stdout
    c1, t1 = cpu_seconds(pid), time.time()
    qps = qps_of(out)
    cpu = (c1 - c0) / (t1 - t0)
    return {"qps": qps, "lost": lost_of(out), "cpu": cpu, "qps_per_cpu": qps / max(cpu, 1e-9)}


def latency(server, a, rate):
    lat = probe_latencies(server.port, a.queries, a.len, rate)
    pick = lambda q: lat[min(len(lat) - 1, int(len(lat) * q))] * 1e3 if lat else float("nan")
    return {"p50_ms": pick(0.5), "p99_ms": pick(0.99), "p999_ms": pick(0.999)}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--len", type=int, default=10, help="seconds per dnsperf run")
    ap.add_argument("--only", default="mailns-1,mailns-2,mailns-8,nsd,knot,bind-1,bind-2")
    ap.add_argument("--peers", default=os.path.join(os.path.dirname(ROOT), "shared", "peers"))
    a = ap.parse_args()
    a.queries = os.path.join(a.peers, "queries.txt")
    for tool in ["dnsperf", "dig", "named", "nsd", "knotd"]:
        if not shutil.which(tool):
            sys.exit(f"{tool} is missing: apt-get install dnsperf bind9-dnsutils bind9 nsd knot")
    subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=ROOT, check=True)
    work = tempfile.mkdtemp(prefix="mailns-views-")
    shutil.copy(os.path.join(a.peers, "zone", f"{ZONE}.zone"), os.path.join(work, "bench.zone"))
    subprocess.run(["bash", os.path.join(a.peers, "servers", "tcp_up.sh"), "start"],
                   env=dict(os.environ, PEERS_RUN=work), check=True, capture_output=True)
    try:
        nsd = Server("nsd", a, work)
        nsd.start()
        rate = 0.5 * saturation(nsd, a)["qps"]
        nsd.stop()
        print(f"workdir {work}; calibration: latency runs at {rate:.0f} QPS (50 % of NSD's saturation)", flush=True)
        names = a.only.split(",")
        results = {n: [] for n in names}
        for rnd in range(1, a.rounds + 1):
            order = names if rnd % 2 else list(reversed(names))
            for n in order:
                s = Server(n, a, work)
                s.start()
                r = saturation(s, a)
                r.update(latency(s, a, rate))
                s.stop()
                results[n].append(r)
                print(f"round {rnd} {n:9s} qps {r['qps']:8.0f} (lost {r['lost']:.2f}%) cpu {r['cpu']*100:5.1f}% "
                      f"qps/cpu-s {r['qps_per_cpu']:8.0f} p50 {r['p50_ms']:.3f} p99 {r['p99_ms']:.3f} "
                      f"p99.9 {r['p999_ms']:.3f} ms", flush=True)
    finally:
        subprocess.run(["bash", os.path.join(a.peers, "servers", "tcp_up.sh"), "stop"],
                       env=dict(os.environ, PEERS_RUN=work), capture_output=True)
    med = {n: {k: statistics.median(x[k] for x in rs) for k in rs[0]} for n, rs in results.items()}
    spread = {n: (min(x["qps_per_cpu"] for x in rs), max(x["qps_per_cpu"] for x in rs)) for n, rs in results.items()}
    ref = med.get("mailns-1")
    print(f"\n| server | QPS | server CPU | QPS per server CPU-s (min-max) | vs mailns-1 | p50 / p99 / p99.9 ms @ {rate:.0f} QPS |")
    print("|---|---|---|---|---|---|")
    for n, m in med.items():
        lo, hi = spread[n]
        ratio = f"{m['qps_per_cpu']/ref['qps_per_cpu']:.2f}x" if ref else "-"
        print(f"| {n} | {m['qps']:.0f} | {m['cpu']*100:.0f} % | {m['qps_per_cpu']:.0f} ({lo:.0f}-{hi:.0f}) | {ratio} "
              f"| {m['p50_ms']:.3f} / {m['p99_ms']:.3f} / {m['p999_ms']:.3f} |")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
