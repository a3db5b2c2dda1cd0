"""DescribeUserScramCredentials and AlterUserScramCredentials (KIP-554) with confluent-kafka's
admin client against kelp on a SASL listener run with `--super-users` naming KELP_SASL_USER:

- the super user describes its own credentials (mechanisms and iterations, no keys);
- it adds a user with a SCRAM-SHA-512 credential of 8192 iterations, who then logs in, produces
  and reads back, and is described with those iterations;
- that new user, not a super user, may neither alter nor describe credentials;
- the super user deletes the credential, and the new user's next login fails.

Environment: KELP_BOOTSTRAP, KELP_SASL_USER, KELP_SASL_PASSWORD, KELP_NEW_PASSWORD (the added
user's password; the caller greps the users file for it). Prints RESULT lines.
"""

import os
import sys
import time
import uuid

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "interop", "python"))

from interop_common import Fail, Reporter  # noqa: E402

BOOTSTRAP = os.environ["KELP_BOOTSTRAP"]
ADMIN = os.environ["KELP_SASL_USER"]
ADMIN_PASSWORD = os.environ["KELP_SASL_PASSWORD"]
NEW_USER = f"carol-{uuid.uuid4().hex[:6]}"
NEW_PASSWORD = os.environ["KELP_NEW_PASSWORD"]


def conf(user, password):
    return {"bootstrap.servers": BOOTSTRAP, "security.protocol": "SASL_PLAINTEXT",
            "sasl.mechanism": "SCRAM-SHA-512", "sasl.username": user,
            "sasl.password": password, "socket.timeout.ms": 10000}


# One admin client per user for the whole run: a client dropped while its request is in flight
# fails the request (_DESTROY).
CLIENTS = {}


def admin(user=ADMIN, password=ADMIN_PASSWORD):
    from confluent_kafka.admin import AdminClient
    if user not in CLIENTS:
        CLIENTS[user] = AdminClient(conf(user, password))
    return CLIENTS[user]


def infos(result):
    return sorted((i.mechanism.name, i.iterations) for i in result.scram_credential_infos)


def describe_self():
    got = admin().describe_user_scram_credentials([ADMIN])[ADMIN].result(timeout=30)
    want = [("SCRAM_SHA_256", 4096), ("SCRAM_SHA_512", 4096)]
    if infos(got) != want:
        raise Fail(f"described {infos(got)}, wanted {want}")
    return f"{ADMIN}: {infos(got)}"


def add_user_who_logs_in():
    from confluent_kafka import Consumer, Producer, TopicPartition
    from confluent_kafka.admin import (ScramCredentialInfo, ScramMechanism,
                                       UserScramCredentialUpsertion)
    info = ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 8192)
    up = UserScramCredentialUpsertion(NEW_USER, info, NEW_PASSWORD.encode())
    admin().alter_user_scram_credentials([up])[NEW_USER].result(timeout=30)
    # kelp answers once every shard has the new credential: the first login must get in.
    topic = f"scram-admin-{uuid.uuid4().hex[:8]}"
    errors = []
    p = Producer({**conf(NEW_USER, NEW_PASSWORD), "error_cb": errors.append})
    p.produce(topic, value=b"from the new user", partition=0)
    if p.flush(10) != 0:
        raise Fail(f"{NEW_USER}'s first login after being added did not produce: {errors[:2]}")
    c = Consumer({**conf(NEW_USER, NEW_PASSWORD), "group.id": f"{topic}-g"})
    try:
        c.assign([TopicPartition(topic, 0, 0)])
        msgs = c.consume(1, timeout=30)
        if not msgs or msgs[0].error() or msgs[0].value() != b"from the new user":
            raise Fail(f"read back {msgs}")
    finally:
        c.close()
    got = admin().describe_user_scram_credentials([NEW_USER])[NEW_USER].result(timeout=30)
    if infos(got) != [("SCRAM_SHA_512", 8192)]:
        raise Fail(f"the new user is described as {infos(got)}")
    return f"{NEW_USER} added with SCRAM-SHA-512/8192, logged in, produced and read back"


def others_are_refused():
    from confluent_kafka import KafkaError, KafkaException
    from confluent_kafka.admin import (ScramCredentialInfo, ScramMechanism,
                                       UserScramCredentialUpsertion)
    a = admin(NEW_USER, NEW_PASSWORD)
    info = ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 4096)
    up = UserScramCredentialUpsertion("mallory", info, b"x")
    said = []
    for what, call in [("alter", lambda: a.alter_user_scram_credentials([up])["mallory"]),
                       ("describe", lambda: a.describe_user_scram_credentials([ADMIN])[ADMIN])]:
        try:
            call().result(timeout=30)
            raise Fail(f"{NEW_USER} was allowed to {what} credentials")
        except KafkaException as e:
            if e.args[0].code() != KafkaError.CLUSTER_AUTHORIZATION_FAILED:
                raise Fail(f"{what}: {e.args[0]}, expected CLUSTER_AUTHORIZATION_FAILED")
            said.append(f"{what}: {e.args[0].name()}")
    return f"{NEW_USER} (not in --super-users): " + ", ".join(said)


def delete_user_who_then_cannot_log_in():
    from confluent_kafka import KafkaError, Producer
    from confluent_kafka.admin import ScramMechanism, UserScramCredentialDeletion
    d = UserScramCredentialDeletion(NEW_USER, ScramMechanism.SCRAM_SHA_512)
    admin().alter_user_scram_credentials([d])[NEW_USER].result(timeout=30)
    # kelp answers once every shard has dropped the credential: the next login must fail.
    errors = []
    p = Producer({**conf(NEW_USER, NEW_PASSWORD), "error_cb": errors.append})
    p.produce("scram-admin-deleted", value=b"must not be stored")
    t0 = time.monotonic()
    while time.monotonic() - t0 < 10:
        p.poll(0.2)
        if any(e.code() == KafkaError._AUTHENTICATION for e in errors):
            p.purge()
            return f"{NEW_USER}'s credential deleted; its next login failed"
    p.purge()
    raise Fail(f"{NEW_USER} was not refused within 10 s of its credential's deletion: {errors[:2]}")


def main():
    r = Reporter("confluent-kafka", ["scram-admin-describe", "scram-admin-add-user",
                                     "scram-admin-others-refused", "scram-admin-delete-user"])
    ok = all([r.run("scram-admin-describe", describe_self),
              r.run("scram-admin-add-user", add_user_who_logs_in),
              r.run("scram-admin-others-refused", others_are_refused),
              r.run("scram-admin-delete-user", delete_user_who_then_cannot_log_in)])
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
