"""SASL on a SASL_PLAINTEXT or SASL_SSL listener with two independent client
implementations: confluent-kafka (librdkafka, C, with its own OpenSSL) and kafka-python (pure
Python, the ssl module).

For each client and mechanism (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512): produce records as the
user and read them back. Then, per client: a wrong password fails fast with an authentication
error, and a client that does not authenticate gets no metadata at all.

Environment: KELP_BOOTSTRAP (the SASL listener), KELP_SASL_USER, KELP_SASL_PASSWORD;
KELP_SECURITY_PROTOCOL (SASL_PLAINTEXT, the default, or SASL_SSL) and, for SASL_SSL,
KELP_TLS_CA (the PEM of the CA that signed kelp's certificate: clients verify it).
Prints one `RESULT|client|scenario|pass-or-fail|detail` line per scenario.
"""

import os
import sys
import time
import uuid

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "interop", "python"))

from interop_common import Fail, Reporter  # noqa: E402

BOOTSTRAP = os.environ["KELP_BOOTSTRAP"]
USER = os.environ["KELP_SASL_USER"]
PASSWORD = os.environ["KELP_SASL_PASSWORD"]
MECHS = ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]
PROTOCOL = os.environ.get("KELP_SECURITY_PROTOCOL", "SASL_PLAINTEXT")
TLS = PROTOCOL == "SASL_SSL"
CA = os.environ.get("KELP_TLS_CA")
if TLS and not CA:
    sys.exit("KELP_SECURITY_PROTOCOL=SASL_SSL needs KELP_TLS_CA")
# The scenarios' names say which listener they ran on.
TAG = "sasl-ssl" if TLS else "sasl"
RECORDS = 50
# A wrong password must be refused well before a client's own timeouts would hide it.
FAIL_FAST_S = 10.0


# ---- confluent-kafka (librdkafka) ---------------------------------------------------------

def ck_conf(mech, password=PASSWORD, sasl=True):
    conf = {"bootstrap.servers": BOOTSTRAP, "socket.timeout.ms": 10000}
    if TLS:
        # Verified against the test's CA, host name included (kelp's certificate names
        # 127.0.0.1).
        conf.update({"security.protocol": "SSL", "ssl.ca.location": CA,
                     "ssl.endpoint.identification.algorithm": "https"})
    if sasl:
        conf.update({"security.protocol": PROTOCOL, "sasl.mechanism": mech,
                     "sasl.username": USER, "sasl.password": password})
    return conf


def ck_roundtrip(mech):
    from confluent_kafka import Consumer, Producer, TopicPartition
    topic = f"sasl-ck-{mech.lower()}-{uuid.uuid4().hex[:8]}"
    p = Producer({**ck_conf(mech), "enable.idempotence": True})
    errors = []
    for i in range(RECORDS):
        p.produce(topic, value=f"{mech}-{i}".encode(),
                  on_delivery=lambda err, _m: err and errors.append(err))
    left = p.flush(30)
    if left or errors:
        raise Fail(f"{left} undelivered, errors {errors[:3]}")
    c = Consumer({**ck_conf(mech), "group.id": f"{topic}-g", "auto.offset.reset": "earliest"})
    try:
        c.assign([TopicPartition(topic, 0, 0)])
        got = []
        deadline = time.monotonic() + 60
        while len(got) < RECORDS and time.monotonic() < deadline:
            for m in c.consume(100, timeout=1.0):
                if m.error():
                    raise Fail(f"consume error: {m.error()}")
                got.append(m.value().decode())
        want = [f"{mech}-{i}" for i in range(RECORDS)]
        if got != want:
            raise Fail(f"read {len(got)} records, first {got[:3]}; wanted {want[:3]}...")
    finally:
        c.close()
    return f"{RECORDS} records produced (idempotent) and read back as {USER} over {mech}"


def ck_wrong_password():
    from confluent_kafka import KafkaError, Producer
    errors = []
    p = Producer({**ck_conf("SCRAM-SHA-512", password=PASSWORD + "-wrong"),
                  "error_cb": errors.append})
    t0 = time.monotonic()
    p.produce("sasl-wrong-password", value=b"must not be stored")
    while time.monotonic() - t0 < FAIL_FAST_S:
        p.poll(0.2)
        auth = [x for x in errors if x.code() == KafkaError._AUTHENTICATION]
        if auth:
            left = len(p)
            p.purge()
            return (f"refused in {time.monotonic() - t0:.1f}s ({left} record held back): "
                    f"{auth[0].str()[:160]}")
    raise Fail(f"no authentication error within {FAIL_FAST_S:.0f}s (errors {errors[:3]})")


