#!/usr/bin/env python3
"""L4 relay benchmark: mailns and HAProxy 2.6 `mode tcp` side by side, alternating, on loopback.

Per round:
  1. one iperf3 stream (10 s): direct to 127.0.1.1:5201, through HAProxy (7443), through mailns (7453);
  2. new connections per second: wrk -t1 -c50 --latency -H 'Connection: close' (one request per
     connection) to nginx on 127.0.1.1-2:8080: direct, HAProxy (7444), mailns (7454), with the
     relay's CPU, its user and system time per connection, and nginx's and wrk's CPU per
     connection (all three share the 2 cores);
  3. added latency at a fixed rate: examples/connlat.rs opens --rate new connections per second,
     open loop (each starts when due, whatever the others are doing), one request each, timed
     from when it was due to the server's close; a relay's added p50/p99 is its figure minus the
     direct one of the same round. (wrk's own latency figures are those of a saturated closed
     loop, so they are not used for this.)
  4. memory per idle relayed connection: N idle connections through each relay to nginx; the
     relay's RSS growth divided by N (HAProxy's maxconn is 5000, so N defaults to 4500).
Backends and HAProxy come from ../shared/peers/servers (iperf3.sh, nginx.sh, haproxy.sh copy).
Usage: bench/relay.py [--rounds 2] [--len 10] [--idle 4500] [--rate 2000] [--parts stream,conn,lat,idle]
Debian packages: haproxy iperf3 wrk nginx-light.
"""
import argparse, json, os, re, resource, shutil, signal, socket, statistics, subprocess, sys, tempfile, time

from benchlib import accepts, cpu_seconds as cpu, rss_kb, user_sys, wait_until

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def iperf(host, port, secs):
    out = subprocess.run(["iperf3", "-c", host, "-p", str(port), "-t", str(secs), "-J"], capture_output=True, text=True).stdout
    return json.loads(out)["end"]["sum_received"]["bits_per_second"] / 1e9


def wrk(url, secs, pid=None, backend=None):
    """Connection rate; with `pid` (the relay), its CPU share and its user and system time per
    connection; with `backend` (nginx's pid), nginx's and wrk's CPU per connection too: the
    three share the machine's 2 cores, so their sum bounds the rate."""
    c0, t0 = (cpu(pid), time.time()) if pid else (0, 0)
    us0 = user_sys(pid) if pid else (0, 0)
    b0 = sum(user_sys(backend)) if backend else 0
    k0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = subprocess.run(["wrk", "-t1", "-c50", f"-d{secs}s", "--latency", "-H", "Connection: close", url],
                         capture_output=True, text=True).stdout
    k1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    b1 = sum(user_sys(backend)) if backend else 0
    us1 = user_sys(pid) if pid else (0, 0)
    c1, t1 = (cpu(pid), time.time()) if pid else (0, 1)
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    n = int(re.search(r"(\d+) requests in", out).group(1))
    def lat(p):
        m = re.search(rf"\s{p}%\s+([\d.]+)(us|ms|s)", out)
        v, u = float(m.group(1)), m.group(2)
        return v / 1000 if u == "us" else v * 1000 if u == "s" else v
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)|Socket errors: (.*)", out)
    per = lambda secs: secs / n * 1e6
    return {"rps": rps, "p50": lat(50), "p99": lat(99), "cpu": (c1 - c0) / (t1 - t0) if pid else None,
            "user_us": per(us1[0] - us0[0]) if pid else None, "sys_us": per(us1[1] - us0[1]) if pid else None,
            "nginx_us": per(b1 - b0) if backend else None,
            "wrk_us": per(k1.ru_utime - k0.ru_utime + k1.ru_stime - k0.ru_stime),
            "errors": errors.group(0) if errors else ""}


def connlat(host, port, rate, secs):
    out = subprocess.run([os.path.join(ROOT, "target/release/examples/connlat"), f"{host}:{port}", "--rate", str(rate),
                          "--secs", str(secs)], capture_output=True, text=True, check=True).stdout
    j = json.loads(out)
    return {"lat50": j["p50_us"] / 1000, "lat99": j["p99_us"] / 1000, "lat_failed": j["failed"]}


