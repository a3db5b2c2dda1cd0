package kelp.interop;

import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.BitSet;
import java.util.Collection;
import java.util.Comparator;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.Set;
import java.util.concurrent.Callable;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;
import java.util.concurrent.atomic.AtomicLong;
import java.util.concurrent.atomic.AtomicReference;

import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.Config;
import org.apache.kafka.clients.admin.ConfigEntry;
import org.apache.kafka.clients.admin.CreateTopicsResult;
import org.apache.kafka.clients.admin.DescribeClusterResult;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.admin.TopicDescription;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.ConsumerRecords;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.clients.producer.RecordMetadata;
import org.apache.kafka.common.KafkaFuture;
import org.apache.kafka.common.Node;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.TopicPartitionInfo;
import org.apache.kafka.common.Uuid;
import org.apache.kafka.common.config.ConfigResource;
import org.apache.kafka.common.errors.TopicExistsException;
import org.apache.kafka.common.header.Header;
import org.apache.kafka.common.header.internals.RecordHeaders;
import org.apache.kafka.common.record.TimestampType;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;
import org.apache.kafka.common.serialization.ByteArraySerializer;

/**
 * Interop scenarios for the Apache Kafka Java client against a running kelp.
 *
 * <p>Usage: {@code java -cp ... kelp.interop.Main <client-name> [scenario...]}. Reads
 * KELP_BOOTSTRAP and KELP_TOPIC_PREFIX from the environment and prints one
 * {@code RESULT|client|scenario|status|detail} line per scenario on stdout (see
 * tests/interop/README.md). Exit code 1 if any scenario failed. The TLS/SASL scenarios
 * ({@link Tls}) run only when named and take their listeners from their own variables.
 */
public final class Main {
    static final List<String> CODECS = List.of("none", "gzip", "snappy", "lz4", "zstd");
    static final int PARTITIONS = 3;
    static final int RT_RECORDS = 600; // 200 per partition, several batches each
    static final int IDEMPOTENT_RECORDS = 100_000;

    static String client;
    static String bootstrap;
    static String prefix;
    static String tag; // client name reduced to topic-name-safe characters
    static boolean anyFail = false;
    /** Last step a scenario reached; reported when it times out. */
    static volatile String step = "";

    /** A failed check: its message is the RESULT detail. */
    static final class CheckFailed extends RuntimeException {
        CheckFailed(String msg) {
            super(msg);
        }
    }

    public static void main(String[] args) {
        if (args.length < 1) {
            System.err.println("usage: Main <client-name> [scenario...]");
            System.exit(2);
        }
        client = args[0];
        bootstrap = System.getenv("KELP_BOOTSTRAP");
        prefix = System.getenv().getOrDefault("KELP_TOPIC_PREFIX", "interop-" + System.currentTimeMillis() + "-");
        tag = client.replaceAll("[^A-Za-z0-9]", "");

        List<String> scenarios = new ArrayList<>();
        if (args.length > 1) {
            scenarios.addAll(Arrays.asList(args).subList(1, args.length));
        } else {
            scenarios.add("admin");
            for (String c : CODECS) scenarios.add("roundtrip-" + c);
            scenarios.add("idempotent-100k");
            scenarios.addAll(List.of("group-split", "group-split-roundrobin", "group-split-cooperative", "group-leave",
                    "group-resume", "group-static", "group-two-groups", "admin-groups"));
            if (client.equals("java-4.x")) scenarios.add("acceptance-kill");
        }

        // The TLS/SASL scenarios name their own listeners (Tls.java); the others need KELP_BOOTSTRAP.
        if (bootstrap == null || bootstrap.isEmpty()) {
            boolean missing = false;
            for (String s : scenarios) {
                if (!Tls.SCENARIOS.contains(s)) {
                    result(s, "fail", "KELP_BOOTSTRAP is not set");
                    missing = true;
                }
            }
            if (missing) System.exit(1);
        }

        for (String s : scenarios) {
            if (s.equals("admin")) {
                run(s, 120, Main::adminScenario);
            } else if (s.startsWith("roundtrip-") && CODECS.contains(s.substring("roundtrip-".length()))) {
                String codec = s.substring("roundtrip-".length());
                run(s, 180, () -> roundtrip(codec));
            } else if (s.equals("idempotent-100k")) {
                run(s, 420, Main::idempotent100k);
            } else if (s.equals("group-split")) {
                run(s, 120, () -> Groups.groupSplit(s, "range"));
            } else if (s.equals("group-split-roundrobin")) {
                run(s, 120, () -> Groups.groupSplit(s, "roundrobin"));
            } else if (s.equals("group-split-cooperative")) {
                run(s, 120, () -> Groups.groupSplit(s, "cooperative-sticky"));
            } else if (s.equals("group-leave")) {
                run(s, 180, Groups::groupLeave);
            } else if (s.equals("group-resume")) {
                run(s, 180, Groups::groupResume);
            } else if (s.equals("group-static")) {
                run(s, 180, Groups::groupStatic);
            } else if (s.equals("group-two-groups")) {
                run(s, 240, Groups::groupTwoGroups);
            } else if (s.equals("admin-groups")) {
                run(s, 180, Groups::adminGroups);
            } else if (s.equals("acceptance-kill")) {
                run(s, 420, Groups::acceptanceKill);
            } else if (s.equals("cluster-metadata")) {
                // Only when asked for (scripts/test-seaweedmq-cluster.sh), never by default.
                run(s, 120, Cluster::clusterMetadata);
            } else if (Tls.SCENARIOS.contains(s)) {
                // Only when asked for: they need TLS/SASL listeners the default run does not have.
                run(s, 180, () -> Tls.run(s));
            } else {
                result(s, "fail", "unknown scenario");
            }
        }
        System.out.flush();
        // Client threads of a timed-out scenario may still be alive: exit explicitly.
        System.exit(anyFail ? 1 : 0);
    }

