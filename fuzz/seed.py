#!/usr/bin/env python3
"""Captures real client traffic as fuzz seeds, into fuzz/seeds/<target>/ (then `cargo fuzz cmin`
minimises them into fuzz/corpus/<target>/; see FUZZING.md).

Capture servers listen on 127.0.0.1 (UDP and TCP, ports picked by the kernel); real clients talk
to them: dig and kdig with every common type and flag (UDP and TCP, AXFR, IXFR, NOTIFY-looking
and TSIG-signed queries), curl and openssl s_client ClientHellos,
curl's admin API requests. What each sends is saved as it
arrived. Small hand-made seeds cover what no client sends (NOTIFY replies, redirect requests,
configs from config/). Every client run is bounded by a timeout; nothing leaves 127.0.0.1.
"""
import hashlib, os, shutil, socket, struct, subprocess, sys, threading, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "fuzz", "seeds")
ZONE = "mail.example.test"


def save(target, data):
    d = os.path.join(OUT, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, hashlib.sha1(data).hexdigest()), "wb") as f:
        f.write(data)


class Capture:
    """UDP and TCP listeners on one port; keeps what arrives."""

    def __init__(self):
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.udp.bind(("127.0.0.1", 0))
        self.port = self.udp.getsockname()[1]
        self.tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.tcp.bind(("127.0.0.1", self.port))
        self.tcp.listen(64)
        self.datagrams, self.streams = [], []
        self.udp.settimeout(0.2)
        self.tcp.settimeout(0.2)
        self.stop = False
        threading.Thread(target=self.run_udp, daemon=True).start()
        threading.Thread(target=self.run_tcp, daemon=True).start()

    def run_udp(self):
        while not self.stop:
            try:
                data, peer = self.udp.recvfrom(65535)
            except socket.timeout:
                continue
            self.datagrams.append(data)
            if len(data) >= 12:  # a REFUSED reply with the ID, so the client stops at once
                self.udp.sendto(data[:2] + bytes([0x80 | (data[2] & 0x79), 0x05]) + b"\0" * 8, peer)

    def run_tcp(self):
        while not self.stop:
            try:
                c, _ = self.tcp.accept()
            except socket.timeout:
                continue
            threading.Thread(target=self.read_stream, args=(c,), daemon=True).start()

    def read_stream(self, c):
        c.settimeout(0.5)
        data = b""
        try:
            while len(data) < 65536:
                chunk = c.recv(65536)
                if not chunk:
                    break
                data += chunk
                # A complete DNS message: answer REFUSED so the client ends.
                if len(data) >= 2 and len(data) >= 2 + struct.unpack(">H", data[:2])[0] and data[2:3] != b"\x16":
                    msg = data[2:2 + struct.unpack(">H", data[:2])[0]]
                    if len(msg) >= 12:
                        reply = msg[:2] + bytes([0x80 | (msg[2] & 0x79), 0x05]) + b"\0" * 8
                        c.sendall(struct.pack(">H", len(reply)) + reply)
                    break
        except OSError:
            pass
        finally:
            c.close()
        if data:
            self.streams.append(data)


def run(cmd, timeout=5):
    try:
        subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=timeout)
    except (subprocess.TimeoutExpired, FileNotFoundError):
        pass


