#!/usr/bin/env python3
"""Failure detection time: how long from a server failing until the DNS answers leave it out, and
from its return until they include it again. mailns, PowerDNS 4.7 (LUA ifportup, selector 'all')
and gdnsd 3.8 (DYNA multifo, tcp_connect monitoring) watch the same three simulated CAS servers,
so each injected failure is measured on all three. First it measures what each prober costs a
server (new connections and requests per second, counted at the simulated servers), for mailns
with idle sentinels (heartbeat = "0s") and with its default heartbeat.

Failures (target 127.0.1.2):
  closed  - the server process is killed: its port refuses connections;
  dropped - packets to it are silently dropped (iptables DROP);
  hung    - the process is stopped (SIGSTOP): the kernel still accepts connections, nothing answers.
Each mode runs --trials times, at a random phase relative to the probe schedules.

It re-runs itself in a private network namespace (unshare -n) with its own loopback, so the DROP
rule and port 443 touch nothing else on the machine. Needs root, iptables, pdns-server,
pdns-backend-bind, gdnsd. Usage: bench/detect.py [--trials 20] [--modes closed,dropped,hung]
"""
import argparse, os, random, signal, socket, statistics, struct, subprocess, sys, tempfile, time

from benchlib import start_backend, wait_until

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PEERS = os.path.join(os.path.dirname(ROOT), "shared", "peers")
SERVERS = ["127.0.1.1", "127.0.1.2", "127.0.1.3"]
TARGET = "127.0.1.2"
MAILNS_PORT, PDNS_PORT, GDNSD_PORT = 5310, 5308, 5309
NEVER = 12.0  # seconds after which a failure counts as not detected (PowerDNS checks every 5 s)


def query(port, name="owa.mail.example.test"):
    """A addresses answered by 127.0.0.1:port for name (raw UDP, no EDNS)."""
    qid = random.randrange(65536)
    q = struct.pack(">HHHHHH", qid, 0, 1, 0, 0, 0)
    for label in name.split("."):
        q += bytes([len(label)]) + label.encode()
    q += b"\x00" + struct.pack(">HH", 1, 1)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(0.5)
    try:
        s.sendto(q, ("127.0.0.1", port))
        r, _ = s.recvfrom(4096)
    except OSError:
        return None
    finally:
        s.close()
    an = struct.unpack(">H", r[6:8])[0]
    i = 12
    while r[i]:
        i += r[i] + 1
    i += 5
    out = set()
    for _ in range(an):
        if r[i] & 0xC0:
            i += 2
        else:
            while r[i]:
                i += r[i] + 1
            i += 1
        rtype, _, _, rdlen = struct.unpack(">HHIH", r[i:i + 10])
        i += 10
        if rtype == 1:
            out.add(socket.inet_ntoa(r[i:i + 4]))
        i += rdlen
    return out


class Backends:
    def __init__(self, work):
        self.work, self.procs = work, {}

    def start(self, ip):
        self.procs[ip] = start_backend(ip, 443, os.path.join(self.work, f"conns-{ip}"))

    def conns(self, ip, suffix=""):
        try:
            return int(open(os.path.join(self.work, f"conns-{ip}{suffix}")).read() or 0)
        except (OSError, ValueError):
            return 0

    def load(self, secs=20):
        """(new connections, requests) per second per server over secs, averaged over the servers."""
        c0 = [(self.conns(ip), self.conns(ip, ".req")) for ip in SERVERS]
        time.sleep(secs)
        c1 = [(self.conns(ip), self.conns(ip, ".req")) for ip in SERVERS]
        return (statistics.mean((b[0] - a[0]) / secs for a, b in zip(c0, c1)),
                statistics.mean((b[1] - a[1]) / secs for a, b in zip(c0, c1)))


def time_until(servers, pred, limit):
    """Seconds until each server's answer satisfies pred (None: not within limit), polling every 5 ms."""
    t0 = time.monotonic()
    out = {n: None for n in servers}
    while time.monotonic() - t0 < limit and any(v is None for v in out.values()):
        for n, p in servers.items():
            if out[n] is None:
                got = query(p)
                if got is not None and pred(got):
                    out[n] = time.monotonic() - t0
        time.sleep(0.005)
    return out


