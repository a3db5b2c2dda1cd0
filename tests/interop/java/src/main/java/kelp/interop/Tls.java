package kelp.interop;

import static kelp.interop.Main.check;

import java.io.InputStream;
import java.net.Socket;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.security.KeyFactory;
import java.security.KeyStore;
import java.security.Principal;
import java.security.PrivateKey;
import java.security.cert.Certificate;
import java.security.cert.CertificateFactory;
import java.security.cert.X509Certificate;
import java.security.spec.PKCS8EncodedKeySpec;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Base64;
import java.util.Collection;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.UUID;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.function.Predicate;

import javax.net.ssl.KeyManager;
import javax.net.ssl.SSLContext;
import javax.net.ssl.SSLEngine;
import javax.net.ssl.SSLException;
import javax.net.ssl.SSLParameters;
import javax.net.ssl.TrustManagerFactory;
import javax.net.ssl.X509ExtendedKeyManager;

import org.apache.kafka.clients.CommonClientConfigs;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.ScramCredentialInfo;
import org.apache.kafka.clients.admin.ScramMechanism;
import org.apache.kafka.clients.admin.UserScramCredentialDeletion;
import org.apache.kafka.clients.admin.UserScramCredentialUpsertion;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.clients.producer.RecordMetadata;
import org.apache.kafka.common.KafkaException;
import org.apache.kafka.common.KafkaFuture;
import org.apache.kafka.common.Node;
import org.apache.kafka.common.config.SaslConfigs;
import org.apache.kafka.common.config.SslConfigs;
import org.apache.kafka.common.errors.ClusterAuthorizationException;
import org.apache.kafka.common.errors.ResourceNotFoundException;
import org.apache.kafka.common.errors.SaslAuthenticationException;
import org.apache.kafka.common.errors.SslAuthenticationException;
import org.apache.kafka.common.security.auth.SslEngineFactory;

/**
 * TLS and SASL_SSL scenarios. Run only when named (run.sh: JAVA_SCENARIOS=...): they need
 * listeners the default interop run, against a PLAINTEXT kelp, does not have. Each reads its own
 * environment; KELP_BOOTSTRAP is not used.
 * <ul>
 * <li>sasl-ssl-scram-sha-512, sasl-ssl-plain: KELP_SASL_SSL_BOOTSTRAP (a SASL_SSL listener),
 *     KELP_TLS_CA, KELP_SASL_USER, KELP_SASL_PASSWORD. 200 records (idempotent, acks=all, a few
 *     bigger than a TLS record) to a new topic, read back by assignment from offset 0: acked
 *     offsets, keys, values and offsets compared.
 * <li>sasl-ssl-wrong-password: the same listener. The right password creates a topic (so the
 *     listener, the CA and the user are known good); then a changed password, with SCRAM-SHA-512
 *     and with PLAIN, must be refused by describeCluster and by a send, each with a
 *     SaslAuthenticationException (not a TLS error, not a timeout) within 10 s.
 * <li>mtls: KELP_MTLS_BOOTSTRAP (an SSL listener kelp runs with --tls-client-ca), KELP_TLS_CA,
 *     KELP_TLS_CLIENT_CERT, KELP_TLS_CLIENT_KEY (PEM files, the key PKCS#8 unencrypted): the
 *     roundtrip above, presenting the client certificate through Kafka's PEM key store.
 * <li>mtls-no-cert: same listener and files. With the client certificate a topic is created (the
 *     control); without one, describeCluster and a send to that topic must both fail within 15 s,
 *     with an SSL error, or a timeout (reported as such: the control shows the listener is up).
 * <li>mtls-stranger-cert: as mtls-no-cert, presenting KELP_TLS_STRANGER_CERT/_KEY (from a CA kelp
 *     does not know) instead of no certificate. See {@link OfferAnyway} for why that needs its own
 *     ssl.engine.factory.class.
 * <li>scram-admin: the SASL_SSL listener, kelp run with --super-users naming KELP_SASL_USER. The
 *     SCRAM admin APIs (KIP-554): the super user describes itself (SCRAM-SHA-512/4096 among its
 *     credentials); adds a new user with SCRAM-SHA-256/8192, who logs in, produces a record and
 *     reads it back, and is described so; that user, not a super user, is refused both APIs with
 *     ClusterAuthorizationException; the super user deletes its credential and its next login is
 *     refused with SaslAuthenticationException. See {@link #scramAdmin}.
 * </ul>
 * kelp's certificate is verified against KELP_TLS_CA with Kafka's PEM trust store
 * (ssl.truststore.type=PEM) and host name verification on (https, the default, set explicitly):
 * kelp's certificate names 127.0.0.1.
 */
final class Tls {
    private Tls() {}

    static final Set<String> SCENARIOS = Set.of("sasl-ssl-scram-sha-512", "sasl-ssl-plain",
            "sasl-ssl-wrong-password", "mtls", "mtls-no-cert", "mtls-stranger-cert", "scram-admin");
    static final int RECORDS = 200;
    /** A wrong password must be refused well before a client's own timeouts would hide it. */
    static final long SASL_REFUSE_MS = 10_000;
    /** A refused certificate: a handshake failure, or at worst no metadata within this long. */
    static final long TLS_REFUSE_MS = 15_000;
    /**
     * How long after an Alter answer a login or a Describe may still see the old users. kelp
     * answers an alteration only once every shard has taken it, so none: the first login (or
     * Describe, see {@link #describedUnknown}) after the answer must see the change. (Before kelp
     * waited for its shards, the super user's own connection described a deleted credential right
     * after the deletion's answer.) The retry loops below stay, so that a nonzero setting can be
     * tried against a broker that propagates later, as Kafka's brokers do.
     */
    static final long CREDENTIAL_SETTLE_MS = 0;