    // ------------------------------------------------------------------ harness

    static synchronized void result(String scenario, String status, String detail) {
        if (status.equals("fail")) anyFail = true;
        String d = detail == null ? "" : detail.replace('\n', ' ').replace('\r', ' ').replace('|', '/');
        if (d.length() > 900) d = d.substring(0, 900) + "...";
        System.out.println("RESULT|" + client + "|" + scenario + "|" + status + "|" + d);
        System.out.flush();
    }

    static void run(String scenario, long timeoutSec, Callable<String> body) {
        step = "start";
        ExecutorService ex = Executors.newSingleThreadExecutor(r -> {
            Thread t = new Thread(r, "scenario-" + scenario);
            t.setDaemon(true);
            return t;
        });
        long t0 = System.nanoTime();
        Future<String> f = ex.submit(body);
        try {
            String detail = f.get(timeoutSec, TimeUnit.SECONDS);
            result(scenario, "pass", detail + String.format(" (%.1fs)", (System.nanoTime() - t0) / 1e9));
        } catch (TimeoutException e) {
            f.cancel(true);
            result(scenario, "fail", "scenario did not finish within " + timeoutSec + "s; last step: " + step);
        } catch (ExecutionException e) {
            Throwable c = e.getCause();
            if (c instanceof CheckFailed) {
                result(scenario, "fail", c.getMessage());
            } else {
                result(scenario, "fail", "at step '" + step + "': " + describe(c));
            }
        } catch (InterruptedException e) {
            result(scenario, "fail", "interrupted");
        } finally {
            ex.shutdownNow();
        }
    }

    static String describe(Throwable t) {
        StringBuilder sb = new StringBuilder();
        Throwable cur = t;
        int depth = 0;
        while (cur != null && depth < 5) {
            if (!(cur instanceof ExecutionException)) {
                if (sb.length() > 0) sb.append(" <- caused by ");
                sb.append(cur.getClass().getName()).append(": ").append(cur.getMessage());
            }
            if (cur.getCause() == cur) break;
            cur = cur.getCause();
            depth++;
        }
        return sb.toString();
    }

    static void check(boolean cond, String msg) {
        if (!cond) throw new CheckFailed("at step '" + step + "': " + msg);
    }

    static <T> T get(KafkaFuture<T> f) throws Exception {
        try {
            return f.get(30, TimeUnit.SECONDS);
        } catch (TimeoutException e) {
            throw new CheckFailed("at step '" + step + "': no answer within 30s");
        }
    }

    static Properties common(String suffix) {
        Properties p = new Properties();
        // Null for a Tls.java-only run: those scenarios pass their own bootstrap.servers.
        if (bootstrap != null) p.put("bootstrap.servers", bootstrap);
        p.put("client.id", "kelp-interop-" + tag + "-" + suffix);
        p.put("request.timeout.ms", "15000");
        p.put("default.api.timeout.ms", "30000");
        p.put("reconnect.backoff.max.ms", "1000");
        return p;
    }

