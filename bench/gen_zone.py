#!/usr/bin/env python3
"""Writes a large mail.example.test zone and dnsperf query files, to show that a miss costs the
same on a big zone as on a small one (hickory's in-memory store scans the whole zone per miss).

Usage: bench/gen_zone.py --hosts 100000 --out DIR
Writes DIR/big.zone (SOA, NS, MX, owa/autodiscover and N host records on 127.x addresses),
DIR/nx.txt (NXDOMAIN names only) and DIR/nodata.txt (existing names, a type they lack).
Then: bench/dns.py --only mailns,nsd --zone DIR/big.zone --queries DIR/nx.txt
"""
import argparse, os, random

ap = argparse.ArgumentParser()
ap.add_argument("--hosts", type=int, default=100000)
ap.add_argument("--out", required=True)
a = ap.parse_args()
os.makedirs(a.out, exist_ok=True)
rnd = random.Random(20261121)
with open(os.path.join(a.out, "big.zone"), "w") as f:
    f.write("$ORIGIN mail.example.test.\n$TTL 300\n")
    f.write("@ SOA ns1 hostmaster 1 3600 900 1209600 60\n@ NS ns1\n@ NS ns2\nns1 A 127.0.0.53\nns2 A 127.0.0.54\n")
    f.write("@ MX 10 mx1\nmx1 A 127.0.2.1\n")
    for i in (1, 2, 3):
        f.write(f"owa 30 A 127.0.1.{i}\nautodiscover 30 A 127.0.1.{i}\n")
    for i in range(a.hosts):
        f.write(f"host{i} A 127.{1 + i // 65536 % 254}.{i // 256 % 256}.{i % 256}\n")
with open(os.path.join(a.out, "nx.txt"), "w") as f:
    for _ in range(10000):
        f.write(f"nx{rnd.randrange(10**9)}.mail.example.test A\n")
with open(os.path.join(a.out, "nodata.txt"), "w") as f:
    for _ in range(10000):
        f.write(f"host{rnd.randrange(a.hosts)}.mail.example.test MX\n")
