package kelp.interop;

import java.io.BufferedReader;
import java.io.BufferedWriter;
import java.io.IOException;
import java.io.InputStreamReader;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.Collection;
import java.util.HashMap;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.Set;
import java.util.TreeMap;
import java.util.TreeSet;

import org.apache.kafka.clients.consumer.CommitFailedException;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRebalanceListener;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.ConsumerRecords;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.consumer.OffsetAndMetadata;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.errors.RebalanceInProgressException;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;

/**
 * One member of the acceptance-kill group, in its own JVM (started by {@link Groups}).
 *
 * <p>Usage: {@code KillChild <bootstrap> <topic> <group> <name> <dir> <records-per-second>}.
 * Subscribes with the classic protocol and the cooperative-sticky assignor, and for every poll:
 * appends each record it got to {@code <dir>/<name>.rec} ("partition offset" lines) and flushes
 * it, then commitSync()s the consumed positions of the partitions it owns and logs the commit.
 * Events go to {@code <dir>/<name>.ev}:
 * <pre>
 *   GEN g memberId           generation after a poll, when it changed
 *   LEADER g                 this member computed the assignment of generation g
 *   ASSIGNED g [..] / REVOKED g [..] / LOST g [..]   rebalance listener calls
 *   OWNED g [..]             partitions owned after that call
 *   COMMITTING g p=o,p=o     about to commitSync these (o = next offset to read)
 *   COMMIT g p=o,p=o         that commitSync succeeded
 *   COMMITFAIL g msg         a commit the group refused (retried by the next commit)
 *   STOPPED                  closed cleanly after "stop" on stdin
 * </pre>
 * Consumption is paced to {@code records-per-second} (the pause sits between writing a batch and
 * committing it, like processing time) so that the test can kill a member while it still has work
 * left, and most likely with records read but not committed. Stops on "stop" or end of stdin (so it never outlives the test).
 */
public final class KillChild implements ConsumerRebalanceListener {
    private final KafkaConsumer<byte[], byte[]> consumer;
    private final String clientId;
    private final BufferedWriter rec;
    private final BufferedWriter ev;
    private final Map<TopicPartition, Long> consumed = new HashMap<>();
    private final Map<TopicPartition, Long> committed = new HashMap<>();
    private final Set<TopicPartition> owned = new HashSet<>();
    private int assignCalls;
    private volatile boolean stop;

    private KillChild(String bootstrap, String group, String name, Path dir) throws IOException {
        rec = Files.newBufferedWriter(dir.resolve(name + ".rec"), StandardCharsets.UTF_8);
        ev = Files.newBufferedWriter(dir.resolve(name + ".ev"), StandardCharsets.UTF_8);
        Properties p = new Properties();
        clientId = "kelp-interop-accept-kill-" + name;
        p.put("bootstrap.servers", bootstrap);
        p.put("client.id", clientId);
        p.put("request.timeout.ms", "15000");
        p.put("default.api.timeout.ms", "30000");
        p.put("reconnect.backoff.max.ms", "1000");
        p.put(ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, ByteArrayDeserializer.class.getName());
        p.put(ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, ByteArrayDeserializer.class.getName());
        p.put(ConsumerConfig.GROUP_ID_CONFIG, group);
        p.put(ConsumerConfig.GROUP_PROTOCOL_CONFIG, "classic");
        p.put(ConsumerConfig.PARTITION_ASSIGNMENT_STRATEGY_CONFIG, Assignors.strategyClass("cooperative-sticky"));
        p.put(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, "false");
        p.put(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, "earliest");
        // Short (Kafka's default minimum) so the killed member is noticed soon.
        p.put(ConsumerConfig.SESSION_TIMEOUT_MS_CONFIG, "6000");
        p.put(ConsumerConfig.HEARTBEAT_INTERVAL_MS_CONFIG, "1000");
        p.put(ConsumerConfig.MAX_POLL_INTERVAL_MS_CONFIG, "60000");
        p.put(ConsumerConfig.MAX_POLL_RECORDS_CONFIG, "200");
        // Small fetches, so that the partitions a member owns advance together rather than one
        // after the other.
        p.put(ConsumerConfig.MAX_PARTITION_FETCH_BYTES_CONFIG, "8192");
        consumer = new KafkaConsumer<>(p);
    }

    public static void main(String[] args) throws Exception {
        if (args.length != 6) {
            System.err.println("usage: KillChild <bootstrap> <topic> <group> <name> <dir> <records-per-second>");
            System.exit(2);
        }
        try {
            KillChild c = new KillChild(args[0], args[2], args[3], Path.of(args[4]));
            c.run(args[1], Integer.parseInt(args[5]));
            System.exit(0);
        } catch (Throwable t) {
            t.printStackTrace();
            System.exit(3);
        }
    }