    static Admin adminClient() {
        return adminClient(Map.of());
    }

    /** {@code extra} goes over the defaults (Tls.java: another bootstrap, security settings). */
    static Admin adminClient(Map<String, String> extra) {
        Properties p = common("admin");
        p.put(AdminClientConfig.RETRIES_CONFIG, "5");
        p.putAll(extra);
        return Admin.create(p);
    }

    static Uuid createTopic(Admin admin, String topic, int partitions) throws Exception {
        step = "createTopics " + topic;
        CreateTopicsResult r = admin.createTopics(List.of(new NewTopic(topic, partitions, (short) 1)));
        get(r.all());
        Uuid id = get(r.topicId(topic));
        return id;
    }

    static KafkaProducer<byte[], byte[]> producer(String suffix, Map<String, String> extra) {
        Properties p = common(suffix);
        p.put(ProducerConfig.KEY_SERIALIZER_CLASS_CONFIG, ByteArraySerializer.class.getName());
        p.put(ProducerConfig.VALUE_SERIALIZER_CLASS_CONFIG, ByteArraySerializer.class.getName());
        p.put(ProducerConfig.ACKS_CONFIG, "all");
        p.put(ProducerConfig.MAX_BLOCK_MS_CONFIG, "30000");
        p.put(ProducerConfig.DELIVERY_TIMEOUT_MS_CONFIG, "60000");
        p.put(ProducerConfig.LINGER_MS_CONFIG, "10");
        p.putAll(extra);
        return new KafkaProducer<>(p);
    }

    static KafkaConsumer<byte[], byte[]> consumer(String suffix) {
        return consumer(suffix, Map.of());
    }

    static KafkaConsumer<byte[], byte[]> consumer(String suffix, Map<String, String> extra) {
        Properties p = common(suffix);
        p.put(ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, ByteArrayDeserializer.class.getName());
        p.put(ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, ByteArrayDeserializer.class.getName());
        // No group.id: assign() only, no group coordinator involved.
        p.put(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, "false");
        p.put(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, "earliest");
        p.putAll(extra);
        return new KafkaConsumer<>(p);
    }

    static List<TopicPartition> partitions(String topic, int n) {
        List<TopicPartition> tps = new ArrayList<>();
        for (int i = 0; i < n; i++) tps.add(new TopicPartition(topic, i));
        return tps;
    }

    /**
     * assign() + seekToBeginning, then poll until every partition holds {@code expected[p]}
     * records or 60s (scaled for big reads) pass. Returns records per partition in fetch order.
     */
    static List<List<ConsumerRecord<byte[], byte[]>>> readAll(String topic, int[] expected, long deadlineMs)
            throws Exception {
        return readAll(topic, expected, deadlineMs, Map.of());
    }

    /** As above, the consumer created with {@code settings} over the defaults. */
    static List<List<ConsumerRecord<byte[], byte[]>>> readAll(String topic, int[] expected, long deadlineMs,
            Map<String, String> settings) throws Exception {
        List<TopicPartition> tps = partitions(topic, expected.length);
        List<List<ConsumerRecord<byte[], byte[]>>> got = new ArrayList<>();
        for (int i = 0; i < expected.length; i++) got.add(new ArrayList<>());
        try (KafkaConsumer<byte[], byte[]> c = consumer("consumer", settings)) {
            step = "consumer assign+seekToBeginning";
            c.assign(tps);
            c.seekToBeginning(tps);
            step = "consumer beginningOffsets/endOffsets";
            Map<TopicPartition, Long> begin = c.beginningOffsets(tps, Duration.ofSeconds(30));
            Map<TopicPartition, Long> end = c.endOffsets(tps, Duration.ofSeconds(30));
            for (TopicPartition tp : tps) {
                check(begin.get(tp) != null && begin.get(tp) == 0L,
                        "ListOffsets earliest for " + tp + " = " + begin.get(tp) + ", expected 0");
                check(end.get(tp) != null && end.get(tp) == expected[tp.partition()],
                        "ListOffsets latest for " + tp + " = " + end.get(tp) + ", expected " + expected[tp.partition()]
                                + " (records produced to that partition)");
            }
            step = "consumer poll";
            long deadline = System.currentTimeMillis() + deadlineMs;
            while (System.currentTimeMillis() < deadline) {
                boolean done = true;
                for (int i = 0; i < expected.length; i++) if (got.get(i).size() < expected[i]) done = false;
                if (done) break;
                ConsumerRecords<byte[], byte[]> recs = c.poll(Duration.ofMillis(500));
                for (ConsumerRecord<byte[], byte[]> r : recs) got.get(r.partition()).add(r);
            }
            // One more short poll: anything past the expected count would be a duplicate/extra record.
            ConsumerRecords<byte[], byte[]> extra = c.poll(Duration.ofMillis(300));
            for (ConsumerRecord<byte[], byte[]> r : extra) got.get(r.partition()).add(r);
            for (int i = 0; i < expected.length; i++) {
                check(got.get(i).size() >= expected[i], "partition " + i + ": consumer received " + got.get(i).size()
                        + " of " + expected[i] + " records within " + deadlineMs / 1000 + "s (position "
                        + c.position(new TopicPartition(topic, i), Duration.ofSeconds(10)) + ")");
                check(got.get(i).size() == expected[i], "partition " + i + ": consumer received "
                        + got.get(i).size() + " records, expected exactly " + expected[i]);
            }
        }
        return got;
    }

