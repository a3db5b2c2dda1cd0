package kelp.streams;

import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Comparator;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.TreeMap;
import java.util.stream.Stream;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.serialization.LongDeserializer;
import org.apache.kafka.common.serialization.Serdes;
import org.apache.kafka.common.serialization.StringDeserializer;
import org.apache.kafka.common.serialization.StringSerializer;
import org.apache.kafka.streams.KafkaStreams;
import org.apache.kafka.streams.StreamsBuilder;
import org.apache.kafka.streams.StreamsConfig;
import org.apache.kafka.streams.kstream.Consumed;
import org.apache.kafka.streams.kstream.Grouped;
import org.apache.kafka.streams.kstream.Materialized;
import org.apache.kafka.streams.kstream.Produced;

/**
 * wordcount-restart: a Kafka Streams word count (input split into words, re-keyed through a
 * repartition topic, counted in a state store backed by a compacted changelog topic, counts
 * written to an output topic), at-least-once. Half the lines are produced and counted; the
 * application is closed and its local state deleted; the second half is produced and a new
 * instance (same application id) restores the store from the changelog and goes on. The
 * output's latest count of every word must equal the word's count over all lines: a lost
 * changelog, a wrong restore, a repartition topic read twice or a commit not resumed would
 * each show as a wrong count.
 */
public final class WordCount {
    static final String CLIENT = "java-streams";
    static final int LINES = 2000;
    static final int WORDS = 50;

    public static void main(String[] args) throws Exception {
        String bootstrap = System.getenv("KELP_BOOTSTRAP");
        String prefix = System.getenv("KELP_TOPIC_PREFIX");
        long t0 = System.nanoTime();
        try {
            String detail = run(bootstrap, prefix);
            result("pass", detail + String.format(" (%.1fs)", (System.nanoTime() - t0) / 1e9));
            System.exit(0);
        } catch (Throwable e) {
            e.printStackTrace();
            result("fail", e.toString().replace('|', '/').replace('\n', ' '));
            System.exit(1);
        }
    }

    static void result(String status, String detail) {
        System.out.println("RESULT|" + CLIENT + "|wordcount-restart|" + status + "|" + detail);
        System.out.flush();
    }

    static String line(int i) {
        StringBuilder b = new StringBuilder();
        for (int j = 0; j <= i % 5; j++) {
            if (j > 0) {
                b.append(' ');
            }
            b.append("w").append((i * 7 + j * 13) % WORDS);
        }
        return b.toString();
    }

    static Map<String, Long> counts(int lines) {
        Map<String, Long> m = new TreeMap<>();
        for (int i = 0; i < lines; i++) {
            for (String w : line(i).split(" ")) {
                m.merge(w, 1L, Long::sum);
            }
        }
        return m;
    }

    static String run(String bootstrap, String prefix) throws Exception {
        String in = prefix + "streams-in";
        String out = prefix + "streams-out";
        String app = prefix + "streams-wc";
        Properties ac = new Properties();
        ac.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        try (Admin admin = Admin.create(ac)) {
            admin.createTopics(List.of(new NewTopic(in, 3, (short) 1), new NewTopic(out, 3, (short) 1)))
                    .all()
                    .get();
        }
        Properties pc = new Properties();
        pc.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        pc.put(ProducerConfig.ACKS_CONFIG, "all");
        try (KafkaProducer<String, String> producer =
                        new KafkaProducer<>(pc, new StringSerializer(), new StringSerializer());
                Counts seen = new Counts(bootstrap, out)) {
            produce(producer, in, 0, LINES / 2);
            Path stateA = Files.createTempDirectory("kelp-streams-a");
            KafkaStreams a = start(bootstrap, app, in, out, stateA);
            seen.await(counts(LINES / 2), "first half, first instance");
            a.close(Duration.ofSeconds(60));
            deleteTree(stateA);

            produce(producer, in, LINES / 2, LINES);
            Path stateB = Files.createTempDirectory("kelp-streams-b");
            KafkaStreams b = start(bootstrap, app, in, out, stateB);
            seen.await(counts(LINES), "all lines, second instance restored from the changelog");
            b.close(Duration.ofSeconds(60));
            deleteTree(stateB);
            return LINES + " lines, " + counts(LINES).size() + " words: every count right after a restart with "
                    + "the local state deleted (restored from the changelog), "
                    + seen.records + " count updates read";
        }
    }

