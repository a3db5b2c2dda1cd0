#!/usr/bin/env python3
"""Round trips on one connection, closed loop: ApiVersions v0 requests, each sent when the last
answer is in, over plaintext or TLS (Python's ssl module, verifying kelp's certificate).

    rtt-probe.py --bootstrap HOST:PORT [--ca CA.pem] [--count N] [--label L]

What it measures is the broker's cost per request with as little client in the way as a
scripted client allows; beside a Kafka client library's figures it tells the broker's share from
the library's. Prints one JSON object: percentiles in microseconds over all but the first 10%.
"""

import argparse
import json
import socket
import ssl
import struct
import sys
import time


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--ca", help="verify a TLS listener's certificate against this CA")
    ap.add_argument("--count", type=int, default=20000)
    ap.add_argument("--label", default="")
    args = ap.parse_args()
    host, port = args.bootstrap.rsplit(":", 1)
    sock = socket.create_connection((host, int(port)), timeout=10)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if args.ca:
        sock = ssl.create_default_context(cafile=args.ca).wrap_socket(sock, server_hostname=host)
    client_id = b"rtt-probe"

    def read_exactly(n):
        out = b""
        while len(out) < n:
            chunk = sock.recv(n - len(out))
            if not chunk:
                raise ConnectionError("closed by the broker")
            out += chunk
        return out

    latencies = []
    for i in range(args.count):
        body = struct.pack(">hhih", 18, 0, i, len(client_id)) + client_id
        t0 = time.perf_counter()
        sock.sendall(struct.pack(">i", len(body)) + body)
        length, correlation = struct.unpack(">ii", read_exactly(8))
        read_exactly(length - 4)
        latencies.append((time.perf_counter() - t0) * 1e6)
        if correlation != i:
            raise SystemExit(f"answer {correlation} to request {i}")
    measured = sorted(latencies[args.count // 10:])

    def pct(q):
        return measured[min(len(measured) - 1, int(q / 100 * len(measured)))]

    out = {"label": args.label, "client": "python socket/ssl, ApiVersions closed loop",
           "records": len(measured), "p50_us": pct(50), "p99_us": pct(99)}
    json.dump(out, sys.stdout)
    print()
    print(f"rtt-probe {args.label}: p50 {out['p50_us']:.0f} us, p99 {out['p99_us']:.0f} us",
          file=sys.stderr)


if __name__ == "__main__":
    main()