    static String run(String scenario) throws Exception {
        switch (scenario) {
            case "sasl-ssl-scram-sha-512":
                return roundtrip(scenario, sasl("SCRAM-SHA-512", env("KELP_SASL_PASSWORD")),
                        "SASL_SSL, SCRAM-SHA-512 as " + env("KELP_SASL_USER"));
            case "sasl-ssl-plain":
                return roundtrip(scenario, sasl("PLAIN", env("KELP_SASL_PASSWORD")),
                        "SASL_SSL, PLAIN as " + env("KELP_SASL_USER"));
            case "sasl-ssl-wrong-password":
                return wrongPassword(scenario);
            case "mtls":
                return roundtrip(scenario, mtls(env("KELP_TLS_CLIENT_CERT"), env("KELP_TLS_CLIENT_KEY")),
                        "SSL, client certificate " + subject(env("KELP_TLS_CLIENT_CERT")));
            case "mtls-no-cert":
                return refusedCert(scenario, mtls(null, null), "no client certificate");
            case "mtls-stranger-cert":
                return strangerCert(scenario);
            case "scram-admin":
                return scramAdmin(scenario);
            default:
                throw new Main.CheckFailed("unknown TLS scenario " + scenario);
        }
    }

    // ------------------------------------------------------------------ settings

    static String env(String name) {
        String v = System.getenv(name);
        if (v == null || v.isEmpty()) throw new Main.CheckFailed(name + " is not set");
        return v;
    }

    /** Bootstrap and server verification every scenario shares. */
    static Map<String, String> tlsBase(String bootstrapEnv) {
        Map<String, String> m = new HashMap<>();
        m.put(CommonClientConfigs.BOOTSTRAP_SERVERS_CONFIG, env(bootstrapEnv));
        m.put(SslConfigs.SSL_TRUSTSTORE_TYPE_CONFIG, "PEM");
        m.put(SslConfigs.SSL_TRUSTSTORE_LOCATION_CONFIG, env("KELP_TLS_CA"));
        // The default already; explicit because the point is that kelp's name is checked too.
        m.put(SslConfigs.SSL_ENDPOINT_IDENTIFICATION_ALGORITHM_CONFIG, "https");
        return m;
    }

    static Map<String, String> sasl(String mechanism, String password) {
        return sasl(mechanism, env("KELP_SASL_USER"), password);
    }

    static Map<String, String> sasl(String mechanism, String user, String password) {
        Map<String, String> m = tlsBase("KELP_SASL_SSL_BOOTSTRAP");
        m.put(CommonClientConfigs.SECURITY_PROTOCOL_CONFIG, "SASL_SSL");
        m.put(SaslConfigs.SASL_MECHANISM, mechanism);
        String module = mechanism.equals("PLAIN")
                ? "org.apache.kafka.common.security.plain.PlainLoginModule"
                : "org.apache.kafka.common.security.scram.ScramLoginModule";
        m.put(SaslConfigs.SASL_JAAS_CONFIG, module + " required username=\"" + jaasQuote(user)
                + "\" password=\"" + jaasQuote(password) + "\";");
        return m;
    }

    /** JAAS config values are double-quoted; the parser (a StreamTokenizer) takes backslash escapes. */
    static String jaasQuote(String s) {
        return s.replace("\\", "\\\\").replace("\"", "\\\"");
    }

    /** SSL to the mTLS listener; certPath null: no client certificate at all. */
    static Map<String, String> mtls(String certPath, String keyPath) throws Exception {
        Map<String, String> m = tlsBase("KELP_MTLS_BOOTSTRAP");
        m.put(CommonClientConfigs.SECURITY_PROTOCOL_CONFIG, "SSL");
        if (certPath != null) {
            // Kafka's PEM key store (KIP-651): chain and PKCS#8 key inline, as the files hold them.
            // Unencrypted key, so no ssl.key.password.
            m.put(SslConfigs.SSL_KEYSTORE_TYPE_CONFIG, "PEM");
            m.put(SslConfigs.SSL_KEYSTORE_CERTIFICATE_CHAIN_CONFIG, Files.readString(Path.of(certPath)));
            m.put(SslConfigs.SSL_KEYSTORE_KEY_CONFIG, Files.readString(Path.of(keyPath)));
        }
        return m;
    }

    /** SSL to the mTLS listener through {@link OfferAnyway}, offering this certificate. */
    static Map<String, String> offerAnyway(String certPath, String keyPath) {
        Map<String, String> m = tlsBase("KELP_MTLS_BOOTSTRAP");
        m.put(CommonClientConfigs.SECURITY_PROTOCOL_CONFIG, "SSL");
        m.put(SslConfigs.SSL_ENGINE_FACTORY_CLASS_CONFIG, OfferAnyway.class.getName());
        m.put(OfferAnyway.CA, env("KELP_TLS_CA"));
        m.put(OfferAnyway.CERT, certPath);
        m.put(OfferAnyway.KEY, keyPath);
        return m;
    }

