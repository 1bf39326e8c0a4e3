#!/usr/bin/env python3
"""Failure detection time: how long from a server failing until the DNS answers leave it out, and
from its return until they include it again. mailns and PowerDNS 4.7 (LUA ifportup, selector
'all') watch the same three simulated CAS servers, so each injected failure is measured on both.

Failures (target 127.0.1.2):
  closed  - the server process is killed: its port refuses connections;
  dropped - packets to it are silently dropped (iptables DROP);
  hung    - the process is stopped (SIGSTOP): the kernel still accepts connections, nothing answers.
Each mode runs --trials times, at a random phase relative to the probe schedules.

It re-runs itself in a private network namespace (unshare -n) with its own loopback, so the DROP
rule and port 443 touch nothing else on the machine. Needs root, iptables, pdns-server,
pdns-backend-bind. Usage: bench/detect.py [--trials 20] [--modes closed,dropped,hung]
"""
import argparse, os, random, signal, socket, statistics, struct, subprocess, sys, tempfile, time

from benchlib import start_backend, wait_until

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PEERS = os.path.join(os.path.dirname(ROOT), "shared", "peers")
SERVERS = ["127.0.1.1", "127.0.1.2", "127.0.1.3"]
TARGET = "127.0.1.2"
MAILNS_PORT, PDNS_PORT = 5310, 5308
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

    def conns(self, ip):
        try:
            return int(open(os.path.join(self.work, f"conns-{ip}")).read() or 0)
        except (OSError, ValueError):
            return 0


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
    with open(os.path.join(work, "mailns.toml"), "w") as f:
        f.write(f"""[dns]
listen = ["127.0.0.1:{MAILNS_PORT}"]
[[zone]]
name = "mail.example.test"
file = "z.zone"
# mailns's default timing: interval 2 s, timeout 1.5 s, rise 2, fall 2, fast re-probe 0.5 s, sentinels on.
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
    # Probe and connection rate with mailns alone (20 s), then with PowerDNS alone.
    mailns = subprocess.Popen([os.path.join(ROOT, "target/release/mailns"), "run", "--config", os.path.join(work, "mailns.toml")],
                              env=dict(os.environ, RUST_LOG="warn"), stderr=open(os.path.join(work, "mailns.log"), "w"))
    wait_until(lambda: query(MAILNS_PORT) == set(SERVERS), 10)
    c0 = [b.conns(ip) for ip in SERVERS]; time.sleep(20); c1 = [b.conns(ip) for ip in SERVERS]
    mailns_rate = statistics.mean((y - x) / 20 for x, y in zip(c0, c1))
    env = dict(os.environ, PEERS_RUN=work)
    subprocess.run(["bash", os.path.join(PEERS, "servers", "pdns.sh"), "start", "lua-all"], env=env, check=True, capture_output=True)
    wait_until(lambda: query(PDNS_PORT) == set(SERVERS), 15)
    c0 = [b.conns(ip) for ip in SERVERS]; time.sleep(20); c1 = [b.conns(ip) for ip in SERVERS]
    pdns_rate = statistics.mean((y - x) / 20 for x, y in zip(c0, c1)) - mailns_rate
    print(f"connections per second per server: mailns {mailns_rate:.2f}, PowerDNS {pdns_rate:.2f}", flush=True)

    servers = {"mailns": MAILNS_PORT, "pdns": PDNS_PORT}
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
