"""Hostile clients for spec/emulator_abuse_spec.lua (issue 8 point 5), one attack per run:

    python3 abuse.py ATTACK PORT CA_FILE HOLD_SECONDS

The attack is put in place, then one line {"ready": true, ...} is printed; its connections are held
for HOLD_SECONDS while the spec's normal client works; then one line {"done": true, ...} with what
the attacker saw. Connections come from 127.0.0.2 (the server's per-address limit is the
attacker's; the normal client is 127.0.0.1). Every wait is bounded.
"""
import json
import resource
import socket
import ssl
import sys
import time

ATTACK, PORT, CA, HOLD = sys.argv[1], int(sys.argv[2]), sys.argv[3], float(sys.argv[4])
SOURCE = ("127.0.0.2", 0)


def out(**kv):
    sys.stdout.write(json.dumps(kv) + "\n")
    sys.stdout.flush()


def tcp(timeout=5):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(timeout)
    s.bind(SOURCE)
    s.connect(("127.0.0.1", PORT))
    return s


def tls(timeout=5, ctx=None):
    if ctx is None:
        ctx = ssl.create_default_context(cafile=CA)
        ctx.check_hostname = False
    return ctx.wrap_socket(tcp(timeout), server_hostname="localhost")


def read_answer(s, limit=10):
    """Everything the server sends until it closes or goes quiet (bounded): (bytes, seconds)."""
    t0, data = time.time(), b""
    s.settimeout(1)
    while time.time() - t0 < limit:
        try:
            d = s.recv(65536)
        except socket.timeout:
            if data:
                break
            continue
        except (ConnectionError, ssl.SSLError, OSError):
            break
        if not d:
            break
        data += d
    return data, time.time() - t0


def answer_info(data, seconds):
    text = data.decode("latin1")
    head, _, body = text.partition("\r\n\r\n")
    return {"status_lines": text.count("HTTP/1.1 "), "status": head[9:12] if head.startswith("HTTP/") else "",
            "body": body[:500], "seconds": round(seconds, 3)}


def one_request(raw, body_stream=None):
    s = tls()
    t0 = time.time()
    s.sendall(raw)
    if body_stream:
        try:
            for chunk in body_stream:
                s.sendall(chunk)
        except (ConnectionError, ssl.SSLError, OSError):
            pass
    data, _ = read_answer(s)
    s.close()
    return answer_info(data, time.time() - t0)


def hold():
    time.sleep(HOLD)


def idle(n):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, n + 64)), hard))
    socks, refused, t0 = [], 0, time.time()
    for _ in range(n):
        try:
            socks.append(tcp(2))
        except OSError:
            refused += 1
    # a connection over the limit is closed by the server at once: it reads as EOF or a reset
    time.sleep(0.5)
    open_ = []
    for s in socks:
        s.setblocking(False)
        try:
            d = s.recv(1)
            if d == b"":
                refused += 1
                s.close()
                continue
        except BlockingIOError:
            pass
        except OSError:
            refused += 1
            s.close()
            continue
        open_.append(s)
    out(ready=True, held=len(open_), refused=refused, seconds=round(time.time() - t0, 3))
    hold()
    for s in open_:
        s.close()
    out(done=True)


def slow(n):
    socks = []
    for _ in range(n):
        s = tls()
        s.sendall(b"GET /_emulator/health HTTP/1.1\r\nHost: x\r\n")
        socks.append(s)
    out(ready=True, held=len(socks))
    t_end, closed = time.time() + HOLD, 0
    while time.time() < t_end:
        for s in list(socks):
            try:
                s.sendall(b"X-a: b\r\n")  # a header line at a time, never the end of the headers
            except (ConnectionError, ssl.SSLError, OSError):
                socks.remove(s)
                closed += 1
        time.sleep(1)
    for s in socks:
        s.close()
    out(done=True, closed_by_server=closed)


def big_body(chunked):
    total = 60 << 20
    chunk = b"[" + b"0," * (1 << 15) + b"0]"

    def stream():
        sent = 0
        while sent < total:
            if chunked:
                yield b"%x\r\n" % len(chunk) + chunk + b"\r\n"
            else:
                yield chunk
            sent += len(chunk)
        if chunked:
            yield b"0\r\n\r\n"

    head = b"PUT /_emulator/knobs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    head += b"Transfer-Encoding: chunked\r\n\r\n" if chunked else b"Content-Length: %d\r\n\r\n" % total
    info = one_request(head, stream())
    out(ready=True, **info)
    hold()
    out(done=True)


def many_bodies(n):
    """n connections each declaring a 4 MiB body and sending it slowly: together past the budget."""
    socks, statuses = [], []
    for _ in range(n):
        s = tls()
        s.sendall(b"PUT /_emulator/knobs HTTP/1.1\r\nHost: x\r\nContent-Length: 4000000\r\n\r\n{")
        socks.append(s)
    time.sleep(0.5)
    for s in socks:
        s.setblocking(False)
        try:
            d = s.recv(4096)
            statuses.append(d[9:12].decode() if d.startswith(b"HTTP/") else "closed")
        except (BlockingIOError, ssl.SSLWantReadError):
            statuses.append("pending")
        except OSError:
            statuses.append("closed")
    out(ready=True, statuses=statuses)
    hold()
    for s in socks:
        s.close()
    out(done=True)


def single(raw):
    info = one_request(raw)
    out(ready=True, **info)
    hold()
    out(done=True)


def old_tls(version):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    try:
        ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
    except ssl.SSLError:
        pass
    ctx.minimum_version = version
    ctx.maximum_version = version
    try:
        s = tls(5, ctx)
        result = {"handshake": "ok", "version": s.version()}
        s.close()
    except (ssl.SSLError, OSError) as e:
        result = {"handshake": "refused", "error": str(e)[:200]}
    out(ready=True, **result)
    hold()
    out(done=True)


ATTACKS = {
    "idle": lambda: idle(1030),
    "slow": lambda: slow(50),
    "big_body": lambda: big_body(False),
    "big_chunked_body": lambda: big_body(True),
    "many_bodies": lambda: many_bodies(12),
    "bad_content_length": lambda: single(b"PUT /_emulator/knobs HTTP/1.1\r\nHost: x\r\nContent-Length: 12abc\r\n\r\n{}"),
    "gzip": lambda: single(b"PUT /_emulator/knobs HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n{}"),
    "nul_path": lambda: single(b"GET /_emulator/health%00/../../x HTTP/1.1\r\nHost: x\r\n\r\n"),
    "tls1_0": lambda: old_tls(ssl.TLSVersion.TLSv1),
    "tls1_1": lambda: old_tls(ssl.TLSVersion.TLSv1_1),
    "tls1_2": lambda: old_tls(ssl.TLSVersion.TLSv1_2),
}

ATTACKS[ATTACK]()