    static X509Certificate firstCert(String pemPath) throws Exception {
        try (InputStream in = Files.newInputStream(Path.of(pemPath))) {
            return (X509Certificate) CertificateFactory.getInstance("X.509").generateCertificate(in);
        }
    }

    static String subject(String pemPath) throws Exception {
        return firstCert(pemPath).getSubjectX500Principal().getName();
    }

    // ------------------------------------------------------------------ roundtrip

    static byte[] value(String scenario, int i) {
        StringBuilder sb = new StringBuilder(scenario + "-" + i + "-");
        // Every 50th record is ~18 KB: more than one TLS record (16 KB at most) for one Kafka record.
        int reps = i % 50 == 7 ? 3_000 : 1 + (i * 37) % 60;
        for (int r = 0; r < reps; r++) sb.append("tls ").append(r % 10).append(' ');
        return sb.toString().getBytes(StandardCharsets.UTF_8);
    }

    static String roundtrip(String scenario, Map<String, String> sec, String how) throws Exception {
        String topic = Main.prefix + Main.tag + "-" + scenario;
        try (Admin admin = Main.adminClient(sec)) {
            Main.createTopic(admin, topic, Main.PARTITIONS);
        }

        Map<String, String> cfg = new HashMap<>(sec);
        cfg.put(ProducerConfig.ENABLE_IDEMPOTENCE_CONFIG, "true");
        cfg.put(ProducerConfig.ACKS_CONFIG, "all");
        cfg.put(ProducerConfig.MAX_IN_FLIGHT_REQUESTS_PER_CONNECTION, "5");
        int[] counts = new int[Main.PARTITIONS];
        long[] wantOffset = new long[RECORDS];
        List<Future<RecordMetadata>> futures = new ArrayList<>();
        long bytes = 0;
        try (KafkaProducer<byte[], byte[]> producer = Main.producer("producer-" + scenario, cfg)) {
            Main.step = "produce over " + how;
            for (int i = 0; i < RECORDS; i++) {
                int p = i % Main.PARTITIONS;
                wantOffset[i] = counts[p]++;
                byte[] v = value(scenario, i);
                bytes += v.length;
                futures.add(producer.send(new ProducerRecord<>(topic, p, key(i), v)));
            }
            Main.step = "producer flush";
            producer.flush();
            Main.step = "produce acks";
            for (int i = 0; i < RECORDS; i++) {
                RecordMetadata md;
                try {
                    md = futures.get(i).get(60, TimeUnit.SECONDS);
                } catch (ExecutionException e) {
                    throw new Main.CheckFailed("produce over " + how + ": record " + i + " failed: "
                            + Main.describe(e.getCause()));
                }
                check(md.partition() == i % Main.PARTITIONS && md.offset() == wantOffset[i],
                        "record " + i + " acked at partition " + md.partition() + " offset " + md.offset()
                                + ", expected partition " + i % Main.PARTITIONS + " offset " + wantOffset[i]);
            }
        }

        List<List<ConsumerRecord<byte[], byte[]>>> got = Main.readAll(topic, counts, 60_000, sec);
        Main.step = "compare";
        for (int i = 0; i < RECORDS; i++) {
            int p = i % Main.PARTITIONS;
            ConsumerRecord<byte[], byte[]> r = got.get(p).get((int) wantOffset[i]);
            String where = "partition " + p + " record #" + wantOffset[i] + " (sent as " + i + "): ";
            check(r.offset() == wantOffset[i], where + "offset " + r.offset());
            check(Arrays.equals(r.key(), key(i)), where + "key " + Main.str(r.key()) + ", expected " + Main.str(key(i)));
            check(Arrays.equals(r.value(), value(scenario, i)),
                    where + "value " + Main.str(r.value()) + ", expected " + Main.str(value(scenario, i)));
        }
        return String.format("%s, kelp's certificate verified against the CA with host name check: %d records "
                        + "(%d bytes, largest %d) idempotent acks=all over %d partitions (%d/%d/%d), acked and read "
                        + "back at dense offsets from 0, keys and values identical",
                how, RECORDS, bytes, value(scenario, 7).length, Main.PARTITIONS, counts[0], counts[1], counts[2]);
    }

    static byte[] key(int i) {
        return ("key-" + i).getBytes(StandardCharsets.UTF_8);
    }

    // ------------------------------------------------------------------ refusals

    /**
     * Creates {@code topic} with settings known to work (1 partition): the control that shows the
     * listener is up and the CA right, so a refusal after it is the credential's doing.
     */
    static String control(String topic, Map<String, String> good, String how) throws Exception {
        long t0 = System.nanoTime();
        Main.step = "control: createTopics " + topic + " with " + how;
        try (Admin admin = Main.adminClient(good)) {
            Main.createTopic(admin, topic, 1);
        } catch (Main.CheckFailed | ExecutionException | KafkaException e) {
            throw new Main.CheckFailed("control with " + how + " failed, so the refusal would prove nothing: "
                    + (e instanceof Main.CheckFailed ? e.getMessage() : Main.describe(e)));
        }
        return String.format("control with %s: topic created in %.1fs", how, secs(t0));
    }