    static String str(byte[] b) {
        if (b == null) return "null";
        String s = new String(b, StandardCharsets.UTF_8);
        return s.length() > 40 ? "'" + s.substring(0, 40) + "...' (" + b.length + " bytes)" : "'" + s + "'";
    }

    // ------------------------------------------------------------------ admin

    static String adminScenario() throws Exception {
        String topic = prefix + tag + "-admin";
        try (Admin admin = adminClient()) {
            Uuid createdId = createTopic(admin, topic, PARTITIONS);

            step = "createTopics (same name again)";
            try {
                get(admin.createTopics(List.of(new NewTopic(topic, PARTITIONS, (short) 1))).all());
                throw new CheckFailed("creating existing topic " + topic + " again succeeded; expected TOPIC_ALREADY_EXISTS");
            } catch (ExecutionException e) {
                check(e.getCause() instanceof TopicExistsException,
                        "creating existing topic again: expected TopicExistsException, got " + describe(e.getCause()));
            }

            step = "listTopics";
            long deadline = System.currentTimeMillis() + 30_000;
            Set<String> names = get(admin.listTopics().names());
            while (!names.contains(topic) && System.currentTimeMillis() < deadline) {
                Thread.sleep(200);
                names = get(admin.listTopics().names());
            }
            check(names.contains(topic), "listTopics does not contain " + topic + " after 30s: " + names);

            step = "describeCluster";
            DescribeClusterResult dc = admin.describeCluster();
            Collection<Node> nodes = get(dc.nodes());
            check(nodes.size() == 1, "describeCluster: expected 1 node, got " + nodes);
            Node node = nodes.iterator().next();
            check(node.id() >= 0 && node.port() > 0 && node.host() != null && !node.host().isEmpty(),
                    "describeCluster: bad node " + node);
            String clusterId = get(dc.clusterId());
            check(clusterId != null && !clusterId.isEmpty(), "describeCluster: empty cluster id: " + clusterId);
            Node controller = get(dc.controller());
            check(controller != null && !controller.isEmpty(), "describeCluster: no controller: " + controller);
            check(controller.id() == node.id(),
                    "describeCluster: controller " + controller + " is not the only node " + node);

            step = "describeTopics";
            TopicDescription td = get(admin.describeTopics(List.of(topic)).allTopicNames()).get(topic);
            check(td != null, "describeTopics returned no description for " + topic);
            check(td.name().equals(topic), "describeTopics name " + td.name());
            check(!td.isInternal(), "describeTopics: topic marked internal");
            check(td.topicId() != null && !td.topicId().equals(Uuid.ZERO_UUID),
                    "describeTopics: topic id is zero/null: " + td.topicId());
            check(createdId == null || createdId.equals(Uuid.ZERO_UUID) || createdId.equals(td.topicId()),
                    "topic id from createTopics " + createdId + " != describeTopics " + td.topicId());
            List<TopicPartitionInfo> parts = new ArrayList<>(td.partitions());
            parts.sort(Comparator.comparingInt(TopicPartitionInfo::partition));
            check(parts.size() == PARTITIONS, "describeTopics: " + parts.size() + " partitions, expected " + PARTITIONS);
            for (int i = 0; i < PARTITIONS; i++) {
                TopicPartitionInfo pi = parts.get(i);
                check(pi.partition() == i, "describeTopics: partition ids " + parts);
                check(pi.leader() != null && pi.leader().id() == node.id(),
                        "describeTopics: partition " + i + " leader " + pi.leader() + ", expected node " + node.id());
                check(pi.replicas().stream().anyMatch(n -> n.id() == node.id()),
                        "describeTopics: partition " + i + " replicas " + pi.replicas() + " lack the leader");
                check(pi.isr().stream().anyMatch(n -> n.id() == node.id()),
                        "describeTopics: partition " + i + " isr " + pi.isr() + " lacks the leader");
            }

            step = "describeConfigs topic";
            ConfigResource tr = new ConfigResource(ConfigResource.Type.TOPIC, topic);
            Config tc = get(admin.describeConfigs(List.of(tr)).all()).get(tr);
            check(tc != null, "describeConfigs(topic) returned nothing");
            ConfigEntry retention = tc.get("retention.ms");
            ConfigEntry cleanup = tc.get("cleanup.policy");
            check(retention != null && retention.value() != null, "describeConfigs(topic): no retention.ms in " + keys(tc));
            try {
                Long.parseLong(retention.value());
            } catch (NumberFormatException e) {
                throw new CheckFailed("describeConfigs(topic): retention.ms not a number: " + retention.value());
            }
            check(cleanup != null && cleanup.value() != null, "describeConfigs(topic): no cleanup.policy in " + keys(tc));
            check(cleanup.value().equals("delete"),
                    "describeConfigs(topic): cleanup.policy = " + cleanup.value() + ", expected default 'delete'");

            step = "describeConfigs broker";
            ConfigResource br = new ConfigResource(ConfigResource.Type.BROKER, String.valueOf(node.id()));
            Config bc = get(admin.describeConfigs(List.of(br)).all()).get(br);
            check(bc != null && !bc.entries().isEmpty(), "describeConfigs(broker " + node.id() + "): no entries");

            return String.format("node %d %s:%d, cluster %s, controller %d, 3 partitions led by %d, "
                            + "retention.ms=%s cleanup.policy=%s, broker configs: %d entries",
                    node.id(), node.host(), node.port(), clusterId, controller.id(), node.id(), retention.value(),
                    cleanup.value(), bc.entries().size());
        }
    }