def inner(a):
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    work = tempfile.mkdtemp(prefix="mailns-detect-")
    b = Backends(work)
    for ip in SERVERS:
        b.start(ip)
    zone = open(os.path.join(PEERS, "zone", "mail.example.test.zone")).read()
    open(os.path.join(work, "z.zone"), "w").write(zone)
    def start_mailns(heartbeat):
        with open(os.path.join(work, "mailns.toml"), "w") as f:
            f.write(f"""[dns]
listen = ["127.0.0.1:{MAILNS_PORT}"]
[health]
{heartbeat}
[[zone]]
name = "mail.example.test"
file = "z.zone"
# mailns's default timing: interval 2 s, timeout 1.5 s, rise 2, fall 2, fast re-probe 0.5 s,
# sentinels on, heartbeat every 500 ms.
[[check]]
name = "owa"
kind = "http"
port = 443
path = "/owa/healthcheck.htm"
host = "owa.mail.example.test"
[[service]]
name = "owa.mail.example.test"
checks = ["owa"]
""")
        p = subprocess.Popen([os.path.join(ROOT, "target/release/mailns"), "run", "--config", os.path.join(work, "mailns.toml")],
                             env=dict(os.environ, RUST_LOG="warn"), stderr=open(os.path.join(work, "mailns.log"), "a"))
        wait_until(lambda: query(MAILNS_PORT) == set(SERVERS), 10)
        return p

    # What each prober costs a server, measured alone (20 s each).
    loads = {}
    idle = start_mailns('heartbeat = "0s"')
    loads["mailns, idle sentinels (heartbeat = \"0s\")"] = b.load()
    idle.terminate(); idle.wait()
    mailns = start_mailns("")
    loads["mailns (heartbeat 500 ms, the default)"] = b.load()
    mailns_load = loads["mailns (heartbeat 500 ms, the default)"]
    env = dict(os.environ, PEERS_RUN=work)
    for name, script, variant, port in [("PowerDNS ifportup", "pdns.sh", "lua-all", PDNS_PORT),
                                        ("gdnsd tcp_connect", "gdnsd.sh", "dyna", GDNSD_PORT)]:
        subprocess.run(["bash", os.path.join(PEERS, "servers", script), "start", variant], env=env, check=True, capture_output=True)
        wait_until(lambda: query(port) == set(SERVERS), 15)
        both = b.load()
        loads[name] = (both[0] - mailns_load[0], both[1] - mailns_load[1])
        if script == "gdnsd.sh":
            continue
        subprocess.run(["bash", os.path.join(PEERS, "servers", script), "stop", variant], env=env, capture_output=True)
    subprocess.run(["bash", os.path.join(PEERS, "servers", "pdns.sh"), "start", "lua-all"], env=env, check=True, capture_output=True)
    print("\n| prober | new connections / s per server | requests / s per server |\n|---|---|---|")
    for name, (c, r) in loads.items():
        print(f"| {name} | {c:.2f} | {r:.2f} |")
    print(flush=True)

    servers = {"mailns": MAILNS_PORT, "pdns": PDNS_PORT, "gdnsd": GDNSD_PORT}
    results = {}
    for mode in a.modes.split(","):
        for trial in range(a.trials):
            # Steady state, then a random phase.
            for p in servers.values():
                wait_until(lambda: query(p) == set(SERVERS), 30)
            time.sleep(random.uniform(0.5, 2.5))
            pid = b.procs[TARGET].pid
            if mode == "closed":
                b.procs[TARGET].kill(); b.procs[TARGET].wait()
            elif mode == "dropped":
                subprocess.run(["iptables", "-I", "INPUT", "-d", TARGET, "-j", "DROP"], check=True)
            elif mode == "hung":
                os.kill(pid, signal.SIGSTOP)
            gone = time_until(servers, lambda got: TARGET not in got, NEVER)
            if mode == "closed":
                b.start(TARGET)
            elif mode == "dropped":
                subprocess.run(["iptables", "-D", "INPUT", "-d", TARGET, "-j", "DROP"], check=True)
            elif mode == "hung":
                os.kill(pid, signal.SIGCONT)
            back = time_until(servers, lambda got: TARGET in got, 20)
            for n in servers:
                results.setdefault((mode, n), []).append((gone[n], back[n]))
            fmt = lambda v: "never" if v is None else f"{v:.2f}"
            print(f"{mode:8s} trial {trial + 1:2d}: " + "  ".join(
                f"{n} detect {fmt(gone[n])} s recover {fmt(back[n])} s" for n in servers), flush=True)
    print("\n| failure | server | detected: median / max s | recovered: median / max s | not detected within 12 s |")
    print("|---|---|---|---|---|")
    for (mode, n), rs in results.items():
        det = sorted(g for g, _ in rs if g is not None)
        rec = sorted(r for _, r in rs if r is not None)
        med = lambda v: f"{statistics.median(v):.2f} / {max(v):.2f}" if v else "-"
        print(f"| {mode} | {n} | {med(det)} | {med(rec)} | {len(rs) - len(det)} of {len(rs)} |")
    subprocess.run(["bash", os.path.join(PEERS, "servers", "pdns.sh"), "stop", "lua-all"], env=env, capture_output=True)
    subprocess.run(["bash", os.path.join(PEERS, "servers", "gdnsd.sh"), "stop", "dyna"], env=env, capture_output=True)
    mailns.terminate(); mailns.wait()
    for p in b.procs.values():
        try:
            os.kill(p.pid, signal.SIGCONT); p.kill()
        except OSError:
            pass


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, default=20)
    ap.add_argument("--modes", default="closed,dropped,hung")
    ap.add_argument("--inner", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.inner:
        return inner(a)
    subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=ROOT, check=True)
    os.execvp("unshare", ["unshare", "-n", sys.executable, os.path.abspath(__file__), "--inner",
                          "--trials", str(a.trials), "--modes", a.modes])


if __name__ == "__main__":
    main()