    static double secs(long t0) {
        return (System.nanoTime() - t0) / 1e9;
    }

    static boolean chainHas(Throwable t, Predicate<Throwable> p) {
        for (int d = 0; t != null && d < 10; d++, t = t.getCause()) {
            if (p.test(t)) return true;
            if (t.getCause() == t) break;
        }
        return false;
    }

    /**
     * describeCluster and a send to {@code topic} with {@code cfg} must both fail: with an error
     * {@code wanted} accepts, within {@code limitMs}; a timeout counts only if {@code timeoutOk}
     * (and is reported as one). Returns what each saw.
     */
    static String expectRefused(String what, String topic, Map<String, String> cfg, Predicate<Throwable> wanted,
            String wantedName, boolean timeoutOk, long limitMs) throws Exception {
        String lim = String.valueOf(limitMs);
        Throwable[] errs = new Throwable[2];
        double[] took = new double[2];

        Map<String, String> ac = new HashMap<>(cfg);
        ac.put(AdminClientConfig.DEFAULT_API_TIMEOUT_MS_CONFIG, lim);
        ac.put(AdminClientConfig.REQUEST_TIMEOUT_MS_CONFIG, lim);
        Main.step = what + ": describeCluster";
        long t0 = System.nanoTime();
        Throwable err;
        Admin admin = Main.adminClient(ac);
        try {
            // Our own wait is longer than the client's: its own answer is the one to judge.
            Collection<Node> nodes = admin.describeCluster().nodes().get(limitMs + 10_000, TimeUnit.MILLISECONDS);
            throw new Main.CheckFailed(String.format("%s: describeCluster answered after %.1fs with nodes %s; "
                    + "expected the connection refused", what, secs(t0), nodes));
        } catch (ExecutionException e) {
            err = e.getCause();
        } catch (TimeoutException e) {
            err = e;
        } finally {
            admin.close(Duration.ofSeconds(5));
        }
        took[0] = secs(t0);
        errs[0] = err;
        String a = judge(what + ": describeCluster", err, took[0], wanted, wantedName, timeoutOk, limitMs);

        Map<String, String> pc = new HashMap<>(cfg);
        pc.put(ProducerConfig.MAX_BLOCK_MS_CONFIG, lim);
        pc.put(ProducerConfig.REQUEST_TIMEOUT_MS_CONFIG, lim);
        pc.put(ProducerConfig.DELIVERY_TIMEOUT_MS_CONFIG, String.valueOf(limitMs + 1_000));
        // The question is whether the connection is let in, not idempotence: keep the path short.
        pc.put(ProducerConfig.ENABLE_IDEMPOTENCE_CONFIG, "false");
        Main.step = what + ": produce to " + topic;
        t0 = System.nanoTime();
        KafkaProducer<byte[], byte[]> producer = Main.producer("refused", pc);
        try {
            RecordMetadata md = producer.send(new ProducerRecord<>(topic, 0, key(0), "must not land".getBytes(
                    StandardCharsets.UTF_8))).get(limitMs + 10_000, TimeUnit.MILLISECONDS);
            throw new Main.CheckFailed(String.format("%s: produce to %s acked after %.1fs at offset %d; expected "
                    + "the connection refused", what, topic, secs(t0), md.offset()));
        } catch (ExecutionException e) {
            err = e.getCause();
        } catch (TimeoutException | KafkaException e) { // KafkaException: thrown by send() itself
            err = e;
        } finally {
            producer.close(Duration.ofSeconds(5));
        }
        took[1] = secs(t0);
        errs[1] = err;
        String b = judge(what + ": produce", err, took[1], wanted, wantedName, timeoutOk, limitMs);
        // Usually the same error twice: say it once (the RESULT detail is cut at 900 characters).
        if (chainHas(errs[0], wanted) && Main.describe(errs[0]).equals(Main.describe(errs[1]))) {
            return String.format("%s: describeCluster and produce both refused (%.2fs, %.2fs): %s", what, took[0],
                    took[1], Main.describe(errs[0]));
        }
        return a + "; " + b;
    }

    static String judge(String what, Throwable err, double s, Predicate<Throwable> wanted, String wantedName,
            boolean timeoutOk, long limitMs) {
        if (chainHas(err, wanted)) {
            check(s <= limitMs / 1000.0, String.format("%s: refused as wanted but only after %.1fs (limit %ds): %s",
                    what, s, limitMs / 1000, Main.describe(err)));
            return String.format("%s refused in %.2fs: %s", what, s, Main.describe(err));
        }
        boolean timeout = chainHas(err, t -> t instanceof TimeoutException
                || t instanceof org.apache.kafka.common.errors.TimeoutException);
        if (timeout && timeoutOk) {
            return String.format("%s got no answer: timed out after %.1fs (no SSL error seen): %s", what, s,
                    Main.describe(err));
        }
        throw new Main.CheckFailed(String.format("%s: expected %s%s within %ds, got after %.1fs: %s", what,
                wantedName, timeoutOk ? " or a timeout" : "", limitMs / 1000, s, Main.describe(err)));
    }

    static boolean isSslRefusal(Throwable t) {
        return t instanceof SslAuthenticationException || t instanceof SSLException;
    }