def ck_no_sasl():
    from confluent_kafka.admin import AdminClient
    from confluent_kafka import KafkaException
    a = AdminClient(ck_conf(None, sasl=False))
    try:
        md = a.list_topics(timeout=5)
        raise Fail(f"a client without SASL got metadata: {len(md.topics)} topics")
    except KafkaException as e:
        return f"no metadata without a login ({e.args[0].str()[:100]})"


# ---- kafka-python (pure Python) -----------------------------------------------------------

def kp_conf(mech, password=PASSWORD):
    conf = {"bootstrap_servers": BOOTSTRAP, "security_protocol": PROTOCOL,
            "sasl_mechanism": mech, "sasl_plain_username": USER,
            "sasl_plain_password": password}
    if TLS:
        conf.update({"ssl_cafile": CA, "ssl_check_hostname": True})
    return conf


def kp_roundtrip(mech):
    from kafka import KafkaConsumer, KafkaProducer, TopicPartition
    topic = f"sasl-kp-{mech.lower()}-{uuid.uuid4().hex[:8]}"
    p = KafkaProducer(**kp_conf(mech), acks="all")
    try:
        futures = [p.send(topic, value=f"{mech}-{i}".encode(), partition=0)
                   for i in range(RECORDS)]
        offsets = [f.get(timeout=30).offset for f in futures]
    finally:
        p.close()
    if offsets != list(range(RECORDS)):
        raise Fail(f"acknowledged at offsets {offsets[:5]}...")
    c = KafkaConsumer(**kp_conf(mech), auto_offset_reset="earliest",
                      enable_auto_commit=False, consumer_timeout_ms=10000)
    try:
        tp = TopicPartition(topic, 0)
        c.assign([tp])
        c.seek(tp, 0)
        got = []
        for m in c:
            got.append(m.value.decode())
            if len(got) == RECORDS:
                break
    finally:
        c.close()
    want = [f"{mech}-{i}" for i in range(RECORDS)]
    if got != want:
        raise Fail(f"read {len(got)} records, first {got[:3]}")
    return f"{RECORDS} records produced and read back as {USER} over {mech}"


def kp_wrong_password():
    import logging
    from kafka import KafkaProducer
    from kafka.errors import KafkaError

    class Seen(logging.Handler):
        def __init__(self):
            super().__init__()
            self.lines = []

        def emit(self, record):
            self.lines.append((time.monotonic(), record.getMessage()))

    seen = Seen()
    logging.getLogger("kafka").addHandler(seen)
    t0 = time.monotonic()
    try:
        p = KafkaProducer(**kp_conf("SCRAM-SHA-256", password=PASSWORD + "-wrong"),
                          max_block_ms=int(FAIL_FAST_S * 1000))
        p.send("sasl-wrong-password", b"must not be stored").get(timeout=FAIL_FAST_S)
        p.close()
        raise Fail("a record was acknowledged with a wrong password")
    except KafkaError as e:
        auth = [(t, x) for t, x in seen.lines if "SaslAuthenticationFailed" in x]
        if not auth:
            raise Fail(f"{type(e).__name__}, but no authentication error was reported: "
                       f"{[x for _, x in seen.lines[-3:]]}")
        first, line = auth[0]
        if first - t0 > FAIL_FAST_S:
            raise Fail(f"the authentication error came after {first - t0:.1f}s")
        return f"refused in {first - t0:.1f}s: {line[line.find('SaslAuth'):][:160]}"
    finally:
        logging.getLogger("kafka").removeHandler(seen)


def main():
    scenarios = []
    for mech in MECHS:
        scenarios += [("confluent-kafka", f"{TAG}-{mech.lower()}", ck_roundtrip, mech),
                      ("kafka-python", f"{TAG}-{mech.lower()}", kp_roundtrip, mech)]
    scenarios += [("confluent-kafka", f"{TAG}-wrong-password", ck_wrong_password, None),
                  ("kafka-python", f"{TAG}-wrong-password", kp_wrong_password, None),
                  ("confluent-kafka", f"{TAG}-none-refused", ck_no_sasl, None)]
    by_client = {}
    for client, name, fn, arg in scenarios:
        by_client.setdefault(client, []).append((name, fn, arg))
    failed = False
    for client, items in by_client.items():
        r = Reporter(client, [n for n, _, _ in items])
        for name, fn, arg in items:
            ok = r.run(name, fn) if arg is None else r.run(name, fn, arg)
            failed = failed or not ok
    sys.exit(1 if failed else 0)

if __name__ == "__main__":
    main()
