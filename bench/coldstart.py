#!/usr/bin/env python3
"""Cold start and reload on a big zone: mailns beside Knot, on loopback.

The zone: 100,000 host records (A) plus 50 service names with 3 addresses each (and the SOA,
NS, MX). mailns health-checks the 50 names (a tcp check on port 443 of 127.0.1.1-3; this script
listens on the first two only), so its start includes the first probe round and the snapshot
that follows: "health applied" is when the service names answer the 2 healthy addresses.

Per round, for each server in turn (the order reversed every other round):
  start   time from spawning the server to its first answer for a host at the end of the zone
          (mailns: also to "mailns ready", which waits for the first probe round, and to every
          service name answered from health);
  reload  the zone file rewritten with a new serial and one changed host; time from the reload
          command (mailns: SIGHUP; Knot: knotc zone-reload) to the new answer;
  rss     resident memory once loaded.
Reports medians with the min-max spread. Every address is 127.0.0.1 or 127.0.1.1-3.

Usage: bench/coldstart.py [--rounds 3] [--hosts 100000] [--services 50] [--only mailns,knot]
"""
import argparse, os, shutil, signal, socket, statistics, subprocess, sys, tempfile, threading, time

from benchlib import knot_conf, rss_kb

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MAILNS_PORT, KNOT_PORT = 5320, 5321
ORIGIN = "big.example.test"


def write_zone(path, hosts, services, serial, changed):
    """The zone; host0 answers 127.0.0.(changed) so a reload shows."""
    with open(path, "w") as f:
        f.write(f"$ORIGIN {ORIGIN}.\n$TTL 300\n@ SOA ns1 hostmaster {serial} 3600 900 1209600 60\n")
        f.write("@ NS ns1\nns1 A 127.0.0.53\n@ MX 10 svc0\n")
        for s in range(services):
            for i in (1, 2, 3):
                f.write(f"svc{s} 30 A 127.0.1.{i}\n")
        f.write(f"host0 A 127.0.0.{changed}\n")
        for h in range(1, hosts):
            f.write(f"host{h} A 127.{2 + h // 65536 % 250}.{h // 256 % 256}.{h % 256}\n")


def mailns_config(path, services):
    with open(path, "w") as f:
        f.write(f'[dns]\nlisten = ["127.0.0.1:{MAILNS_PORT}"]\n\n[[zone]]\nname = "{ORIGIN}"\nfile = "big.zone"\n\n')
        f.write(f'[admin]\nlisten = "127.0.0.1:{MAILNS_PORT + 1000}"\n\n')
        f.write('[[check]]\nname = "https-port"\nkind = "tcp"\nport = 443\n\n')
        for s in range(services):
            f.write(f'[[service]]\nname = "svc{s}.{ORIGIN}"\nchecks = ["https-port"]\n\n')


def dig(port, name, timeout=1):
    r = subprocess.run(["dig", "+short", "+norec", "+time=1", "+tries=1", "-p", str(port), "@127.0.0.1", name, "A"],
                       capture_output=True, text=True, timeout=timeout + 5)
    # +short prints errors (a timeout) on stdout too: only addresses count.
    return [w for w in r.stdout.split() if w.count(".") == 3 and w.replace(".", "").isdigit()]


def wait(pred, limit):
    end = time.monotonic() + limit
    while time.monotonic() < end:
        if pred():
            return time.monotonic()
        time.sleep(0.005)
    sys.exit("timed out")


def listen_443():
    """TCP 443 on 127.0.1.1-2, accepting and closing: what the tcp checks probe (127.0.1.3
    refuses, so it fails its check)."""
    socks = []
    for i in (1, 2):
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((f"127.0.1.{i}", 443))
        s.listen(128)
        socks.append(s)

    def serve(s):
        while True:
            try:
                c, _ = s.accept()
                c.close()
            except OSError:
                return
    for s in socks:
        threading.Thread(target=serve, args=(s,), daemon=True).start()
    return socks