    static String wrongPassword(String scenario) throws Exception {
        String topic = Main.prefix + Main.tag + "-" + scenario;
        String right = env("KELP_SASL_PASSWORD");
        List<String> out = new ArrayList<>();
        out.add(control(topic, sasl("SCRAM-SHA-512", right), "the right password (SCRAM-SHA-512)"));
        // Not a TLS error (SslAuthenticationException is an AuthenticationException too), not a
        // timeout: kelp must answer the login with SASL_AUTHENTICATION_FAILED.
        String wrong = right + "-not-it";
        for (String mech : List.of("SCRAM-SHA-512", "PLAIN")) {
            out.add(expectRefused(mech + " with a wrong password", topic, sasl(mech, wrong),
                    t -> t instanceof SaslAuthenticationException, "SaslAuthenticationException", false,
                    SASL_REFUSE_MS));
        }
        return String.join("; ", out);
    }

    static String refusedCert(String scenario, Map<String, String> bad, String how) throws Exception {
        String topic = Main.prefix + Main.tag + "-" + scenario;
        String ctl = control(topic, mtls(env("KELP_TLS_CLIENT_CERT"), env("KELP_TLS_CLIENT_KEY")),
                "the client certificate");
        return ctl + "; " + expectRefused(how, topic, bad, Tls::isSslRefusal, "an SSL error", true, TLS_REFUSE_MS);
    }

    static String strangerCert(String scenario) throws Exception {
        String topic = Main.prefix + Main.tag + "-" + scenario;
        String cert = env("KELP_TLS_STRANGER_CERT");
        String key = env("KELP_TLS_STRANGER_KEY");
        X509Certificate c = firstCert(cert);
        // Control through the same engine factory, so the certificate is the only difference.
        String ctl = control(topic, offerAnyway(env("KELP_TLS_CLIENT_CERT"), env("KELP_TLS_CLIENT_KEY")),
                "the client certificate (offered by OfferAnyway)");
        OfferAnyway.OFFERED.set(0);
        String how = "certificate " + c.getSubjectX500Principal().getName() + " issued by "
                + c.getIssuerX500Principal().getName();
        String refused = expectRefused(how, topic, offerAnyway(cert, key), Tls::isSslRefusal, "an SSL error", true,
                TLS_REFUSE_MS);
        check(OfferAnyway.OFFERED.get() > 0, "the stranger certificate was never offered (kelp asked for none?)");
        return ctl + "; " + refused + "; certificate offered in " + OfferAnyway.OFFERED.get() + " handshakes";
    }

    // ------------------------------------------------------------------ SCRAM admin (KIP-554)

    /**
     * scram-admin, on the SASL_SSL listener with kelp run as {@code --super-users KELP_SASL_USER}.
     * Each refusal has its control: the super user's own Describe and Alter succeed before the
     * new user's are refused, and the new user is let in (describeCluster) on the admin client
     * that then asks, so the refusals are the APIs' authorization, not a failed login; the login
     * refused after the deletion is the one that worked after the upsert, same user and password.
     * The names are new each run (a failed run leaves its user behind in kelp's users file).
     */
    static String scramAdmin(String scenario) throws Exception {
        String su = env("KELP_SASL_USER");
        Map<String, String> suCfg = sasl("SCRAM-SHA-512", env("KELP_SASL_PASSWORD"));
        String rnd = UUID.randomUUID().toString().substring(0, 8);
        String dora = "dora-" + rnd;
        String mallory = "mallory-" + rnd;
        String doraPassword = "dora-" + UUID.randomUUID() + "-pw";
        // SCRAM-SHA-256 while the super user logs in with SCRAM-SHA-512: the new credential's own
        // mechanism is the one that must work.
        Map<String, String> doraCfg = sasl("SCRAM-SHA-256", dora, doraPassword);
        ScramCredentialInfo doraInfo = new ScramCredentialInfo(ScramMechanism.SCRAM_SHA_256, 8192);
        String topic = Main.prefix + Main.tag + "-" + scenario;
        List<String> out = new ArrayList<>();
        try (Admin admin = Main.adminClient(suCfg)) {
            // 1. The super user describes itself: SCRAM-SHA-512 as `kelp user add` made it (and
            // whatever else the users file holds for it; PLAIN is not SCRAM's, never described).
            Main.step = "describeUserScramCredentials([" + su + "]) as " + su;
            List<ScramCredentialInfo> own = describeScram(admin, su);
            check(own.contains(new ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 4096)), su + " described as "
                    + creds(own) + ", expected SCRAM-SHA-512/4096 among them");
            out.add("SASL_SSL, SCRAM-SHA-512 as " + su + " (super user): described " + creds(own));

            // 2. A new user, unknown before, added by the super user, logs in and works.
            Main.step = "describeUserScramCredentials([" + dora + "]) before adding it";
            expectFailure(admin.describeUserScramCredentials(List.of(dora)).description(dora),
                    ResourceNotFoundException.class);
            Main.createTopic(admin, topic, 1);
            Main.step = "alterUserScramCredentials: upsert " + dora + " " + creds(List.of(doraInfo));
            Main.get(admin.alterUserScramCredentials(List.of(new UserScramCredentialUpsertion(dora, doraInfo,
                    doraPassword))).values().get(dora));
            long added = System.nanoTime();
            byte[] v = ("written by " + dora).getBytes(StandardCharsets.UTF_8);
            String login = produceAs(dora, topic, v, doraCfg, added);
            List<ConsumerRecord<byte[], byte[]>> got = Main.readAll(topic, new int[] {1}, 30_000, doraCfg).get(0);
            Main.step = "compare the record read back as " + dora;
            check(got.get(0).offset() == 0 && Arrays.equals(got.get(0).value(), v), "read back offset "
                    + got.get(0).offset() + " value " + Main.str(got.get(0).value()) + ", expected 0 " + Main.str(v));
            Main.step = "describeUserScramCredentials([" + dora + "]) after adding it";
            List<ScramCredentialInfo> doras = describeScram(admin, dora);
            check(doras.equals(List.of(doraInfo)), dora + " described as " + creds(doras) + ", expected "
                    + creds(List.of(doraInfo)));
            out.add(dora + " (unknown before) upserted with " + creds(List.of(doraInfo)) + ": logged in (" + login
                    + "), produced a record and read it back, described " + creds(doras));

            // 3. The new user is no super user: both APIs refused, and the refused Alter changed
            // nothing.
            try (Admin doraAdmin = Main.adminClient(doraCfg)) {
                Main.step = "control: describeCluster as " + dora;
                Main.get(doraAdmin.describeCluster().nodes());
                Main.step = "alterUserScramCredentials: upsert " + mallory + " as " + dora;
                expectFailure(doraAdmin.alterUserScramCredentials(List.of(new UserScramCredentialUpsertion(
                        mallory, new ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 4096), "x"))).values()
                        .get(mallory), ClusterAuthorizationException.class);
                Main.step = "describeUserScramCredentials([" + su + "]) as " + dora;
                expectFailure(doraAdmin.describeUserScramCredentials(List.of(su)).description(su),
                        ClusterAuthorizationException.class);
            }
            Main.step = "describeUserScramCredentials([" + mallory + "]) as " + su + " after the refused upsert";
            expectFailure(admin.describeUserScramCredentials(List.of(mallory)).description(mallory),
                    ResourceNotFoundException.class);
            out.add(String.format("as %s (let in): upsert of %s and describe of %s both refused with "
                    + "ClusterAuthorizationException, %s still unknown", dora, mallory, su, mallory));

