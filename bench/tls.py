#!/usr/bin/env python3
"""TLS offload, mailns vs HAProxy 2.6, on loopback, alternating in one run.

Both terminate TLS with the same certificate and relay the decrypted bytes to the same nginx
(127.0.1.1:8081) without parsing HTTP: mailns `tls = "offload"`, HAProxy `mode tcp` with
`bind ... ssl` (session cache and tickets off, so every handshake is a full one).

Per round, for an ECDSA P-256 and an RSA 2048 certificate:
  1. full handshakes per second: two `openssl s_time -new` clients in parallel for --len s (a new
     session each time, nothing resumed), with the server's CPU per handshake;
  2. one long download through each (curl, a 1 GiB file from nginx), in Gbit/s.
Usage: bench/tls.py [--rounds 2] [--len 10]
Debian packages: haproxy nginx-light openssl curl.
"""
import argparse, os, re, signal, statistics, subprocess, sys, tempfile, time

from benchlib import accepts, cpu_seconds as cpu, wait_until

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BACKEND = ("127.0.1.1", 8081)


def sh(*args, **kw):
    return subprocess.run(args, check=True, capture_output=True, text=True, **kw)


def make_cert(work, kind):
    key, crt = os.path.join(work, f"{kind}.key"), os.path.join(work, f"{kind}.pem")
    newkey = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"] if kind == "ecdsa" else ["-newkey", "rsa:2048"]
    sh("openssl", "req", "-x509", *newkey, "-nodes", "-keyout", key, "-out", crt, "-days", "30",
       "-subj", "/CN=owa.mail.example.test", "-addext", "subjectAltName=DNS:owa.mail.example.test")
    both = os.path.join(work, f"{kind}.both.pem")
    open(both, "w").write(open(crt).read() + open(key).read())
    return crt, key, both


def nginx(work):
    big = os.path.join(work, "big.bin")
    with open(big, "wb") as f:
        f.truncate(1 << 30)
    conf = os.path.join(work, "nginx.conf")
    open(conf, "w").write(f"""worker_processes 2;
daemon off;
pid {work}/nginx.pid;
error_log {work}/nginx-error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  sendfile on;
  client_body_temp_path {work}; proxy_temp_path {work}; fastcgi_temp_path {work}; uwsgi_temp_path {work}; scgi_temp_path {work};
  server {{
    listen {BACKEND[0]}:{BACKEND[1]};
    location = /big {{ alias {big}; }}
    location / {{ return 200 "ok\\n"; }}
  }}
}}
""")
    p = subprocess.Popen(["nginx", "-c", conf, "-p", work], stderr=subprocess.DEVNULL)
    wait_until(lambda: accepts(*BACKEND), 5, 0.05)
    return p


