"""Helpers shared by the benchmark scripts: CPU and memory of a process tree (from /proc), waiting
for a condition or a listening port, and the simulated CAS backend (backend.py)."""
import os, socket, subprocess, sys, time

HZ = os.sysconf("SC_CLK_TCK")
BENCH = os.path.dirname(os.path.abspath(__file__))


def process_tree(root):
    """root and every descendant, threads' children included."""
    pids, todo = [], [root]
    while todo:
        p = todo.pop()
        pids.append(p)
        try:
            for t in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{t}/children") as f:
                    todo.extend(int(x) for x in f.read().split())
        except OSError:
            pass
    return pids


def user_sys(root):
    """(utime, stime) of root's whole process tree, all threads, in seconds."""
    user = system = 0
    for p in process_tree(root):
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            user, system = user + int(fields[11]), system + int(fields[12])
        except OSError:
            pass
    return user / HZ, system / HZ


def cpu_seconds(root):
    """utime + stime of root's whole process tree, all threads, in seconds."""
    return sum(user_sys(root))


def rss_kb(root):
    """Resident memory of root's whole process tree, in kB."""
    total = 0
    for p in process_tree(root):
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total


def wait_until(pred, limit, step=0.01):
    """Seconds until pred() is true, or None after limit seconds."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < limit:
        if pred():
            return time.monotonic() - t0
        time.sleep(step)
    return None


def accepts(host, port):
    """True if host:port accepts a TCP connection."""
    try:
        socket.create_connection((host, port), 0.2).close()
        return True
    except OSError:
        return False


def start_backend(ip, port, countfile):
    """Starts bench/backend.py (a simulated CAS: HTTP healthcheck pages) on ip:port and waits until
    it accepts; it counts its accepted connections into countfile."""
    p = subprocess.Popen([sys.executable, os.path.join(BENCH, "backend.py"), ip, str(port), countfile])
    wait_until(lambda: accepts(ip, port), 2, 0.02)
    return p


def knot_conf(d, port, zone, module="", global_module=""):
    """A Knot 3.2 config serving `zone` from d/<zone>.zone on 127.0.0.1@port, as the peers' knot.sh
    does (udp-workers 2, no journal, no semantic checks); `module` and `global_module` are
    extra YAML lines (a mod-rrl section, say). Writes d/knot.conf and returns its path."""
    os.makedirs(os.path.join(d, "storage"), exist_ok=True)
    path = os.path.join(d, "knot.conf")
    with open(path, "w") as f:
        f.write(f"""server:
  rundir: "{d}"
  pidfile: "{d}/knot.pid"
  listen: 127.0.0.1@{port}
  udp-workers: 2
  tcp-workers: 1
  background-workers: 1
log:
  - target: stderr
    any: warning
database:
  storage: "{d}/storage"
{module}template:
  - id: default
    storage: "{d}"
    zonefile-sync: -1
    zonefile-load: whole
    journal-content: none
    semantic-checks: off
{global_module}zone:
  - domain: {zone}
    file: "{zone}.zone"
""")
    return path
