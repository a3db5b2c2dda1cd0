package kelp.interop;

import java.time.Duration;
import java.util.ArrayList;
import java.util.BitSet;
import java.util.Collection;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.Set;
import java.util.TreeSet;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ConcurrentLinkedQueue;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.function.Function;

import org.apache.kafka.clients.consumer.CommitFailedException;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerGroupMetadata;
import org.apache.kafka.clients.consumer.ConsumerRebalanceListener;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.ConsumerRecords;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.common.Metric;
import org.apache.kafka.common.MetricName;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.errors.RebalanceInProgressException;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;

/**
 * One classic-protocol group member: a KafkaConsumer that subscribes and polls on its own thread
 * and publishes what the test needs to observe (assignment, generation, member id, rebalance
 * listener calls, heartbeats, the records it saw). Other threads only read those fields or hand
 * the poll thread a task ({@link #call}); the consumer itself is touched by the poll thread alone.
 */
final class GroupMember implements ConsumerRebalanceListener {
    final String name;
    final String clientId;
    final String groupId;
    final String instanceId;
    final String topic;
    private final boolean commitEachPoll;
    private final KafkaConsumer<byte[], byte[]> consumer;
    private final Thread thread;
    private final ConcurrentLinkedQueue<Runnable> tasks = new ConcurrentLinkedQueue<>();

    private volatile boolean stopRequested;
    volatile boolean finished;
    volatile Throwable failure;

    volatile Set<TopicPartition> assignment = Set.of();
    volatile int generation = -1;
    volatile String memberId = "";
    /** Last generation whose assignment this member computed (was leader); -1 never. */
    volatile int ledGeneration = -1;
    volatile long polls;
    volatile long lastPollNanos;
    /** consumer-coordinator-metrics heartbeat-total: heartbeat responses received. */
    volatile long heartbeats;
    /** Commits the group coordinator refused: "why: exception". */
    final List<String> refusedCommits = java.util.Collections.synchronizedList(new ArrayList<>());
    final AtomicInteger assignedCalls = new AtomicInteger();
    final AtomicInteger revokedCalls = new AtomicInteger();
    final AtomicInteger lostCalls = new AtomicInteger();
    /** Listener calls in order, for failure details. */
    final List<String> events = java.util.Collections.synchronizedList(new ArrayList<>());

    // Records seen, guarded by `this`.
    private final Map<Integer, BitSet> seen = new HashMap<>();
    private long records;
    private long redeliveries;
    private final List<String> redeliverySamples = new ArrayList<>();

    private MetricName heartbeatMetric;

    /**
     * @param strategy assignor name (range, roundrobin, cooperative-sticky)
     * @param extra further consumer configs (session.timeout.ms, group.instance.id, ...)
     */
    GroupMember(String name, String groupId, String topic, String strategy, boolean commitEachPoll,
            Map<String, String> extra) {
        this.name = name;
        this.groupId = groupId;
        this.topic = topic;
        this.commitEachPoll = commitEachPoll;
        Properties p = Main.common(name);
        this.clientId = p.getProperty("client.id");
        p.put(ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, ByteArrayDeserializer.class.getName());
        p.put(ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, ByteArrayDeserializer.class.getName());
        p.put(ConsumerConfig.GROUP_ID_CONFIG, groupId);
        p.put(ConsumerConfig.GROUP_PROTOCOL_CONFIG, "classic");
        p.put(ConsumerConfig.PARTITION_ASSIGNMENT_STRATEGY_CONFIG, Assignors.strategyClass(strategy));
        p.put(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, "false");
        p.put(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, "earliest");
        p.put(ConsumerConfig.SESSION_TIMEOUT_MS_CONFIG, "10000");
        p.put(ConsumerConfig.HEARTBEAT_INTERVAL_MS_CONFIG, "1000");
        // Also the rebalance timeout: how long a rebalance may wait for a member that does not rejoin.
        p.put(ConsumerConfig.MAX_POLL_INTERVAL_MS_CONFIG, "60000");
        p.put(ConsumerConfig.MAX_POLL_RECORDS_CONFIG, "100");
        p.putAll(extra);
        this.instanceId = p.getProperty(ConsumerConfig.GROUP_INSTANCE_ID_CONFIG);
        this.consumer = new KafkaConsumer<>(p);
        this.thread = new Thread(this::loop, "member-" + name);
        this.thread.setDaemon(true);
    }

    GroupMember start() {
        thread.start();
        return this;
    }

    private void loop() {
        try {
            consumer.subscribe(List.of(topic), this);
            while (!stopRequested) {
                ConsumerRecords<byte[], byte[]> recs = consumer.poll(Duration.ofMillis(100));
                if (!recs.isEmpty()) {
                    synchronized (this) {
                        for (ConsumerRecord<byte[], byte[]> r : recs) {
                            BitSet b = seen.computeIfAbsent(r.partition(), k -> new BitSet());
                            if (r.offset() > Integer.MAX_VALUE) throw new IllegalStateException("offset too big");
                            if (b.get((int) r.offset())) {
                                redeliveries++;
                                if (redeliverySamples.size() < 5) redeliverySamples.add(r.partition() + "@" + r.offset());
                            }
                            b.set((int) r.offset());
                            records++;
                        }
                    }
                    if (commitEachPoll) commit("after poll");
                }
                publish();
                Runnable t;
                while ((t = tasks.poll()) != null) t.run();
            }
        } catch (Throwable t) {
            failure = t;
        } finally {
            try {
                consumer.close(Duration.ofSeconds(30));
            } catch (Throwable t) {
                if (failure == null) failure = t;
            }
            finished = true;
            // Anything still queued will never run.
            Runnable t;
            while ((t = tasks.poll()) != null) t.run();
        }
    }