def run_mailns(work, a, serial):
    write_zone(os.path.join(work, "big.zone"), a.hosts, a.services, serial, 1)
    log = open(os.path.join(work, "mailns.log"), "w+")
    t0 = time.monotonic()
    p = subprocess.Popen([os.path.join(ROOT, "target/release/mailns"), "run", "--config", os.path.join(work, "mailns.toml")],
                         stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        last = f"host{a.hosts - 1}.{ORIGIN}"
        first = wait(lambda: dig(MAILNS_PORT, last) != [], 120) - t0
        ready = wait(lambda: "mailns ready" in open(log.name).read(), 120) - t0
        # Health-driven: the first and the last service name answer their 2 healthy addresses.
        healthy = wait(lambda: all(len(dig(MAILNS_PORT, f"svc{s}.{ORIGIN}")) == 2 for s in (0, a.services - 1)), 120) - t0
        rss = rss_kb(p.pid) / 1024
        write_zone(os.path.join(work, "big.zone"), a.hosts, a.services, serial + 1, 2)
        t1 = time.monotonic()
        os.kill(p.pid, signal.SIGHUP)
        reload = wait(lambda: dig(MAILNS_PORT, f"host0.{ORIGIN}") == ["127.0.0.2"], 120) - t1
        return {"first answer": first, "ready": ready, "health applied": healthy, "reload": reload, "rss MiB": rss}
    finally:
        os.killpg(p.pid, signal.SIGTERM)
        p.wait(timeout=30)


def run_knot(work, a, serial):
    d = os.path.join(work, "knot")
    os.makedirs(d, exist_ok=True)
    write_zone(os.path.join(d, f"{ORIGIN}.zone"), a.hosts, a.services, serial, 1)
    conf = knot_conf(d, KNOT_PORT, ORIGIN)
    t0 = time.monotonic()
    p = subprocess.Popen(["knotd", "-c", conf], stdout=subprocess.DEVNULL, stderr=open(os.path.join(d, "log"), "w"),
                         start_new_session=True)
    try:
        last = f"host{a.hosts - 1}.{ORIGIN}"
        first = wait(lambda: dig(KNOT_PORT, last) != [], 120) - t0
        rss = rss_kb(p.pid) / 1024
        write_zone(os.path.join(d, f"{ORIGIN}.zone"), a.hosts, a.services, serial + 1, 2)
        t1 = time.monotonic()
        r = subprocess.run(["knotc", "-c", conf, "zone-reload", ORIGIN], capture_output=True, text=True)
        if r.returncode:
            sys.exit(f"knotc zone-reload: {r.stdout}{r.stderr}")
        reload = wait(lambda: dig(KNOT_PORT, f"host0.{ORIGIN}") == ["127.0.0.2"], 120) - t1
        return {"first answer": first, "reload": reload, "rss MiB": rss}
    finally:
        os.killpg(p.pid, signal.SIGTERM)
        p.wait(timeout=30)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--hosts", type=int, default=100000)
    ap.add_argument("--services", type=int, default=50)
    ap.add_argument("--only", default="mailns,knot")
    a = ap.parse_args()
    for tool in ["dig", "knotd", "knotc"]:
        if not shutil.which(tool):
            sys.exit(f"{tool} is missing: apt-get install bind9-dnsutils knot")
    subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=ROOT, check=True)
    work = tempfile.mkdtemp(prefix="mailns-coldstart-")
    mailns_config(os.path.join(work, "mailns.toml"), a.services)
    socks = listen_443()
    names = a.only.split(",")
    runs = {n: [] for n in names}
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    print(f"commit {commit}; {a.hosts} hosts + {a.services} service names x 3 addresses; {a.rounds} rounds", flush=True)
    for rnd in range(1, a.rounds + 1):
        for n in (names if rnd % 2 else list(reversed(names))):
            r = (run_mailns if n == "mailns" else run_knot)(work, a, 1000 * rnd)
            runs[n].append(r)
            print(f"round {rnd} {n:7s} " + " ".join(f"{k} {v:.3f}" for k, v in r.items()), flush=True)
    print("\n| server | measure | median | min-max |\n|---|---|---|---|")
    for n in names:
        for k in runs[n][0]:
            v = [r[k] for r in runs[n]]
            unit = "" if k == "rss MiB" else " s"
            print(f"| {n} | {k} | {statistics.median(v):.3f}{unit} | {min(v):.3f}-{max(v):.3f} |")
    for s in socks:
        s.close()
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
