"""TLS checks a Kafka client library would hide, made with Python's ssl module on raw sockets
against kelp's TLS listener.

    tls_checks.py plaintext HOST:PORT       a plaintext ApiVersions request gets no Kafka answer
    tls_checks.py wrong-ca HOST:PORT CA     verifying kelp against a CA that did not sign its
                                            certificate fails the handshake
    tls_checks.py silent HOST:PORT MS       a connection that starts no handshake is closed at
                                            --auth-timeout-ms (MS)
    tls_checks.py reload HOST:PORT CA DIR PID LOG SHARDS
                                            SIGHUP with new certificate files (DIR/server-2.pem
                                            and .key moved over DIR/server.pem and .key): a
                                            connection made before keeps working, a new one
                                            gets the new certificate
    tls_checks.py principal HOST:PORT CA CERT KEY OTHER_CERT OTHER_KEY
                                            on an SSL listener with --tls-client-ca and
                                            --super-users naming CERT's subject: CERT's holder
                                            may describe SCRAM credentials, OTHER_CERT's may not
                                            (confluent-kafka's admin client)

Prints one `RESULT|kelp|<scenario>|pass-or-fail|detail` line.
"""

import os
import signal
import socket
import ssl
import struct
import sys
import time

CORRELATION_ID = 0x6B656C70


def addr(hostport):
    host, port = hostport.rsplit(":", 1)
    return host, int(port)


def api_versions_v0():
    client_id = b"tls-checks"
    body = struct.pack(">hhih", 18, 0, CORRELATION_ID, len(client_id)) + client_id
    return struct.pack(">i", len(body)) + body


def read_exactly(sock, n, deadline):
    out = b""
    while len(out) < n:
        sock.settimeout(max(0.1, deadline - time.monotonic()))
        chunk = sock.recv(n - len(out))
        if not chunk:
            break
        out += chunk
    return out


def api_versions_answered(sock):
    """Sends ApiVersions v0; whether a well-formed answer to it comes back."""
    sock.sendall(api_versions_v0())
    deadline = time.monotonic() + 10
    head = read_exactly(sock, 8, deadline)
    if len(head) < 8:
        return False
    length, correlation = struct.unpack(">ii", head)
    body = read_exactly(sock, length - 4, deadline)
    error_code = struct.unpack(">h", body[:2])[0] if len(body) >= 2 else -1
    return correlation == CORRELATION_ID and error_code == 0


def tls_context(ca):
    ctx = ssl.create_default_context(cafile=ca)
    ctx.check_hostname = True
    return ctx


def tls_connect(hostport, ca):
    host, port = addr(hostport)
    raw = socket.create_connection((host, port), timeout=10)
    return tls_context(ca).wrap_socket(raw, server_hostname=host)


def serial(sock):
    der = sock.getpeercert(binary_form=True)
    return sock.getpeercert()["serialNumber"], len(der)


def plaintext(hostport):
    s = socket.create_connection(addr(hostport), timeout=10)
    s.sendall(api_versions_v0())
    got = b""
    deadline = time.monotonic() + 10
    try:
        while time.monotonic() < deadline:
            s.settimeout(max(0.1, deadline - time.monotonic()))
            chunk = s.recv(4096)
            if not chunk:
                break
            got += chunk
    except (ConnectionResetError, socket.timeout):
        pass
    if len(got) >= 8 and struct.unpack(">i", got[4:8])[0] == CORRELATION_ID:
        return "fail", f"a plaintext ApiVersions was answered: {got[:16].hex()}"
    # What a TLS server says to a non-TLS peer, if anything, is an alert record (type 21).
    said = f"a TLS alert ({got[:7].hex()})" if got[:1] == b"\x15" else f"{len(got)} bytes"
    return "pass", f"no Kafka answer to plaintext; got {said}, then the connection closed"


def wrong_ca(hostport, ca):
    try:
        s = tls_connect(hostport, ca)
        s.close()
        return "fail", "the handshake succeeded against a CA that did not sign kelp's certificate"
    except ssl.SSLCertVerificationError as e:
        return "pass", f"handshake refused by the client: {e.verify_message}"