    private void commit(String why) {
        try {
            consumer.commitSync(Duration.ofSeconds(30));
        } catch (RebalanceInProgressException | CommitFailedException e) {
            // A refusal while the group rebalances: the positions are committed by the next
            // successful commit instead. Scenarios that expect none check refusedCommits.
            refusedCommits.add("commitSync " + why + " at generation " + consumer.groupMetadata().generationId()
                    + ": " + Main.describe(e));
        }
    }

    private void publish() {
        ConsumerGroupMetadata md = consumer.groupMetadata();
        int gen = md.generationId();
        generation = gen;
        memberId = md.memberId();
        assignment = Set.copyOf(consumer.assignment());
        if (heartbeatMetric == null) {
            for (Map.Entry<MetricName, ? extends Metric> e : consumer.metrics().entrySet()) {
                MetricName n = e.getKey();
                if (n.name().equals("heartbeat-total") && n.group().equals("consumer-coordinator-metrics")) {
                    heartbeatMetric = n;
                }
            }
        }
        if (heartbeatMetric != null) {
            Metric m = consumer.metrics().get(heartbeatMetric);
            if (m != null) heartbeats = (long) ((Double) m.metricValue()).doubleValue();
        }
        lastPollNanos = System.nanoTime();
        polls++;
    }

    private int lastAssignCalls;

    // ---------------------------------------------------------------- rebalance listener

    @Override
    public void onPartitionsRevoked(Collection<TopicPartition> partitions) {
        revokedCalls.incrementAndGet();
        events.add("revoked" + parts(partitions) + "@gen" + consumer.groupMetadata().generationId());
        if (commitEachPoll && !partitions.isEmpty()) commit("on revoke");
    }

    @Override
    public void onPartitionsAssigned(Collection<TopicPartition> partitions) {
        // Called once the rebalance completed (also with no new partitions), with the new generation
        // in groupMetadata(); the assignor ran during that rebalance if this member led it.
        int led = Assignors.assignCalls(clientId);
        if (led != lastAssignCalls) {
            lastAssignCalls = led;
            ledGeneration = consumer.groupMetadata().generationId();
        }
        assignedCalls.incrementAndGet();
        events.add("assigned" + parts(partitions) + "@gen" + consumer.groupMetadata().generationId());
    }

    @Override
    public void onPartitionsLost(Collection<TopicPartition> partitions) {
        lostCalls.incrementAndGet();
        events.add("lost" + parts(partitions) + "@gen" + consumer.groupMetadata().generationId());
    }

    // ---------------------------------------------------------------- for the test thread

    /** Runs f on the poll thread with the consumer; waits up to 60s for its result. */
    <T> T call(String what, Function<KafkaConsumer<byte[], byte[]>, T> f) throws Exception {
        CompletableFuture<T> cf = new CompletableFuture<>();
        tasks.add(() -> {
            if (finished) {
                cf.completeExceptionally(new IllegalStateException(name + " is closed"));
                return;
            }
            try {
                cf.complete(f.apply(consumer));
            } catch (Throwable t) {
                cf.completeExceptionally(t);
            }
        });
        if (finished) {
            Runnable t;
            while ((t = tasks.poll()) != null) t.run();
        }
        try {
            return cf.get(60, TimeUnit.SECONDS);
        } catch (TimeoutException e) {
            throw new Main.CheckFailed("at step '" + Main.step + "': " + name + ": " + what + " did not finish within 60s");
        } catch (ExecutionException e) {
            throw new Main.CheckFailed("at step '" + Main.step + "': " + name + ": " + what + " failed: "
                    + Main.describe(e.getCause()));
        }
    }

    /** Stops the poll loop and closes the consumer (a dynamic member sends LeaveGroup). */
    void close() throws InterruptedException {
        stopRequested = true;
        thread.join(60_000);
        if (!finished) throw new Main.CheckFailed("at step '" + Main.step + "': " + name + " did not close within 60s");
        if (failure != null) {
            throw new Main.CheckFailed("at step '" + Main.step + "': " + name + " failed: " + Main.describe(failure));
        }
    }

    /** Best-effort stop for cleanup paths. */
    void stopQuietly() {
        stopRequested = true;
        try {
            thread.join(40_000);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
    }

    /** Throws if the poll loop died. */
    void checkHealthy() {
        if (failure != null) {
            throw new Main.CheckFailed("at step '" + Main.step + "': member " + name + " failed: " + Main.describe(failure)
                    + "; its listener calls: " + events);
        }
        if (finished && !stopRequested) {
            throw new Main.CheckFailed("at step '" + Main.step + "': member " + name + " stopped on its own");
        }
    }

    synchronized boolean hasSeen(int partition, long offset) {
        BitSet b = seen.get(partition);
        return b != null && b.get((int) offset);
    }

    /** Offsets of `partition` this member saw. */
    synchronized BitSet seen(int partition) {
        BitSet b = seen.get(partition);
        return b == null ? new BitSet() : (BitSet) b.clone();
    }

    synchronized long records() {
        return records;
    }

    synchronized long redeliveries() {
        return redeliveries;
    }

    synchronized List<String> redeliverySamples() {
        return new ArrayList<>(redeliverySamples);
    }

    String state() {
        return name + "{gen " + generation + ", " + parts(assignment) + (finished ? ", closed" : "") + "}";
    }

    static String parts(Collection<TopicPartition> tps) {
        TreeSet<Integer> s = new TreeSet<>();
        for (TopicPartition tp : tps) s.add(tp.partition());
        return s.toString();
    }
}