def haproxy(work, both, port):
    cfg = os.path.join(work, f"haproxy-{port}.cfg")
    open(cfg, "w").write(f"""global
  nbthread 2
  maxconn 5000
  tune.ssl.cachesize 0
  ssl-default-bind-options no-tls-tickets
defaults
  mode tcp
  timeout connect 2s
  timeout client 30s
  timeout server 30s
frontend fe
  bind 127.0.0.1:{port} ssl crt {both}
  default_backend be
backend be
  server b1 {BACKEND[0]}:{BACKEND[1]}
""")
    p = subprocess.Popen(["haproxy", "-db", "-f", cfg], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_until(lambda: accepts("127.0.0.1", port), 5, 0.05)
    return p


def mailns(work, crt, key, port):
    open(os.path.join(work, "z.zone"), "w").write("$TTL 60\n@ SOA ns h 1 2 3 4 5\n@ NS ns\nns A 127.0.0.53\n")
    cfg = os.path.join(work, f"mailns-{port}.toml")
    open(cfg, "w").write(f"""[dns]
listen = ["127.0.0.1:0"]
[[zone]]
name = "mail.example.test"
file = "z.zone"
[[server]]
name = "b1"
addresses = ["{BACKEND[0]}"]
[[relay]]
name = "owa"
listen = ["127.0.0.1:{port}"]
servers = ["b1"]
backend_port = {BACKEND[1]}
tls = "offload"
certificates = [{{ cert = "{crt}", key = "{key}" }}]
max_connections = 20000
max_per_client = 20000
""")
    p = subprocess.Popen([os.path.join(ROOT, "target/release/mailns"), "run", "--config", cfg],
                         env=dict(os.environ, RUST_LOG="error"), stderr=subprocess.DEVNULL)
    wait_until(lambda: accepts("127.0.0.1", port), 5, 0.05)
    return p


def handshakes(port, secs, pid):
    c0, t0 = cpu(pid), time.time()
    procs = [subprocess.Popen(["openssl", "s_time", "-connect", f"127.0.0.1:{port}", "-new", "-time", str(secs)],
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True) for _ in range(2)]
    total = 0
    for p in procs:
        out = p.communicate()[0]
        m = re.search(r"(\d+) connections in ([\d.]+)s", out) or re.search(r"(\d+) connections in (\d+) real", out)
        total += int(m.group(1)) if m else 0
    c1, t1 = cpu(pid), time.time()
    rate = total / secs
    return rate, (c1 - c0) / max(total, 1) * 1e6


def download(port):
    out = sh("curl", "-sk", "-o", "/dev/null", "-w", "%{speed_download}",
             "--resolve", f"owa.mail.example.test:{port}:127.0.0.1", f"https://owa.mail.example.test:{port}/big").stdout
    return float(out) * 8 / 1e9


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--len", type=int, default=10)
    a = ap.parse_args()
    for t in ["haproxy", "nginx", "openssl", "curl"]:
        if not any(os.path.exists(os.path.join(d, t)) for d in os.environ["PATH"].split(":") + ["/usr/sbin"]):
            sys.exit(f"{t} missing: apt-get install haproxy nginx-light openssl curl")
    subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=ROOT, check=True)
    work = tempfile.mkdtemp(prefix="mailns-tls-bench-")
    certs = {k: make_cert(work, k) for k in ["ecdsa", "rsa"]}
    web = nginx(work)
    res = {}
    try:
        for rnd in range(1, a.rounds + 1):
            for kind, (crt, key, both) in certs.items():
                for name, start in [("haproxy", lambda: haproxy(work, both, 7471)),
                                    ("mailns", lambda: mailns(work, crt, key, 7472))]:
                    port = 7471 if name == "haproxy" else 7472
                    p = start()
                    try:
                        rate, us = handshakes(port, a.len, p.pid)
                        gbit = download(port)
                    finally:
                        p.send_signal(signal.SIGTERM)
                        p.wait()
                    res.setdefault((name, kind), []).append((rate, us, gbit))
                    print(f"round {rnd} {kind} {name}: {rate:.0f} handshakes/s, {us:.0f} us CPU each, download {gbit:.2f} Gbit/s", flush=True)
    finally:
        web.send_signal(signal.SIGTERM)
        web.wait()
    med = lambda n, k, i: statistics.median(x[i] for x in res[(n, k)])
    print("\n| certificate | relay | full handshakes/s | server CPU per handshake | one download Gbit/s |")
    print("|---|---|---|---|---|")
    for kind in certs:
        for n in ["haproxy", "mailns"]:
            print(f"| {kind} | {n} | {med(n, kind, 0):.0f} | {med(n, kind, 1):.0f} µs | {med(n, kind, 2):.2f} |")
    for kind in certs:
        print(f"{kind}: mailns / HAProxy handshakes {med('mailns', kind, 0) / med('haproxy', kind, 0):.2f}x, "
              f"CPU per handshake {med('mailns', kind, 1) / med('haproxy', kind, 1):.2f}x, "
              f"download {med('mailns', kind, 2) / med('haproxy', kind, 2):.2f}x")


if __name__ == "__main__":
    main()