    static String keys(Config c) {
        List<String> k = new ArrayList<>();
        for (ConfigEntry e : c.entries()) k.add(e.name());
        return k.toString();
    }

    // ------------------------------------------------------------------ roundtrip

    record Expected(int partition, long offset, byte[] key, byte[] value, List<Header> headers, long timestamp) {}

    static byte[] valueFor(int i) {
        if (i % 97 == 13) return null; // a tombstone now and then
        if (i % 97 == 31) return new byte[0];
        StringBuilder sb = new StringBuilder("value-" + i + "-");
        int reps = 1 + (i * 37) % 60; // 10 bytes .. ~2 KB, compressible
        for (int r = 0; r < reps; r++) sb.append("lorem ipsum ").append(r % 7).append(' ');
        return sb.toString().getBytes(StandardCharsets.UTF_8);
    }

    static String roundtrip(String codec) throws Exception {
        String topic = prefix + tag + "-rt-" + codec;
        try (Admin admin = adminClient()) {
            createTopic(admin, topic, PARTITIONS);
        }

        List<List<Expected>> expected = new ArrayList<>();
        for (int p = 0; p < PARTITIONS; p++) expected.add(new ArrayList<>());
        long baseTs = (System.currentTimeMillis() / 1000) * 1000 - 3_600_000L; // an hour ago, explicit

        // Idempotence is covered by idempotent-100k; here it is off (with one request in flight, so
        // order is kept) to test the codec path alone.
        Map<String, String> cfg = Map.of(
                ProducerConfig.COMPRESSION_TYPE_CONFIG, codec,
                ProducerConfig.ENABLE_IDEMPOTENCE_CONFIG, "false",
                ProducerConfig.MAX_IN_FLIGHT_REQUESTS_PER_CONNECTION, "1");
        List<Future<RecordMetadata>> futures = new ArrayList<>();
        List<Expected> sent = new ArrayList<>();
        try (KafkaProducer<byte[], byte[]> producer = producer("producer-" + codec, cfg)) {
            step = "produce (" + codec + ")";
            for (int i = 0; i < RT_RECORDS; i++) {
                int p = i % PARTITIONS;
                byte[] key = ("key-" + (i % 17)).getBytes(StandardCharsets.UTF_8);
                byte[] value = valueFor(i);
                RecordHeaders headers = new RecordHeaders();
                headers.add("dup", ("first-" + i).getBytes(StandardCharsets.UTF_8));
                headers.add("dup", ("second-" + i).getBytes(StandardCharsets.UTF_8));
                long ts = baseTs + i * 7L;
                Expected e = new Expected(p, expected.get(p).size(), key, value, List.of(headers.toArray()), ts);
                expected.get(p).add(e);
                sent.add(e);
                futures.add(producer.send(new ProducerRecord<>(topic, p, ts, key, value, headers)));
            }
            step = "producer flush";
            producer.flush();
            step = "produce acks";
            for (int i = 0; i < futures.size(); i++) {
                Expected e = sent.get(i);
                RecordMetadata md;
                try {
                    md = futures.get(i).get(60, TimeUnit.SECONDS);
                } catch (ExecutionException ex) {
                    throw new CheckFailed("produce (" + codec + "): record " + i + " (partition " + e.partition()
                            + ") failed: " + describe(ex.getCause()));
                }
                check(md.partition() == e.partition(), "record " + i + " acked on partition " + md.partition()
                        + ", sent to " + e.partition());
                check(md.offset() == e.offset(), "record " + i + " (partition " + e.partition() + ") acked at offset "
                        + md.offset() + ", expected " + e.offset() + " (dense from 0)");
                check(md.timestamp() == e.timestamp(), "record " + i + " acked with timestamp " + md.timestamp()
                        + ", expected CreateTime " + e.timestamp());
            }
        }

        int[] counts = new int[PARTITIONS];
        for (int p = 0; p < PARTITIONS; p++) counts[p] = expected.get(p).size();
        List<List<ConsumerRecord<byte[], byte[]>>> got = readAll(topic, counts, 60_000);

        step = "compare";
        for (int p = 0; p < PARTITIONS; p++) {
            for (int j = 0; j < counts[p]; j++) {
                Expected e = expected.get(p).get(j);
                ConsumerRecord<byte[], byte[]> r = got.get(p).get(j);
                String where = "partition " + p + " record #" + j + ": ";
                check(r.offset() == j, where + "offset " + r.offset() + ", expected " + j);
                check(Arrays.equals(r.key(), e.key()), where + "key " + str(r.key()) + ", expected " + str(e.key()));
                check(Arrays.equals(r.value(), e.value()),
                        where + "value " + str(r.value()) + ", expected " + str(e.value()));
                check(r.timestampType() == TimestampType.CREATE_TIME,
                        where + "timestamp type " + r.timestampType() + ", expected CreateTime");
                check(r.timestamp() == e.timestamp(),
                        where + "timestamp " + r.timestamp() + ", expected " + e.timestamp());
                Header[] hs = r.headers().toArray();
                check(hs.length == e.headers().size(), where + "headers " + headersStr(hs) + ", expected "
                        + headersStr(e.headers().toArray(new Header[0])));
                for (int h = 0; h < hs.length; h++) {
                    Header want = e.headers().get(h);
                    check(hs[h].key().equals(want.key()) && Arrays.equals(hs[h].value(), want.value()),
                            where + "header " + h + " " + headersStr(hs) + ", expected "
                                    + headersStr(e.headers().toArray(new Header[0])));
                }
            }
        }
        return String.format("%d records (%d/%d/%d per partition) with codec %s, 2 same-key headers each, "
                + "explicit timestamps; all match", RT_RECORDS, counts[0], counts[1], counts[2], codec);
    }