            // 4. The super user deletes the new user's credential: its logins stop.
            Main.step = "alterUserScramCredentials: delete " + dora + "'s SCRAM-SHA-256";
            Main.get(admin.alterUserScramCredentials(List.of(new UserScramCredentialDeletion(dora,
                    ScramMechanism.SCRAM_SHA_256))).values().get(dora));
            long deleted = System.nanoTime();
            String refused = refusedLoginAs(dora, doraCfg, deleted);
            out.add(dora + "'s SCRAM-SHA-256 deleted: " + refused + "; "
                    + describedUnknown(admin, dora, List.of(doraInfo), deleted));
        }
        return String.join("; ", out);
    }

    /**
     * Describes {@code user}, whose only credential was just deleted, until kelp says it has none
     * (RESOURCE_NOT_FOUND). kelp answers Describe from the serving shard's copy of the users, which
     * the deletion reaches moments after its Alter answer, as for logins (seen here: the super
     * user's own connection described the deleted credential right after that answer). So an
     * answer still showing exactly {@code before} is retried until CREDENTIAL_SETTLE_MS after
     * {@code since}, and said in the detail; any other answer fails at once.
     */
    static String describedUnknown(Admin admin, String user, List<ScramCredentialInfo> before, long since)
            throws Exception {
        int stale = 0;
        double lastStale = 0;
        while (true) {
            Main.step = "describeUserScramCredentials([" + user + "]) after the deletion (answer " + (stale + 1) + ")";
            List<ScramCredentialInfo> got;
            try {
                got = Main.get(admin.describeUserScramCredentials(List.of(user)).description(user)).credentialInfos();
            } catch (ExecutionException e) {
                check(e.getCause() instanceof ResourceNotFoundException,
                        "expected ResourceNotFoundException, got " + Main.describe(e.getCause()));
                return stale == 0 ? "described as unknown at once" : String.format("described as unknown after %d "
                        + "answers still showing %s (the last %.2fs after the deletion)", stale, creds(before),
                        lastStale);
            }
            check(got.equals(before), "described as " + creds(got) + ", expected ResourceNotFoundException");
            stale++;
            lastStale = secs(since);
            check(lastStale * 1000 < CREDENTIAL_SETTLE_MS, String.format("%s still described as %s %.1fs after "
                    + "the deletion (%d answers)", user, creds(got), lastStale, stale));
            Thread.sleep(100);
        }
    }

    static String creds(List<ScramCredentialInfo> infos) {
        List<String> s = new ArrayList<>();
        for (ScramCredentialInfo i : infos) s.add(i.mechanism().mechanismName() + "/" + i.iterations());
        return String.join(",", s);
    }

    static List<ScramCredentialInfo> describeScram(Admin admin, String user) throws Exception {
        return Main.get(admin.describeUserScramCredentials(List.of(user)).description(user)).credentialInfos();
    }

    /** {@code f} must fail (within Main.get's 30 s) with a {@code wanted}. */
    static void expectFailure(KafkaFuture<?> f, Class<? extends Throwable> wanted) throws Exception {
        Object v;
        try {
            v = Main.get(f);
        } catch (ExecutionException e) {
            check(wanted.isInstance(e.getCause()),
                    "expected " + wanted.getSimpleName() + ", got " + Main.describe(e.getCause()));
            return;
        }
        throw new Main.CheckFailed("at step '" + Main.step + "': succeeded (" + v + "); expected "
                + wanted.getSimpleName());
    }

    /**
     * One record to partition 0 of the new {@code topic} as the user of {@code cfg}, a new
     * producer (so a new login) per attempt. A login refused with SaslAuthenticationException is
     * retried until CREDENTIAL_SETTLE_MS after {@code since} (the Alter answer; the credential may
     * not be on every shard yet); any other error fails at once. Returns when it got in.
     */
    static String produceAs(String who, String topic, byte[] value, Map<String, String> cfg, long since)
            throws Exception {
        Map<String, String> pc = new HashMap<>(cfg);
        pc.put(ProducerConfig.MAX_BLOCK_MS_CONFIG, String.valueOf(SASL_REFUSE_MS));
        pc.put(ProducerConfig.REQUEST_TIMEOUT_MS_CONFIG, String.valueOf(SASL_REFUSE_MS));
        pc.put(ProducerConfig.DELIVERY_TIMEOUT_MS_CONFIG, String.valueOf(SASL_REFUSE_MS + 1_000));
        // The question is the login: keep the path short.
        pc.put(ProducerConfig.ENABLE_IDEMPOTENCE_CONFIG, "false");
        for (int attempt = 1; ; attempt++) {
            Main.step = "produce as " + who + " (login attempt " + attempt + ")";
            Throwable err;
            KafkaProducer<byte[], byte[]> producer = Main.producer("producer-" + who, pc);
            try {
                RecordMetadata md = producer.send(new ProducerRecord<>(topic, 0, key(0), value))
                        .get(SASL_REFUSE_MS + 10_000, TimeUnit.MILLISECONDS);
                check(md.partition() == 0 && md.offset() == 0,
                        "acked at partition " + md.partition() + " offset " + md.offset() + ", expected 0 0");
                return String.format("attempt %d, %.1fs after", attempt, secs(since));
            } catch (ExecutionException e) {
                err = e.getCause();
            } catch (TimeoutException | KafkaException e) { // KafkaException: thrown by send() itself
                err = e;
            } finally {
                producer.close(Duration.ofSeconds(5));
            }
            check(chainHas(err, t -> t instanceof SaslAuthenticationException),
                    "expected the record acked (or the login refused while the credential settles), got: "
                            + Main.describe(err));
            check(secs(since) * 1000 < CREDENTIAL_SETTLE_MS, String.format("%s's login still refused %.1fs after "
                    + "the upsert (%d attempts): %s", who, secs(since), attempt, Main.describe(err)));
            Thread.sleep(500);
        }
    }

    /**
     * Logs in as the user of {@code cfg} (describeCluster, a new admin client per attempt) until
     * the login is refused, with SaslAuthenticationException within SASL_REFUSE_MS. A login let in
     * is retried until CREDENTIAL_SETTLE_MS after {@code since} (the deletion's answer: it may not
     * be on every shard yet); any other error fails at once.
     */
    static String refusedLoginAs(String who, Map<String, String> cfg, long since) throws Exception {
        String lim = String.valueOf(SASL_REFUSE_MS);
        Map<String, String> ac = new HashMap<>(cfg);
        ac.put(AdminClientConfig.DEFAULT_API_TIMEOUT_MS_CONFIG, lim);
        ac.put(AdminClientConfig.REQUEST_TIMEOUT_MS_CONFIG, lim);
        for (int attempt = 1; ; attempt++) {
            String what = "describeCluster as " + who + " (login attempt " + attempt + " after the deletion)";
            Main.step = what;
            long t0 = System.nanoTime();
            Throwable err;
            Admin admin = Main.adminClient(ac);
            try {
                // Our own wait is longer than the client's: its own answer is the one to judge.
                Collection<Node> nodes = admin.describeCluster().nodes().get(SASL_REFUSE_MS + 10_000,
                        TimeUnit.MILLISECONDS);
                check(secs(since) * 1000 < CREDENTIAL_SETTLE_MS, String.format("%s still let in %.1fs after its "
                        + "credential was deleted (%d attempts; nodes %s)", who, secs(since), attempt, nodes));
                Thread.sleep(500);
                continue;
            } catch (ExecutionException e) {
                err = e.getCause();
            } catch (TimeoutException e) {
                err = e;
            } finally {
                admin.close(Duration.ofSeconds(5));
            }
            double took = secs(t0);
            judge(what, err, took, t -> t instanceof SaslAuthenticationException, "SaslAuthenticationException",
                    false, SASL_REFUSE_MS);
            // The class's simple name: the RESULT detail is cut at 900 characters.
            return String.format("next login refused (attempt %d, %.1fs after the deletion, in %.2fs): %s: %s",
                    attempt, secs(since), took, err.getClass().getSimpleName(), err.getMessage());
        }
    }

    // ------------------------------------------------------------------ engine factory

    /**
     * ssl.engine.factory.class for mtls-stranger-cert. Java's key managers (SunX509 and PKIX) pick
     * a client certificate only if its chain has an issuer among the CAs the server names in its
     * CertificateRequest. kelp (rustls) names its client CA there, so the stock client would send
     * no certificate at all and the scenario would only repeat mtls-no-cert. This factory offers
     * its certificate whatever the server names (as OpenSSL-based clients do), so kelp has to
     * reject the certificate itself. Verifying kelp is as strict as with the stock factory: PKIX
     * against the given CA, host name checked (Kafka passes ssl.endpoint.identification.algorithm).
     * Settings: the paths under the keys {@link #CA}, {@link #CERT} and {@link #KEY} (PEM; the key
     * PKCS#8 unencrypted).
     */
    public static final class OfferAnyway implements SslEngineFactory {
        static final String CA = "kelp.interop.tls.ca";
        static final String CERT = "kelp.interop.tls.cert";
        static final String KEY = "kelp.interop.tls.key";
        /** Handshakes (of any instance) in which the certificate was offered. */
        static final AtomicInteger OFFERED = new AtomicInteger();
        private static final String ALIAS = "client";
        private SSLContext ctx;

        public OfferAnyway() {}

        @Override
        public void configure(Map<String, ?> configs) {
            try {
                CertificateFactory cf = CertificateFactory.getInstance("X.509");
                KeyStore trust = KeyStore.getInstance("PKCS12");
                trust.load(null, null);
                int n = 0;
                try (InputStream in = Files.newInputStream(Path.of(setting(configs, CA)))) {
                    for (Certificate c : cf.generateCertificates(in)) trust.setCertificateEntry("ca" + n++, c);
                }
                TrustManagerFactory tmf = TrustManagerFactory.getInstance("PKIX");
                tmf.init(trust);
                X509Certificate[] chain;
                try (InputStream in = Files.newInputStream(Path.of(setting(configs, CERT)))) {
                    chain = cf.generateCertificates(in).toArray(new X509Certificate[0]);
                }
                PrivateKey key = pkcs8(Files.readString(Path.of(setting(configs, KEY))));
                KeyManager km = new X509ExtendedKeyManager() {
                    String pick(String[] keyTypes) {
                        if (keyTypes == null || !Arrays.asList(keyTypes).contains(key.getAlgorithm())) return null;
                        OFFERED.incrementAndGet();
                        return ALIAS;
                    }

                    @Override
                    public String chooseEngineClientAlias(String[] keyTypes, Principal[] issuers, SSLEngine e) {
                        return pick(keyTypes); // issuers ignored: the point of this class
                    }

                    @Override
                    public String chooseClientAlias(String[] keyTypes, Principal[] issuers, Socket s) {
                        return pick(keyTypes);
                    }

                    @Override
                    public String[] getClientAliases(String keyType, Principal[] issuers) {
                        return new String[] {ALIAS};
                    }

                    @Override
                    public String[] getServerAliases(String keyType, Principal[] issuers) {
                        return null;
                    }

                    @Override
                    public String chooseServerAlias(String keyType, Principal[] issuers, Socket s) {
                        return null;
                    }

                    @Override
                    public X509Certificate[] getCertificateChain(String alias) {
                        return ALIAS.equals(alias) ? chain.clone() : null;
                    }

                    @Override
                    public PrivateKey getPrivateKey(String alias) {
                        return ALIAS.equals(alias) ? key : null;
                    }
                };
                ctx = SSLContext.getInstance("TLS");
                ctx.init(new KeyManager[] {km}, tmf.getTrustManagers(), null);
            } catch (Exception e) {
                throw new KafkaException("OfferAnyway: " + e, e);
            }
        }

        static String setting(Map<String, ?> configs, String name) {
            Object v = configs.get(name);
            if (v == null) throw new KafkaException("OfferAnyway: " + name + " not set");
            return v.toString();
        }

        static PrivateKey pkcs8(String pem) throws Exception {
            String b64 = pem.replaceAll("-----(BEGIN|END) PRIVATE KEY-----", "").replaceAll("\\s", "");
            PKCS8EncodedKeySpec spec = new PKCS8EncodedKeySpec(Base64.getDecoder().decode(b64));
            Exception first = null;
            for (String alg : List.of("RSA", "EC")) {
                try {
                    return KeyFactory.getInstance(alg).generatePrivate(spec);
                } catch (Exception e) {
                    if (first == null) first = e;
                }
            }
            throw first;
        }

        @Override
        public SSLEngine createClientSslEngine(String peerHost, int peerPort, String endpointIdentification) {
            SSLEngine e = ctx.createSSLEngine(peerHost, peerPort);
            e.setUseClientMode(true);
            SSLParameters p = e.getSSLParameters();
            p.setEndpointIdentificationAlgorithm(endpointIdentification);
            e.setSSLParameters(p);
            return e;
        }

        @Override
        public SSLEngine createServerSslEngine(String peerHost, int peerPort) {
            throw new UnsupportedOperationException("OfferAnyway is for clients only");
        }

        @Override
        public boolean shouldBeRebuilt(Map<String, Object> nextConfigs) {
            return false;
        }

        @Override
        public Set<String> reconfigurableConfigs() {
            return Set.of();
        }

        @Override
        public KeyStore keystore() {
            return null;
        }

        @Override
        public KeyStore truststore() {
            return null;
        }

        @Override
        public void close() {}
    }
}