def idle_memory(port, pid, n):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    time.sleep(1)
    before = rss_kb(pid)
    socks = []
    for _ in range(n):
        s = socket.socket()
        s.connect(("127.0.0.1", port))
        socks.append(s)
    time.sleep(3)
    after = rss_kb(pid)
    for s in socks:
        s.close()
    return (after - before) * 1024 / n


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--len", type=int, default=10)
    ap.add_argument("--idle", type=int, default=4500)
    ap.add_argument("--rate", type=int, default=2000, help="new connections per second for the latency part")
    ap.add_argument("--parts", default="stream,conn,lat,idle", help="which measurements: stream,conn,lat,idle")
    ap.add_argument("--peers", default=os.path.join(os.path.dirname(ROOT), "shared", "peers"))
    a = ap.parse_args()
    for t in ["haproxy", "iperf3", "wrk", "nginx"]:
        if not shutil.which(t) and not os.path.exists(f"/usr/sbin/{t}"):
            sys.exit(f"{t} missing: apt-get install haproxy iperf3 wrk nginx-light")
    subprocess.run(["cargo", "build", "--release", "--quiet", "--bin", "mailns", "--example", "connlat"], cwd=ROOT, check=True)
    work = tempfile.mkdtemp(prefix="mailns-relay-bench-")
    env = dict(os.environ, PEERS_RUN=work)
    peer = lambda *args: subprocess.run(["bash", os.path.join(a.peers, "servers", args[0])] + list(args[1:]),
                                        env=env, check=True, capture_output=True)
    open(os.path.join(work, "z.zone"), "w").write("$TTL 60\n@ SOA ns h 1 2 3 4 5\n@ NS ns\nns A 127.0.0.53\n")
    open(os.path.join(work, "mailns.toml"), "w").write("""[dns]
listen = ["127.0.0.1:5311"]
[[zone]]
name = "bench.test"
file = "z.zone"
[[server]]
name = "b1"
addresses = ["127.0.1.1"]
[[server]]
name = "b2"
addresses = ["127.0.1.2"]
[[relay]]
name = "iperf"
listen = ["127.0.0.1:7453"]
servers = ["b1", "b2"]
backend_port = 5201
[[relay]]
name = "http"
listen = ["127.0.0.1:7454"]
servers = ["b1", "b2"]
backend_port = 8080
balance = "round-robin"
max_connections = 20000
max_per_client = 20000
""")
    peer("iperf3.sh", "start"); peer("nginx.sh", "start")
    parts = set(a.parts.split(","))

    def measure(stream, http, pid):
        """The selected measurements through one path; `pid` is the relay's (None: direct)."""
        r = {"iperf": None, "rps": None, "p50": None, "p99": None, "cpu": None, "idle_bytes": None,
             "lat50": None, "lat99": None, "lat_failed": None}
        if "stream" in parts:
            r["iperf"] = iperf(*stream, a.len)
        if "conn" in parts:
            nginx = int(open(os.path.join(work, "nginx", "pid")).read())
            r.update(wrk(f"http://{http[0]}:{http[1]}/", a.len, pid, nginx))
        if "lat" in parts:
            r.update(connlat(*http, a.rate, a.len))
        if "idle" in parts and pid:
            r["idle_bytes"] = idle_memory(http[1], pid, a.idle)
        return r

    res = {}
    try:
        for rnd in range(1, a.rounds + 1):
            # HAProxy
            peer("haproxy.sh", "start", "copy")
            hpid = int(open(os.path.join(work, "haproxy", "pid")).read())
            r = measure(("127.0.0.1", 7443), ("127.0.0.1", 7444), hpid)
            peer("haproxy.sh", "stop")
            res.setdefault("haproxy", []).append(r)
            print(f"round {rnd} haproxy {r}", flush=True)
            # mailns
            m = subprocess.Popen([os.path.join(ROOT, "target/release/mailns"), "run", "--config", os.path.join(work, "mailns.toml")],
                                 env=dict(os.environ, RUST_LOG="warn"), stderr=subprocess.DEVNULL)
            wait_until(lambda: accepts("127.0.0.1", 7454), 5, 0.05)
            r = measure(("127.0.0.1", 7453), ("127.0.0.1", 7454), m.pid)
            m.send_signal(signal.SIGTERM); m.wait()
            res.setdefault("mailns", []).append(r)
            print(f"round {rnd} mailns  {r}", flush=True)
            # direct
            r = measure(("127.0.1.1", 5201), ("127.0.1.1", 8080), None)
            res.setdefault("direct", []).append(r)
            print(f"round {rnd} direct  {r}", flush=True)
    finally:
        subprocess.run(["bash", os.path.join(a.peers, "servers", "haproxy.sh"), "stop"], env=env, capture_output=True)
        peer("nginx.sh", "stop"); peer("iperf3.sh", "stop")
    med = lambda n, k: statistics.median(x[k] for x in res[n]) if res[n][0].get(k) is not None else None
    f = lambda v, fmt: "-" if v is None else format(v, fmt)
    ratio = lambda k: f(med("mailns", k) / med("haproxy", k), ".2f") if med("haproxy", k) else "-"
    def added(n, k):
        """Median over rounds of (relay - direct) for latency percentile k, same round."""
        if res[n][0].get(k) is None:
            return None
        return statistics.median(x[k] - d[k] for x, d in zip(res[n], res["direct"]))
    print(f"\n| path | one iperf3 stream Gbit/s | new conn/s (wrk, 1 req/conn) | wrk p50 / p99 ms (saturated) "
          f"| p50 / p99 ms at {a.rate}/s (added) | relay CPU | own memory per idle connection |")
    print("|---|---|---|---|---|---|---|")
    for n in ["direct", "haproxy", "mailns"]:
        c = med(n, "cpu")
        fixed = f"{f(med(n, 'lat50'), '.3f')} / {f(med(n, 'lat99'), '.3f')}"
        if n != "direct" and added(n, "lat50") is not None:
            fixed += f" (+{added(n, 'lat50'):.3f} / +{added(n, 'lat99'):.3f})"
        print(f"| {n} | {f(med(n, 'iperf'), '.1f')} | {f(med(n, 'rps'), '.0f')} | {f(med(n, 'p50'), '.2f')} / {f(med(n, 'p99'), '.2f')} | "
              f"{fixed} | {'-' if c is None else f'{c*100:.0f} %'} | {f(med(n, 'idle_bytes'), '.0f')} B |")
    cpu_per = lambda n: med(n, "cpu") / med(n, "rps") * 1e6 if med(n, "cpu") else None
    print(f"\nmailns / HAProxy: stream {ratio('iperf')}x, conn/s {ratio('rps')}x, "
          f"CPU per connection {f(cpu_per('mailns'), '.0f')} vs {f(cpu_per('haproxy'), '.0f')} us")
    if "conn" in parts:
        print("CPU per connection under wrk, medians (relay user + system; nginx; wrk): "
              + "; ".join(f"{n} {med(n, 'user_us'):.1f} + {med(n, 'sys_us'):.1f} us, nginx {med(n, 'nginx_us'):.1f} us, "
                          f"wrk {med(n, 'wrk_us'):.1f} us" for n in ["haproxy", "mailns"]))
    if "lat" in parts:
        print(f"added latency at {a.rate}/s, mailns / HAProxy: p50 {added('mailns', 'lat50') / added('haproxy', 'lat50'):.2f}x, "
              f"p99 {added('mailns', 'lat99') / added('haproxy', 'lat99'):.2f}x; failed connections: "
              + ", ".join(f"{n} {sum(x['lat_failed'] for x in res[n])}" for n in res))

if __name__ == "__main__":
    main()