    static String headersStr(Header[] hs) {
        StringBuilder sb = new StringBuilder("[");
        for (Header h : hs) {
            if (sb.length() > 1) sb.append(", ");
            sb.append(h.key()).append('=').append(str(h.value()));
        }
        return sb.append(']').toString();
    }

    // ------------------------------------------------------------------ idempotent-100k

    static String idempotent100k() throws Exception {
        String topic = prefix + tag + "-idem100k";
        try (Admin admin = adminClient()) {
            createTopic(admin, topic, PARTITIONS);
        }
        int n = IDEMPOTENT_RECORDS;
        long[] ackedOffset = new long[n];
        Arrays.fill(ackedOffset, -1);
        AtomicReference<String> firstError = new AtomicReference<>();
        AtomicLong acked = new AtomicLong();
        Map<String, String> cfg = new HashMap<>();
        cfg.put(ProducerConfig.ENABLE_IDEMPOTENCE_CONFIG, "true");
        cfg.put(ProducerConfig.MAX_IN_FLIGHT_REQUESTS_PER_CONNECTION, "5");
        cfg.put(ProducerConfig.DELIVERY_TIMEOUT_MS_CONFIG, "120000");
        cfg.put(ProducerConfig.LINGER_MS_CONFIG, "5");
        long t0 = System.currentTimeMillis();
        try (KafkaProducer<byte[], byte[]> producer = producer("producer-idem", cfg)) {
            step = "idempotent produce (InitProducerId + Produce)";
            for (int seq = 0; seq < n; seq++) {
                final int s = seq;
                int p = seq % PARTITIONS;
                byte[] key = ("k" + seq).getBytes(StandardCharsets.UTF_8);
                byte[] value = String.format("seq-%08d", seq).getBytes(StandardCharsets.UTF_8);
                producer.send(new ProducerRecord<>(topic, p, key, value), (md, ex) -> {
                    if (ex != null) {
                        firstError.compareAndSet(null, "send of seq " + s + " failed: " + describe(ex));
                    } else {
                        ackedOffset[s] = md.offset();
                        acked.incrementAndGet();
                    }
                });
                if (firstError.get() != null) break;
            }
            step = "idempotent producer flush";
            producer.flush();
        }
        long produceMs = System.currentTimeMillis() - t0;
        check(firstError.get() == null, firstError.get() == null ? "" : firstError.get());
        check(acked.get() == n, "only " + acked.get() + " of " + n + " sends acknowledged");
        step = "check acked offsets";
        long[] nextOffset = new long[PARTITIONS];
        for (int seq = 0; seq < n; seq++) {
            int p = seq % PARTITIONS;
            check(ackedOffset[seq] == nextOffset[p], "seq " + seq + " (partition " + p + ") acked at offset "
                    + ackedOffset[seq] + ", expected " + nextOffset[p]);
            nextOffset[p]++;
        }

        int[] counts = new int[PARTITIONS];
        for (int p = 0; p < PARTITIONS; p++) counts[p] = (int) nextOffset[p];
        long t1 = System.currentTimeMillis();
        List<List<ConsumerRecord<byte[], byte[]>>> got = readAll(topic, counts, 180_000);
        long consumeMs = System.currentTimeMillis() - t1;

        step = "check consumed sequence";
        BitSet seen = new BitSet(n);
        for (int p = 0; p < PARTITIONS; p++) {
            List<ConsumerRecord<byte[], byte[]>> recs = got.get(p);
            for (int j = 0; j < recs.size(); j++) {
                ConsumerRecord<byte[], byte[]> r = recs.get(j);
                check(r.offset() == j, "partition " + p + ": record #" + j + " has offset " + r.offset());
                String v = new String(r.value(), StandardCharsets.UTF_8);
                check(v.startsWith("seq-"), "partition " + p + " offset " + j + ": unexpected value " + str(r.value()));
                int seq = Integer.parseInt(v.substring(4));
                check(!seen.get(seq), "duplicate: seq " + seq + " seen again at partition " + p + " offset " + j);
                seen.set(seq);
                int want = p + PARTITIONS * j;
                check(seq == want, "partition " + p + " offset " + j + ": seq " + seq + ", expected " + want
                        + (seq > want ? " (gap)" : " (out of order)"));
                check(Arrays.equals(r.key(), ("k" + seq).getBytes(StandardCharsets.UTF_8)),
                        "partition " + p + " offset " + j + ": key " + str(r.key()) + " for seq " + seq);
            }
        }
        check(seen.cardinality() == n, "only " + seen.cardinality() + " distinct sequence numbers of " + n);
        return String.format("%d records over %d partitions (%d/%d/%d), no duplicate, no gap, order kept; "
                + "produce %.1fs, consume %.1fs", n, PARTITIONS, counts[0], counts[1], counts[2],
                produceMs / 1e3, consumeMs / 1e3);
    }

    private Main() {}
}