def silent(hostport, ms):
    s = socket.create_connection(addr(hostport))
    t0 = time.monotonic()
    s.settimeout(ms / 1000 + 10)
    try:
        data = s.recv(1)
    except ConnectionResetError:
        data = b""
    except socket.timeout:
        return "fail", f"still open {time.monotonic() - t0:.1f}s later"
    took = time.monotonic() - t0
    if data:
        return "fail", f"kelp sent {data!r} to a silent client"
    if not (ms / 1000 - 0.1 <= took <= ms / 1000 + 5):
        return "fail", f"closed after {took:.1f}s, --auth-timeout-ms {ms}"
    return "pass", f"closed after {took:.1f}s without a handshake (--auth-timeout-ms {ms})"


def reload(hostport, ca, cert_dir, pid, log, shards):
    before = tls_connect(hostport, ca)
    old = serial(before)
    for ext in ("pem", "key"):
        os.replace(os.path.join(cert_dir, f"server-2.{ext}"),
                   os.path.join(cert_dir, f"server.{ext}"))
    os.kill(pid, signal.SIGHUP)
    deadline = time.monotonic() + 30
    while True:
        with open(log, errors="replace") as f:
            took = f.read().count("new TLS connections use the certificate as read again")
        if took >= shards:
            break
        if time.monotonic() > deadline:
            return "fail", f"{took} of {shards} shards took the new certificate within 30 s"
        time.sleep(0.1)
    after = tls_connect(hostport, ca)
    new = serial(after)
    if new[0] == old[0]:
        return "fail", f"a new connection still gets serial {old[0]}"
    if not api_versions_answered(before):
        return "fail", "the connection made before the reload was not served after it"
    if not api_versions_answered(after):
        return "fail", "a connection made after the reload was not served"
    before.close()
    after.close()
    return "pass", (f"serial {old[0]} before SIGHUP, {new[0]} after; the connection made "
                    "before goes on being served")


def principal(hostport, ca, cert, key, other_cert, other_key):
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient

    def describe_as(c, k):
        a = AdminClient({"bootstrap.servers": hostport, "security.protocol": "SSL",
                         "ssl.ca.location": ca, "ssl.certificate.location": c,
                         "ssl.key.location": k})
        # A user named: refused, the error is in its result (see kelp's auth/admin.rs).
        try:
            a.describe_user_scram_credentials(["nobody"])["nobody"].result(timeout=30)
            return "NONE"
        except KafkaException as e:
            return e.args[0].name()

    mine, theirs = describe_as(cert, key), describe_as(other_cert, other_key)
    if (mine, theirs) != ("RESOURCE_NOT_FOUND", "CLUSTER_AUTHORIZATION_FAILED"):
        return "fail", f"the super user's certificate got {mine}, another's got {theirs}"
    return "pass", ("the certificate named in --super-users may describe credentials "
                    f"({mine} for an unknown user), another certificate of the same CA may not ({theirs})")


def main():
    scenario, hostport, *rest = sys.argv[1:]
    checks = {
        "plaintext": lambda: plaintext(hostport),
        "wrong-ca": lambda: wrong_ca(hostport, rest[0]),
        "silent": lambda: silent(hostport, int(rest[0])),
        "reload": lambda: reload(hostport, rest[0], rest[1], int(rest[2]), rest[3], int(rest[4])),
        "principal": lambda: principal(hostport, *rest),
    }
    try:
        status, detail = checks[scenario]()
    except Exception as e:  # noqa: BLE001 - any surprise is this scenario's failure
        status, detail = "fail", f"{type(e).__name__}: {e}"
    name = {"plaintext": "tls-plaintext-client-refused", "wrong-ca": "tls-verified",
            "silent": "tls-handshake-timeout", "reload": "tls-sighup-reload",
            "principal": "mtls-principal"}[scenario]
    print(f"RESULT|kelp|{name}|{status}|{detail}".replace("\n", " "), flush=True)


if __name__ == "__main__":
    main()