    private void run(String topic, int rate) throws Exception {
        Thread stdin = new Thread(() -> {
            try (BufferedReader r = new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8))) {
                String line;
                while ((line = r.readLine()) != null) {
                    if (line.trim().equals("stop")) break;
                }
            } catch (IOException e) {
                // treat like end of input
            }
            stop = true;
        }, "stdin");
        stdin.setDaemon(true);
        stdin.start();

        consumer.subscribe(List.of(topic), this);
        int gen = -1;
        long processed = 0;
        long paceStart = -1;
        while (!stop) {
            ConsumerRecords<byte[], byte[]> recs = consumer.poll(Duration.ofMillis(100));
            for (ConsumerRecord<byte[], byte[]> r : recs) {
                rec.write(r.partition() + " " + r.offset() + "\n");
                consumed.put(new TopicPartition(r.topic(), r.partition()), r.offset() + 1);
            }
            rec.flush(); // seen before committed: a kill can only cause re-reads, never gaps
            if (!recs.isEmpty()) {
                // "Processing time" between poll and commit, so a kill usually lands on read but
                // uncommitted records.
                if (paceStart < 0) paceStart = System.nanoTime();
                processed += recs.count();
                double aheadMs = processed * 1000.0 / rate - (System.nanoTime() - paceStart) / 1e6;
                if (aheadMs > 0) Thread.sleep((long) Math.min(aheadMs, 100));
            }
            commit(consumer.assignment());
            int g = consumer.groupMetadata().generationId();
            if (g != gen) {
                gen = g;
                ev("GEN " + g + " " + consumer.groupMetadata().memberId());
            }
            ev.flush();
        }
        consumer.close(Duration.ofSeconds(30));
        ev("STOPPED");
        ev.flush();
        rec.close();
        ev.close();
    }

    /** commitSync the consumed positions of `parts` that moved since their last commit. */
    private void commit(Collection<TopicPartition> parts) throws IOException {
        Map<TopicPartition, OffsetAndMetadata> m = new HashMap<>();
        for (TopicPartition tp : parts) {
            Long c = consumed.get(tp);
            if (c != null && c > committed.getOrDefault(tp, -1L)) m.put(tp, new OffsetAndMetadata(c));
        }
        if (m.isEmpty()) return;
        int g = consumer.groupMetadata().generationId();
        String what = describe(m);
        ev("COMMITTING " + g + " " + what); // a kill before "COMMIT" leaves it open: it may or may not have landed
        ev.flush();
        try {
            consumer.commitSync(m, Duration.ofSeconds(30));
        } catch (RebalanceInProgressException | CommitFailedException e) {
            ev("COMMITFAIL " + g + " " + e.getClass().getSimpleName() + ": " + String.valueOf(e.getMessage()).replace('\n', ' '));
            ev.flush();
            return;
        }
        for (Map.Entry<TopicPartition, OffsetAndMetadata> e : m.entrySet()) committed.put(e.getKey(), e.getValue().offset());
        ev("COMMIT " + g + " " + what);
        ev.flush();
    }

    private static String describe(Map<TopicPartition, OffsetAndMetadata> m) {
        TreeMap<Integer, Long> s = new TreeMap<>();
        for (Map.Entry<TopicPartition, OffsetAndMetadata> e : m.entrySet()) s.put(e.getKey().partition(), e.getValue().offset());
        StringBuilder sb = new StringBuilder();
        for (Map.Entry<Integer, Long> e : s.entrySet()) {
            if (sb.length() > 0) sb.append(',');
            sb.append(e.getKey()).append('=').append(e.getValue());
        }
        return sb.toString();
    }

    private void ev(String line) throws IOException {
        ev.write(line + "\n");
    }

    private String owned() {
        TreeSet<Integer> s = new TreeSet<>();
        for (TopicPartition tp : owned) s.add(tp.partition());
        return s.toString().replace(" ", "");
    }

    private static String parts(Collection<TopicPartition> tps) {
        TreeSet<Integer> s = new TreeSet<>();
        for (TopicPartition tp : tps) s.add(tp.partition());
        return s.toString().replace(" ", "");
    }

    @Override
    public void onPartitionsRevoked(Collection<TopicPartition> partitions) {
        try {
            commit(partitions); // hand them over with everything processed committed
            for (TopicPartition tp : partitions) {
                consumed.remove(tp);
                committed.remove(tp);
            }
            owned.removeAll(partitions);
            int g = consumer.groupMetadata().generationId();
            ev("REVOKED " + g + " " + parts(partitions));
            ev("OWNED " + g + " " + owned());
            ev.flush();
        } catch (IOException e) {
            throw new RuntimeException(e);
        }
    }

    @Override
    public void onPartitionsAssigned(Collection<TopicPartition> partitions) {
        try {
            owned.addAll(partitions);
            int g = consumer.groupMetadata().generationId();
            // Called after every completed rebalance, with its generation; the assignor ran during
            // it if this member was the leader.
            int a = Assignors.assignCalls(clientId);
            if (a != assignCalls) {
                assignCalls = a;
                ev("LEADER " + g);
            }
            ev("ASSIGNED " + g + " " + parts(partitions));
            ev("OWNED " + g + " " + owned());
            ev.flush();
        } catch (IOException e) {
            throw new RuntimeException(e);
        }
    }

    @Override
    public void onPartitionsLost(Collection<TopicPartition> partitions) {
        try {
            for (TopicPartition tp : partitions) {
                consumed.remove(tp);
                committed.remove(tp);
            }
            owned.removeAll(partitions);
            int g = consumer.groupMetadata().generationId();
            ev("LOST " + g + " " + parts(partitions));
            ev("OWNED " + g + " " + owned());
            ev.flush();
        } catch (IOException e) {
            throw new RuntimeException(e);
        }
    }
}