def dns_clients(cap):
    p = str(cap.port)
    names = [ZONE, "owa." + ZONE, "AutoDiscover." + ZONE, "_autodiscover._tcp." + ZONE, "x.wild." + ZONE,
             "chain1." + ZONE, "nx12345." + ZONE, "sub." + ZONE, "a.b.c.ent." + ZONE, "www.other.test", "."]
    types = ["A", "AAAA", "MX", "SRV", "TXT", "NS", "SOA", "CNAME", "ANY", "PTR", "CAA", "DS", "DNSKEY", "HTTPS", "TYPE65534"]
    flags = [[], ["+dnssec"], ["+noedns"], ["+bufsize=512"], ["+bufsize=4096"], ["+cookie"], ["+nsid"],
             ["+cd", "+adflag"], ["+norec"], ["+subnet=127.0.0.0/24"], ["+edns=1"], ["+ednsopt=65001:abcd"],
             ["+opcode=notify"], ["+opcode=update"], ["+header-only"], ["+qr"], ["+padding=128"], ["+expire"],
             ["+keepalive"]]
    jobs = []
    for i, name in enumerate(names):
        for j, t in enumerate(types):
            f = flags[(i * len(types) + j) % len(flags)]
            jobs.append(["dig", "@127.0.0.1", "-p", p, "+time=1", "+tries=1", name, t] + f)
    for f in flags:
        jobs.append(["dig", "@127.0.0.1", "-p", p, "+time=1", "+tries=1", "owa." + ZONE, "A"] + f)
        jobs.append(["kdig", "@127.0.0.1", "-p", p, "+time=1", "+retry=0", "owa." + ZONE, "A"] +
                    [x.replace("+bufsize", "+bufsize").replace("+opcode=notify", "+notify").replace("+adflag", "+ad")
                     for x in f if not x.startswith(("+subnet", "+header", "+qr", "+opcode=update", "+ednsopt"))])
    # Over TCP, transfers, and TSIG-signed.
    key = "hmac-sha256:xfr:" + "bWFpbG5zLWZ1enotdHJhbnNmZXIta2V5LTMyYnl0ZXM="
    for args in [["+tcp", "owa." + ZONE, "A"], ["+tcp", ZONE, "ANY"], [ZONE, "AXFR"], ["other.test", "AXFR", "-y", key],
                 [ZONE, "IXFR=2026120100"], ["+tcp", "+cookie", "owa." + ZONE, "AAAA"], ["+tcp", "+keepalive", ZONE, "SOA"],
                 ["+tcp", "-y", key, "other.test", "SOA"]]:
        jobs.append(["dig", "@127.0.0.1", "-p", p, "+time=1", "+tries=1"] + args)
    for args in [["+tcp", "owa." + ZONE], ["-t", "AXFR", ZONE], ["-t", "AXFR", "-y", key, "other.test"],
                 ["+tcp", "+cookie", "+nsid", ZONE, "SOA"]]:
        jobs.append(["kdig", "@127.0.0.1", "-p", p, "+time=1", "+retry=0"] + args)
    procs = []
    for cmd in jobs:
        try:
            procs.append(subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        except FileNotFoundError:
            pass
        if len(procs) >= 32:
            for pr in procs:
                pr.wait(timeout=10)
            procs = []
    for pr in procs:
        pr.wait(timeout=10)


def unbound_queries(cap):
    """unbound as a resolver with a stub zone on the capture port: its own queries (EDNS, DO, 0x20
    letter case, QNAME minimisation) arrive at the capture."""
    import tempfile
    d = tempfile.mkdtemp(prefix="mailns-seed-unbound-")
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    conf = os.path.join(d, "unbound.conf")
    with open(conf, "w") as f:
        f.write(f"""server:
  interface: 127.0.0.1@{port}
  port: {port}
  do-ip6: no
  username: ""
  chroot: ""
  directory: "{d}"
  pidfile: ""
  use-syslog: no
  do-not-query-localhost: no
  use-caps-for-id: yes
  qname-minimisation: yes
  module-config: "iterator"
  verbosity: 0
  local-zone: "test." nodefault
stub-zone:
  name: "{ZONE}"
  stub-addr: 127.0.0.1@{cap.port}
stub-zone:
  name: "other.test"
  stub-addr: 127.0.0.1@{cap.port}
""")
    try:
        proc = subprocess.Popen(["unbound", "-d", "-c", conf], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    except FileNotFoundError:
        return
    time.sleep(1)
    for name, t in [("owa." + ZONE, "A"), ("autodiscover." + ZONE, "AAAA"), (ZONE, "MX"),
                    ("_autodiscover._tcp." + ZONE, "SRV"), ("a.b.c.ent." + ZONE, "TXT"), ("www.other.test", "A")]:
        run(["dig", "@127.0.0.1", "-p", str(port), "+time=2", "+tries=1", name, t], timeout=4)
    proc.terminate()
    proc.wait(timeout=5)


def tls_clients():
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.bind(("127.0.0.1", 0))
    srv.listen(16)
    srv.settimeout(0.3)
    port = srv.getsockname()[1]
    hellos = []
    stop = [False]

    def accept():
        while not stop[0]:
            try:
                c, _ = srv.accept()
            except socket.timeout:
                continue
            c.settimeout(1)
            try:
                hellos.append(c.recv(16384))
            except OSError:
                pass
            c.close()

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    for name in ["owa." + ZONE, "autodiscover." + ZONE, "mail.example.test"]:
        run(["curl", "-sk", "--max-time", "2", "--resolve", f"{name}:{port}:127.0.0.1", f"https://{name}:{port}/owa/"])
        run(["curl", "-sk", "--max-time", "2", "--tlsv1.2", "--tls-max", "1.2", "--resolve", f"{name}:{port}:127.0.0.1",
             f"https://{name}:{port}/"])
    for args in [["-servername", "owa." + ZONE], ["-noservername"], ["-tls1_2", "-servername", "x.example.test"],
                 ["-tls1_3", "-servername", "autodiscover." + ZONE, "-alpn", "h2,http/1.1"]]:
        try:
            subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{port}"] + args, input=b"",
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=3)
        except subprocess.TimeoutExpired:
            pass
    time.sleep(0.5)
    stop[0] = True
    t.join()
    for h in hellos:
        if h:
            save("sni", h)
    save("sni", b"GET / HTTP/1.1\r\nHost: owa.mail.example.test\r\n\r\n")
    return len(hellos)


def admin_clients():
    """curl's admin API requests as they arrive (dashboard, status, metrics, reload, state changes,
    wrong tokens, rebinding Hosts), turned into admin_route's METHOD NUL target NUL headers NUL body."""
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.bind(("127.0.0.1", 0))
    srv.listen(16)
    srv.settimeout(0.2)
    port = srv.getsockname()[1]
    got, stop = [], [False]

    def accept():
        while not stop[0]:
            try:
                c, _ = srv.accept()
            except socket.timeout:
                continue
            c.settimeout(1)
            data = b""
            try:
                while b"\r\n\r\n" not in data:
                    chunk = c.recv(65536)
                    if not chunk:
                        break
                    data += chunk
                head, _, body = data.partition(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    k, _, v = line.partition(b":")
                    if k.strip().lower() == b"content-length":
                        length = int(v.strip() or 0)
                while len(body) < length:
                    chunk = c.recv(65536)
                    if not chunk:
                        break
                    body += chunk
                c.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
            except (socket.timeout, OSError, ValueError):
                pass
            c.close()
            got.append(data)

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    base = f"http://127.0.0.1:{port}"
    tok = ["-H", "Authorization: Bearer fuzz-Token-0123"]
    for args in [[base + "/"], [base + "/api/v1/status"], [base + "/metrics"], ["-I", base + "/livez"], [base + "/readyz"],
                 ["-X", "POST"] + tok + [base + "/api/v1/reload"],
                 ["-X", "POST", "-H", "Authorization: Bearer wrong", base + "/api/v1/reload"],
                 tok + ["--data", "drain", base + "/api/v1/servers/ex01/state"],
                 tok + ["--json", '{"state": "maint"}', base + "/api/v1/servers/ex02/state"],
                 tok + ["--data", "ready", base + "/api/v1/servers//state"],
                 ["-X", "PUT", base + "/api/v1/servers/ex01/state"],
                 ["-X", "POST", base + "/api/v1/demo/servers/ex01/fail-owa"],
                 ["-H", "Host: evil.example.test", base + "/api/v1/status"],
                 ["-H", "Host: mailns1.mail.example.test:8053", base + "/metrics"],
                 ["-H", "Host: [::1]:8053", base + "/nosuch?x=1"]]:
        run(["curl", "-s", "--max-time", "2", "-o", "/dev/null"] + args)
    time.sleep(0.3)
    stop[0] = True
    t.join()
    for data in got:
        head, _, body = data.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        parts = lines[0].split(b" ")
        if len(parts) >= 2:
            save("admin_route", parts[0] + b"\0" + parts[1] + b"\0" + b"\n".join(lines[1:]) + b"\0" + body)
    return len(got)


def handmade():
    # NOTIFY replies: QR=1, opcode NOTIFY, AA, one SOA question; and a REFUSED and a truncated one.
    q = b"".join(bytes([len(l)]) + l.encode() for l in ZONE.split(".")) + b"\0" + struct.pack(">HH", 6, 1)
    for flags in (0xA400, 0xA405, 0xA000, 0x2400):
        save("notify", struct.pack(">HHHHHH", 0x1234, flags, 1, 0, 0, 0) + q)
    save("notify", b"\x12\x34\xa4")
    for req in [b"GET\0owa.mail.example.test\0/owa/", b"HEAD\0autodiscover.contoso.test\0/autodiscover/autodiscover.xml",
                b"GET\0mail.example.test:80\0/", b"POST\0mail.example.test\0/", b"GET\0\0/",
                b"GET\0[::1]:80\0/ecp?x=1", b"GET\0owa.mail.example.test\0/a b"]:
        save("redirect", req)
    zones = os.path.join(ROOT, "zones")
    for dirpath, _, files in os.walk(zones):
        for fn in files:
            with open(os.path.join(dirpath, fn), "rb") as f:
                save("zone_file", f.read().replace(b"\0", b""))
    with open(os.path.join(ROOT, "fuzz", "src", "lib.rs")) as f:
        lib = f.read()
    for const in ("ZONE_MAIL", "ZONE_OTHER"):
        body = lib.split(f"pub const {const}: &str = r#\"", 1)[1].split('"#;', 1)[0]
        save("zone_file", body.replace("mail.example.test", "fuzz.test").replace("other.test", "fuzz.test").encode())
    save("zone_file", b"$ORIGIN fuzz.test.\n$TTL 60\n@ SOA ns hm 1 2 3 4 5\n@ NS ns\nns A 127.0.0.1\n"
                      b"$INCLUDE inc.zone sub.fuzz.test.\n\0inc.zone\0@ A 127.0.0.2\nwww CNAME @\n")
    save("zone_file", b"$TTL 60\n@ SOA ns hm ( 1 2\n 3 4 5 )\n@ NS ns\n$INCLUDE loop.zone\n\0loop.zone\0$INCLUDE loop.zone\n")
    cfg = os.path.join(ROOT, "config")
    for dirpath, _, files in os.walk(cfg):
        for fn in files:
            if fn.endswith(".toml"):
                with open(os.path.join(dirpath, fn), "rb") as f:
                    save("config", f.read())


def main():
    shutil.rmtree(OUT, ignore_errors=True)
    cap = Capture()
    dns_clients(cap)
    unbound_queries(cap)
    time.sleep(0.5)
    cap.stop = True
    for d in cap.datagrams:
        save("dns_udp", d)
    for s in cap.streams:
        save("dns_tcp", s)
        if len(s) > 2:
            msg = s[2:2 + struct.unpack(">H", s[:2])[0]]
            save("dns_udp", msg)
            save("xfr", b"\0" + msg)
    for mode in range(1, 8):
        for b in range(4):
            save("xfr", bytes([mode, 0, b, b]))
    n = tls_clients()
    a = admin_clients()
    handmade()
    counts = {t: len(os.listdir(os.path.join(OUT, t))) for t in sorted(os.listdir(OUT))}
    print(f"captured {len(cap.datagrams)} datagrams, {len(cap.streams)} TCP streams, {n} TLS hellos, {a} admin requests; seeds: {counts}")


if __name__ == "__main__":
    main()
