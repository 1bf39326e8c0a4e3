#!/usr/bin/env python3
"""Relay failover, mailns vs HAProxy 2.6, on loopback:

1. 200 new connections per second for 10 s through each relay to two backends (bench/backend.py,
   HTTP on 127.0.1.1-2:8090), open loop: each connection starts on schedule whatever the others
   do, and fails if no "HTTP/1.1 200" arrives within 2 s. 3 s in, one backend fails:
   --mode kill: the process is killed (its port refuses connections);
   --mode stop: the process is SIGSTOPped (the kernel still accepts; nothing answers).
   Both relays check GET /owa/healthcheck.htm every 1 s and mark a backend down after 2 failures;
   HAProxy runs with and without `option redispatch` (retry on another server).
2. Every backend killed: 200 connections, each timed from connect() to the relay closing it
   (EOF). A relay must refuse, not hang, so the client moves on at once.
Usage: bench/relay_failover.py [--rate 200] [--secs 10] [--mode kill|stop]
"""
import argparse, asyncio, os, signal, socket, statistics, subprocess, tempfile, time

from benchlib import start_backend, wait_until

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BACKENDS = ["127.0.1.1", "127.0.1.2"]
PORT = 8090
REQ = b"GET /owa/healthcheck.htm HTTP/1.1\r\nHost: owa.mail.example.test\r\nConnection: close\r\n\r\n"


def one(port):
    try:
        s = socket.create_connection(("127.0.0.1", port), 2)
        s.settimeout(2)
        s.sendall(REQ)
        data = s.recv(64)
        s.close()
        return data.startswith(b"HTTP/1.1 200")
    except OSError:
        return False


async def one_async(port):
    try:
        r, w = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 2)
        try:
            w.write(REQ)
            data = await asyncio.wait_for(r.read(64), 2)
            return data.startswith(b"HTTP/1.1 200")
        finally:
            w.close()
    except (OSError, asyncio.TimeoutError):
        return False


def run_rate(port, rate, secs, fail):
    """Open loop: connection i starts at i/rate s; `fail` runs 3 s in. Returns (failed, total)."""
    async def go():
        t0 = time.monotonic()
        tasks, failed_at = [], None
        for i in range(rate * secs):
            at = t0 + i / rate
            if failed_at is None and at - t0 >= 3:
                fail()
                failed_at = time.monotonic()
            await asyncio.sleep(max(0, at - time.monotonic()))
            tasks.append(asyncio.ensure_future(one_async(port)))
        results = await asyncio.gather(*tasks)
        return sum(not ok for ok in results), len(results)
    return asyncio.run(go())


def refusal_ms(port, n=200):
    out = []
    for _ in range(n):
        t = time.perf_counter()
        try:
            s = socket.create_connection(("127.0.0.1", port), 2)
            s.settimeout(2)
            s.recv(16)
            s.close()
        except OSError:
            pass
        out.append((time.perf_counter() - t) * 1000)
    out.sort()
    return statistics.median(out), out[int(len(out) * 0.99) - 1]


def haproxy_cfg(work, port, redispatch):
    path = os.path.join(work, f"haproxy-{port}.cfg")
    servers = "\n".join(f"  server b{i} {ip}:{PORT} check inter 1s fall 2 rise 2" for i, ip in enumerate(BACKENDS))
    # The same check as mailns's: the healthcheck page, 200 expected.
    open(path, "w").write(f"""global
  nbthread 2
  maxconn 5000
defaults
  mode tcp
  timeout connect 1s
  timeout client 30s
  timeout server 30s
  {"option redispatch" if redispatch else ""}
  {"retries 2" if redispatch else ""}
frontend fe
  bind 127.0.0.1:{port}
  default_backend be
backend be
  balance roundrobin
  option httpchk GET /owa/healthcheck.htm
  http-check expect status 200
{servers}
""")
    return subprocess.Popen(["haproxy", "-db", "-f", path], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def mailns(work, port):
    open(os.path.join(work, "z.zone"), "w").write("$TTL 60\n@ SOA ns h 1 2 3 4 5\n@ NS ns\nns A 127.0.0.53\n")
    cfg = os.path.join(work, "mailns.toml")
    open(cfg, "w").write(f"""[dns]
listen = ["127.0.0.1:5312"]
[health]
interval = "1s"
fall = 2
rise = 2
[[zone]]
name = "bench.test"
file = "z.zone"
[[server]]
name = "b1"
addresses = ["{BACKENDS[0]}"]
[[server]]
name = "b2"
addresses = ["{BACKENDS[1]}"]
[[check]]
name = "owa"
kind = "http"
port = {PORT}
path = "/owa/healthcheck.htm"
[[relay]]
name = "r"
listen = ["127.0.0.1:{port}"]
servers = ["b1", "b2"]
backend_port = {PORT}
balance = "round-robin"
checks = ["owa"]
""")
    return subprocess.Popen([os.path.join(ROOT, "target/release/mailns"), "run", "--config", cfg],
                            env=dict(os.environ, RUST_LOG="warn"), stderr=subprocess.DEVNULL)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rate", type=int, default=200)
    ap.add_argument("--secs", type=int, default=10)
    ap.add_argument("--mode", choices=["kill", "stop"], default="kill")
    a = ap.parse_args()
    subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=ROOT, check=True)
    work = tempfile.mkdtemp(prefix="mailns-failover-")
    rows = []
    for name, port, start in [
        ("mailns (default: retries 2)", 7461, lambda w, p: mailns(w, p)),
        ("HAProxy", 7462, lambda w, p: haproxy_cfg(w, p, False)),
        ("HAProxy + option redispatch", 7463, lambda w, p: haproxy_cfg(w, p, True)),
    ]:
        procs = {ip: start_backend(ip, PORT, os.path.join(work, f"c-{ip}")) for ip in BACKENDS}
        relay = start(work, port)
        wait_until(lambda: one(port), 5, 0.05)
        time.sleep(2.5)  # both backends checked up
        victim = procs[BACKENDS[1]]
        fail = (lambda: (victim.kill(), victim.wait())) if a.mode == "kill" else (lambda: victim.send_signal(signal.SIGSTOP))
        fails, total = run_rate(port, a.rate, a.secs, fail)
        for p in procs.values():
            p.kill(); p.wait()
        time.sleep(3)  # every backend down and detected
        p50, p99 = refusal_ms(port)
        relay.send_signal(signal.SIGTERM); relay.wait()
        rows.append((name, fails, total, p50, p99))
        print(f"{name}: {fails} of {total} requests failed ({100 * fails / total:.1f} %); all down: closed after {p50:.2f} ms median, {p99:.2f} ms p99", flush=True)
    print(f"\n| relay | failed requests, one of two backends failed ({a.mode}) at {a.rate} conn/s | all down: client closed after, median / p99 |")
    print("|---|---|---|")
    for name, f, t, p50, p99 in rows:
        print(f"| {name} | {f} of {t} ({100 * f / t:.1f} %) | {p50:.2f} / {p99:.2f} ms |")


if __name__ == "__main__":
    main()
