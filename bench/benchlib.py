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
