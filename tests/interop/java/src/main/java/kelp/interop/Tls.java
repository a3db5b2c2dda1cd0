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
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.clients.producer.RecordMetadata;
import org.apache.kafka.common.KafkaException;
import org.apache.kafka.common.Node;
import org.apache.kafka.common.config.SaslConfigs;
import org.apache.kafka.common.config.SslConfigs;
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
 * </ul>
 * kelp's certificate is verified against KELP_TLS_CA with Kafka's PEM trust store
 * (ssl.truststore.type=PEM) and host name verification on (https, the default, set explicitly):
 * kelp's certificate names 127.0.0.1.
 */
final class Tls {
    private Tls() {}

    static final Set<String> SCENARIOS = Set.of("sasl-ssl-scram-sha-512", "sasl-ssl-plain",
            "sasl-ssl-wrong-password", "mtls", "mtls-no-cert", "mtls-stranger-cert");
    static final int RECORDS = 200;
    /** A wrong password must be refused well before a client's own timeouts would hide it. */
    static final long SASL_REFUSE_MS = 10_000;
    /** A refused certificate: a handshake failure, or at worst no metadata within this long. */
    static final long TLS_REFUSE_MS = 15_000;

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
        Map<String, String> m = tlsBase("KELP_SASL_SSL_BOOTSTRAP");
        m.put(CommonClientConfigs.SECURITY_PROTOCOL_CONFIG, "SASL_SSL");
        m.put(SaslConfigs.SASL_MECHANISM, mechanism);
        String module = mechanism.equals("PLAIN")
                ? "org.apache.kafka.common.security.plain.PlainLoginModule"
                : "org.apache.kafka.common.security.scram.ScramLoginModule";
        m.put(SaslConfigs.SASL_JAAS_CONFIG, module + " required username=\"" + jaasQuote(env("KELP_SASL_USER"))
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