    static void produce(KafkaProducer<String, String> p, String topic, int from, int to) throws Exception {
        for (int i = from; i < to; i++) {
            p.send(new ProducerRecord<>(topic, "line-" + i, line(i)));
        }
        p.flush();
    }

    static KafkaStreams start(String bootstrap, String app, String in, String out, Path state) {
        Properties sc = new Properties();
        sc.put(StreamsConfig.APPLICATION_ID_CONFIG, app);
        sc.put(StreamsConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        sc.put(StreamsConfig.STATE_DIR_CONFIG, state.toString());
        sc.put(StreamsConfig.PROCESSING_GUARANTEE_CONFIG, StreamsConfig.AT_LEAST_ONCE);
        sc.put(StreamsConfig.COMMIT_INTERVAL_MS_CONFIG, 500);
        sc.put(StreamsConfig.STATESTORE_CACHE_MAX_BYTES_CONFIG, 0);
        sc.put(StreamsConfig.REPLICATION_FACTOR_CONFIG, 1);
        sc.put(StreamsConfig.consumerPrefix(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG), "earliest");
        StreamsBuilder b = new StreamsBuilder();
        b.stream(in, Consumed.with(Serdes.String(), Serdes.String()))
                .flatMapValues(v -> Arrays.asList(v.split(" ")))
                .groupBy((k, w) -> w, Grouped.with("words", Serdes.String(), Serdes.String()))
                .count(Materialized.as("counts"))
                .toStream()
                .to(out, Produced.with(Serdes.String(), Serdes.Long()));
        KafkaStreams s = new KafkaStreams(b.build(), sc);
        s.setUncaughtExceptionHandler(e -> {
            e.printStackTrace();
            return org.apache.kafka.streams.errors.StreamsUncaughtExceptionHandler.StreamThreadExceptionResponse
                    .SHUTDOWN_CLIENT;
        });
        s.start();
        return s;
    }

    static void deleteTree(Path p) throws Exception {
        try (Stream<Path> w = Files.walk(p)) {
            for (Path q : w.sorted(Comparator.reverseOrder()).toList()) {
                Files.deleteIfExists(q);
            }
        }
    }

    /** The output topic read from the start: the latest count of every word. */
    static final class Counts implements AutoCloseable {
        final KafkaConsumer<String, Long> c;
        final Map<String, Long> latest = new HashMap<>();
        long records;

        Counts(String bootstrap, String topic) {
            Properties p = new Properties();
            p.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
            c = new KafkaConsumer<>(p, new StringDeserializer(), new LongDeserializer());
            List<TopicPartition> parts = new ArrayList<>();
            for (int i = 0; i < 3; i++) {
                parts.add(new TopicPartition(topic, i));
            }
            c.assign(parts);
            c.seekToBeginning(parts);
        }

        void await(Map<String, Long> want, String what) {
            long deadline = System.nanoTime() + Duration.ofSeconds(180).toNanos();
            while (!new TreeMap<>(latest).equals(want)) {
                if (System.nanoTime() > deadline) {
                    Map<String, String> wrong = new TreeMap<>();
                    for (var e : want.entrySet()) {
                        Long got = latest.get(e.getKey());
                        if (!e.getValue().equals(got)) {
                            wrong.put(e.getKey(), got + " (want " + e.getValue() + ")");
                        }
                    }
                    throw new AssertionError(what + ": after 180 s " + wrong.size() + " of " + want.size()
                            + " words have the wrong latest count, e.g. "
                            + wrong.entrySet().stream().limit(5).toList());
                }
                for (ConsumerRecord<String, Long> r : c.poll(Duration.ofMillis(500))) {
                    latest.put(r.key(), r.value());
                    records++;
                }
            }
        }

        @Override
        public void close() {
            c.close();
        }
    }
}
