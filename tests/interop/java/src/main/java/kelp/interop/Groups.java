package kelp.interop;

import static kelp.interop.Main.check;
import static kelp.interop.Main.get;

import java.io.IOException;
import java.io.OutputStream;
import java.io.RandomAccessFile;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.BitSet;
import java.util.Collection;
import java.util.Comparator;
import java.util.HashMap;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.Set;
import java.util.TreeMap;
import java.util.TreeSet;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicLong;
import java.util.concurrent.atomic.AtomicReference;
import java.util.function.Supplier;

import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.ConsumerGroupDescription;
import org.apache.kafka.clients.admin.ConsumerGroupListing;
import org.apache.kafka.clients.admin.MemberDescription;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.consumer.OffsetAndMetadata;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.ConsumerGroupState;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.errors.GroupIdNotFoundException;
import org.apache.kafka.common.errors.GroupNotEmptyException;
import org.apache.kafka.common.errors.GroupSubscribedToTopicException;
import org.apache.kafka.common.errors.UnknownMemberIdException;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;

/**
 * Classic consumer-group scenarios (group.protocol=classic): several KafkaConsumers in one group
 * (threads, see {@link GroupMember}), and acceptance-kill with one JVM per member
 * ({@link KillChild}). Every wait polls an observable condition against a deadline. All topics
 * have 6 partitions.
 * <ul>
 * <li>group-split, -roundrobin, -cooperative: 3 members; every partition owned by exactly one, in
 *     one generation, balanced (range/roundrobin: exactly the assignor's layout for the member ids
 *     the coordinator gave out), exactly one leader, unchanged over 2 more heartbeats each.
 * <li>group-leave: 3 members (range, commitSync after every poll and on revoke); one closes; the
 *     other 2 own all partitions in the next generation well before the 30s session timeout,
 *     consume a second batch; no commit refused, no record delivered twice.
 * <li>group-resume: 2 members commitSync chosen offsets (with metadata), all close; a fresh
 *     consumer reads those commits; a new member starts exactly there (earliest where none).
 * <li>group-static: 3 static members; a follower, then the leader, is closed (no LeaveGroup) and
 *     restarted: same generation and partitions, new member id, and the others see no rebalance.
 * <li>group-two-groups: two groups on one topic: B forming, committing and leaving does not move
 *     A's generation or commits; each group's commits are its own.
 * <li>admin-groups: list/describe/listOffsets of a live group; deleteGroups, deleteOffsets and
 *     alterOffsets refused while it has members; allowed once empty; then the group is gone.
 * <li>acceptance-kill: 100,000 records; 3 member JVMs (cooperative-sticky) commit as they go;
 *     the leader gets SIGKILL mid-run; every record is seen, and re-reads are exactly the
 *     killed member's uncommitted tail.
 * </ul>
 */
final class Groups {
    static final int GP = 6; // partitions of every group topic

    // ------------------------------------------------------------------ helpers

    /** Polls `notYet` (null = reached, else the current state) until it is reached or the deadline. */
    static void await(String what, long timeoutMs, Collection<GroupMember> members, Supplier<String> notYet)
            throws InterruptedException {
        long deadline = System.currentTimeMillis() + timeoutMs;
        while (true) {
            for (GroupMember m : members) m.checkHealthy();
            String state = notYet.get();
            if (state == null) return;
            if (System.currentTimeMillis() > deadline) {
                throw new Main.CheckFailed("at step '" + Main.step + "': " + what + " not reached within "
                        + timeoutMs / 1000 + "s; state: " + state);
            }
            Thread.sleep(50);
        }
    }

    static String states(Collection<GroupMember> ms) {
        StringBuilder sb = new StringBuilder();
        for (GroupMember m : ms) {
            if (sb.length() > 0) sb.append(", ");
            sb.append(m.state());
        }
        return sb.toString();
    }

    /** Sort key of the client's assignors (AbstractPartitionAssignor.MemberInfo): static first. */
    static String assignorOrder(GroupMember m) {
        return m.instanceId != null ? "0" + m.instanceId : "1" + m.memberId;
    }

    /**
     * null when all members are in one generation and every partition of the topic is owned by
     * exactly one of them, balanced; for range/roundrobin also exactly the assignor's layout
     * for the member ids they were given. Else the current state.
     */
    static String splitProblem(List<GroupMember> ms, String topic, String strategy) {
        int gen = ms.get(0).generation;
        for (GroupMember m : ms) {
            if (m.generation != gen || gen <= 0) return "not all in one generation: " + states(ms);
        }
        Map<Integer, String> owner = new HashMap<>();
        for (GroupMember m : ms) {
            for (TopicPartition tp : m.assignment) {
                if (!tp.topic().equals(topic)) return m.name + " owns foreign " + tp + ": " + states(ms);
                String prev = owner.put(tp.partition(), m.name);
                if (prev != null) return "partition " + tp.partition() + " owned by " + prev + " and " + m.name + ": " + states(ms);
            }
        }
        if (owner.size() != GP) return owner.size() + " of " + GP + " partitions owned: " + states(ms);
        int each = GP / ms.size();
        for (GroupMember m : ms) {
            if (m.assignment.size() != each) return "not balanced: " + states(ms);
        }
        if (strategy.equals("range") || strategy.equals("roundrobin")) {
            List<GroupMember> sorted = new ArrayList<>(ms);
            sorted.sort(Comparator.comparing(Groups::assignorOrder));
            for (int i = 0; i < sorted.size(); i++) {
                Set<Integer> want = new TreeSet<>();
                for (int k = 0; k < each; k++) want.add(strategy.equals("range") ? i * each + k : i + k * ms.size());
                Set<Integer> got = new TreeSet<>();
                for (TopicPartition tp : sorted.get(i).assignment) got.add(tp.partition());
                if (!got.equals(want)) {
                    StringBuilder ids = new StringBuilder();
                    for (GroupMember m : sorted) ids.append(m.name).append('=').append(m.memberId).append(' ');
                    return "not the " + strategy + " layout for the member ids (member #" + i + " in assignor order, "
                            + sorted.get(i).name + ", owns " + got + ", expected " + want + "): " + states(ms)
                            + "; member ids " + ids;
                }
            }
        }
        return null;
    }

    record Snapshot(int generation, Set<TopicPartition> assignment, String memberId, int assigned, int revoked,
            int lost) {
        static Snapshot of(GroupMember m) {
            return new Snapshot(m.generation, m.assignment, m.memberId, m.assignedCalls.get(), m.revokedCalls.get(),
                    m.lostCalls.get());
        }
    }

    /** Waits until every member received `n` more heartbeat responses and polled after that. */
    static void awaitHeartbeats(List<GroupMember> ms, int n, long timeoutMs) throws InterruptedException {
        Map<GroupMember, Long> hb0 = new HashMap<>();
        for (GroupMember m : ms) hb0.put(m, m.heartbeats);
        await(n + " more heartbeats of every member", timeoutMs, ms, () -> {
            for (GroupMember m : ms) {
                if (m.heartbeats < hb0.get(m) + n) {
                    return m.name + " heartbeat responses " + m.heartbeats + ", waiting for " + (hb0.get(m) + n);
                }
            }
            return null;
        });
        Map<GroupMember, Long> p0 = new HashMap<>();
        for (GroupMember m : ms) p0.put(m, m.polls);
        await("one more poll of every member", 10_000, ms, () -> {
            for (GroupMember m : ms) if (m.polls <= p0.get(m)) return m.name + " has not polled";
            return null;
        });
    }

    /**
     * The members keep generation, assignment and listener-call counts over 2 more heartbeats
     * each (a pending rebalance shows up at the next heartbeat).
     */
    static void confirmNoRebalance(List<GroupMember> ms, String why) throws InterruptedException {
        Map<GroupMember, Snapshot> before = new HashMap<>();
        for (GroupMember m : ms) before.put(m, Snapshot.of(m));
        awaitHeartbeats(ms, 2, 30_000);
        for (GroupMember m : ms) {
            Snapshot a = before.get(m);
            Snapshot b = Snapshot.of(m);
            check(a.equals(b), why + ": " + m.name + " changed from " + a + " to " + b + "; listener calls: " + m.events);
        }
    }

    static void stopAll(Collection<GroupMember> ms) {
        for (GroupMember m : ms) m.stopQuietly();
    }

    /** Produces `perPartition` records to each of the GP partitions; returns when all are acked. */
    static void produce(String topic, int perPartition, String label) throws Exception {
        Main.step = "produce " + label;
        AtomicReference<String> err = new AtomicReference<>();
        AtomicLong acked = new AtomicLong();
        try (KafkaProducer<byte[], byte[]> p = Main.producer("producer-" + label, Map.of())) {
            for (int i = 0; i < perPartition; i++) {
                for (int part = 0; part < GP; part++) {
                    byte[] v = (label + "-" + part + "-" + i).getBytes(StandardCharsets.UTF_8);
                    p.send(new ProducerRecord<>(topic, part, null, v), (md, ex) -> {
                        if (ex != null) err.compareAndSet(null, Main.describe(ex));
                        else acked.incrementAndGet();
                    });
                }
            }
            p.flush();
        }
        check(err.get() == null, "produce " + label + " failed: " + err.get());
        check(acked.get() == (long) perPartition * GP, "produce " + label + ": " + acked.get() + " acks");
    }

    /** Offsets 0..end-1 of every partition seen by at least one of `ms`; null, or what is missing. */
    static String missing(List<GroupMember> ms, int from, int end) {
        for (int p = 0; p < GP; p++) {
            BitSet u = new BitSet();
            for (GroupMember m : ms) u.or(m.seen(p));
            int hole = u.nextClearBit(from);
            if (hole < end) return "partition " + p + ": offset " + hole + " not consumed yet (" + states(ms) + ")";
        }
        return null;
    }

    /** Records that more than one delivery reached (across members and within one); null if none. */
    static String duplicates(List<GroupMember> ms) {
        long total = 0;
        List<String> samples = new ArrayList<>();
        for (int p = 0; p < GP; p++) {
            BitSet u = new BitSet();
            for (GroupMember m : ms) {
                BitSet s = m.seen(p);
                BitSet both = (BitSet) s.clone();
                both.and(u);
                total += both.cardinality();
                if (!both.isEmpty() && samples.size() < 5) samples.add(m.name + " re-read " + p + "@" + both.nextSetBit(0));
                u.or(s);
            }
        }
        for (GroupMember m : ms) {
            total += m.redeliveries();
            for (String s : m.redeliverySamples()) if (samples.size() < 5) samples.add(m.name + " got twice " + s);
        }
        return total == 0 ? null : total + " records delivered more than once, e.g. " + samples;
    }

    /** A plain consumer of `group` that only reads its committed offsets (OffsetFetch, no JoinGroup). */
    static Map<Integer, OffsetAndMetadata> committed(String group, String topic) {
        Properties p = Main.common("probe");
        p.put(ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, ByteArrayDeserializer.class.getName());
        p.put(ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, ByteArrayDeserializer.class.getName());
        p.put(ConsumerConfig.GROUP_ID_CONFIG, group);
        p.put(ConsumerConfig.GROUP_PROTOCOL_CONFIG, "classic");
        p.put(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, "false");
        try (KafkaConsumer<byte[], byte[]> c = new KafkaConsumer<>(p)) {
            Map<TopicPartition, OffsetAndMetadata> m =
                    c.committed(new HashSet<>(Main.partitions(topic, GP)), Duration.ofSeconds(30));
            Map<Integer, OffsetAndMetadata> out = new TreeMap<>();
            for (Map.Entry<TopicPartition, OffsetAndMetadata> e : m.entrySet()) {
                if (e.getValue() != null) out.put(e.getKey().partition(), e.getValue());
            }
            return out;
        }
    }

    static Map<Integer, Long> offsets(Map<Integer, OffsetAndMetadata> m) {
        Map<Integer, Long> out = new TreeMap<>();
        for (Map.Entry<Integer, OffsetAndMetadata> e : m.entrySet()) out.put(e.getKey(), e.getValue().offset());
        return out;
    }

    static Map<Integer, Long> all(long v) {
        Map<Integer, Long> out = new TreeMap<>();
        for (int p = 0; p < GP; p++) out.put(p, v);
        return out;
    }

    static void awaitCommitted(String group, String topic, Map<Integer, Long> want, long timeoutMs, List<GroupMember> ms)
            throws InterruptedException {
        await("committed offsets of " + group + " = " + want, timeoutMs, ms, () -> {
            Map<Integer, Long> got = offsets(committed(group, topic));
            return got.equals(want) ? null : "committed " + got;
        });
    }

    static String topicFor(String scenario) {
        return Main.prefix + Main.tag + "-" + scenario;
    }

    static void createTopic(String topic) throws Exception {
        try (Admin admin = Main.adminClient()) {
            Main.createTopic(admin, topic, GP);
        }
        // Wait until every partition's leader serves it (ListOffsets answers): a real Kafka broker
        // may advertise a new partition's leader before that broker can append to it, and an
        // idempotent producer's retries of those first batches can then stall.
        Main.step = "wait for " + topic + " to be served";
        Properties p = Main.common("ready");
        p.put(ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, ByteArrayDeserializer.class.getName());
        p.put(ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, ByteArrayDeserializer.class.getName());
        try (KafkaConsumer<byte[], byte[]> c = new KafkaConsumer<>(p)) {
            Map<TopicPartition, Long> ends = c.endOffsets(Main.partitions(topic, GP), Duration.ofSeconds(60));
            check(ends.size() == GP, "ListOffsets of the new topic answered for " + ends.keySet() + " only");
        }
    }

    // ------------------------------------------------------------------ group-split*

    static String groupSplit(String scenario, String strategy) throws Exception {
        String topic = topicFor(scenario);
        String group = topic + "-g";
        createTopic(topic);
        List<GroupMember> ms = new ArrayList<>();
        try {
            Main.step = "start 3 members (" + strategy + ")";
            for (int i = 0; i < 3; i++) ms.add(new GroupMember(scenario + "-m" + i, group, topic, strategy, false, Map.of()).start());
            Main.step = "wait until each of the " + GP + " partitions has exactly one owner";
            await("a balanced " + strategy + " split over 3 members in one generation", 60_000, ms,
                    () -> splitProblem(ms, topic, strategy));
            int gen = ms.get(0).generation;
            Main.step = "confirm the split is stable";
            confirmNoRebalance(ms, "rebalance after a complete, balanced assignment");
            List<String> leaders = new ArrayList<>();
            for (GroupMember m : ms) if (m.ledGeneration == gen) leaders.add(m.name);
            check(leaders.size() == 1, "members that computed the assignment of generation " + gen + ": " + leaders
                    + " (expected exactly one leader)");
            return String.format("generation %d: %s; leader %s; unchanged over 2 more heartbeats each",
                    gen, states(ms), leaders.get(0));
        } finally {
            stopAll(ms);
        }
    }

    // ------------------------------------------------------------------ group-leave

    static String groupLeave() throws Exception {
        String scenario = "group-leave";
        String topic = topicFor(scenario);
        String group = topic + "-g";
        createTopic(topic);
        int half = 200;
        produce(topic, half, "leave-1");
        List<GroupMember> ms = new ArrayList<>();
        // A long session timeout: only a LeaveGroup can make the group rebalance quickly.
        Map<String, String> cfg = Map.of(ConsumerConfig.SESSION_TIMEOUT_MS_CONFIG, "30000");
        try {
            Main.step = "start 3 members (range, commitSync after every poll)";
            for (int i = 0; i < 3; i++) ms.add(new GroupMember(scenario + "-m" + i, group, topic, "range", true, cfg).start());
            Main.step = "wait for the 3-way split";
            await("a range split over 3 members", 60_000, ms, () -> splitProblem(ms, topic, "range"));
            int gen1 = ms.get(0).generation;
            Main.step = "consume the first " + half + " records of each partition";
            await("all first-half records consumed", 60_000, ms, () -> missing(ms, 0, half));

            GroupMember leaver = ms.get(1);
            List<GroupMember> rest = List.of(ms.get(0), ms.get(2));
            Set<TopicPartition> leaverOwned = leaver.assignment;
            Main.step = "close " + leaver.name + " (LeaveGroup)";
            long t0 = System.nanoTime();
            leaver.close();
            Main.step = "wait for the 2 remaining members to own all partitions";
            await("the 2 remaining members owning all " + GP + " partitions in a generation after " + gen1
                    + " (session.timeout.ms is 30000, so only the LeaveGroup can cause this in time)", 20_000, rest,
                    () -> {
                        String p = splitProblem(rest, topic, "range");
                        if (p != null) return p;
                        return rest.get(0).generation > gen1 ? null : "still generation " + gen1 + ": " + states(rest);
                    });
            double rebalanceS = (System.nanoTime() - t0) / 1e9;
            int gen2 = rest.get(0).generation;
            produce(topic, half, "leave-2");
            Main.step = "the remaining members consume the second half";
            await("all records of both halves consumed", 60_000, rest, () -> missing(ms, 0, 2 * half));
            for (int p = 0; p < GP; p++) {
                BitSet u = new BitSet();
                for (GroupMember m : rest) u.or(m.seen(p));
                int hole = u.nextClearBit(half);
                check(hole >= 2 * half, "partition " + p + " offset " + hole + " (second half) not consumed by the remaining members");
            }
            Main.step = "check commits and deliveries";
            for (GroupMember m : ms) {
                if (m.refusedCommits.isEmpty()) continue;
                throw new Main.CheckFailed("at step '" + Main.step + "': " + m.name + ": the coordinator refused "
                        + m.refusedCommits.size() + " commit(s), first: " + m.refusedCommits.get(0) + ". Kafka refuses a commit of the "
                        + "current generation only while the group is CompletingRebalance, which needs this member to "
                        + "have rejoined; an eager member commits (after its polls and in onPartitionsRevoked) before "
                        + "it rejoins, so the group was at most PreparingRebalance (listener calls: " + m.events + ")");
            }
            String dup = duplicates(ms);
            check(dup == null, "with commitSync after every poll and on revocation: " + dup);
            return String.format("%s left (owned %s) at generation %d; %s own all %d partitions at generation %d "
                    + "%.1fs after close; all %d records consumed exactly once",
                    leaver.name, GroupMember.parts(leaverOwned), gen1, rest.get(0).name + "+" + rest.get(1).name, GP,
                    gen2, rebalanceS, 2 * half * GP);
        } finally {
            stopAll(ms);
        }
    }

    // ------------------------------------------------------------------ group-resume

    static String groupResume() throws Exception {
        String scenario = "group-resume";
        String topic = topicFor(scenario);
        String group = topic + "-g";
        createTopic(topic);
        int n = 100;
        produce(topic, n, "resume");
        // Committed offset per partition (partition 5: none, so auto.offset.reset=earliest applies).
        Map<Integer, Long> target = new TreeMap<>(Map.of(0, 37L, 1, (long) n, 2, 1L, 3, 64L, 4, 99L));
        List<GroupMember> ms = new ArrayList<>();
        try {
            Main.step = "start 2 members (range)";
            for (int i = 0; i < 2; i++) ms.add(new GroupMember(scenario + "-m" + i, group, topic, "range", false, Map.of()).start());
            await("a range split over 2 members", 60_000, ms, () -> splitProblem(ms, topic, "range"));
            for (GroupMember m : ms) {
                Map<TopicPartition, OffsetAndMetadata> commit = new HashMap<>();
                for (TopicPartition tp : m.assignment) {
                    Long t = target.get(tp.partition());
                    if (t != null) commit.put(tp, new OffsetAndMetadata(t, "resume-p" + tp.partition()));
                }
                Main.step = m.name + " consumes up to its commit points " + commit;
                await(m.name + " consumed past its commit points", 60_000, ms, () -> {
                    for (TopicPartition tp : commit.keySet()) {
                        int hole = m.seen(tp.partition()).nextClearBit(0);
                        if (hole < commit.get(tp).offset()) return m.name + " at partition " + tp.partition() + " offset " + hole;
                    }
                    return null;
                });
                Main.step = m.name + " commitSync " + commit;
                m.call("commitSync", c -> {
                    c.commitSync(commit, Duration.ofSeconds(30));
                    return null;
                });
                Map<TopicPartition, OffsetAndMetadata> back = m.call("committed", c -> c.committed(commit.keySet(), Duration.ofSeconds(30)));
                check(back.equals(commit), m.name + ": committed() after commitSync returned " + back + ", expected " + commit);
            }
            Main.step = "close both members";
            for (GroupMember m : ms) m.close();

            Main.step = "committed offsets seen by a fresh consumer";
            Map<Integer, OffsetAndMetadata> fetched = committed(group, topic);
            check(offsets(fetched).equals(target), "committed offsets " + offsets(fetched) + ", expected " + target);
            for (Map.Entry<Integer, OffsetAndMetadata> e : fetched.entrySet()) {
                check(("resume-p" + e.getKey()).equals(e.getValue().metadata()),
                        "partition " + e.getKey() + " commit metadata '" + e.getValue().metadata() + "', expected 'resume-p" + e.getKey() + "'");
            }

            Main.step = "a new member resumes";
            GroupMember r = new GroupMember(scenario + "-new", group, topic, "range", false, Map.of()).start();
            ms.add(r);
            List<GroupMember> one = List.of(r);
            await("the new member owning all partitions", 60_000, one, () -> splitProblem(one, topic, "range"));
            await("the new member consumed every partition to its end", 60_000, one, () -> {
                for (int p = 0; p < GP; p++) {
                    int from = target.getOrDefault(p, 0L).intValue();
                    int hole = r.seen(p).nextClearBit(from);
                    if (hole < n) return "partition " + p + " offset " + hole + " not consumed";
                }
                return null;
            });
            Map<TopicPartition, Long> pos = r.call("position", c -> {
                Map<TopicPartition, Long> out = new HashMap<>();
                for (TopicPartition tp : Main.partitions(topic, GP)) out.put(tp, c.position(tp, Duration.ofSeconds(30)));
                return out;
            });
            StringBuilder starts = new StringBuilder();
            for (int p = 0; p < GP; p++) {
                long from = target.getOrDefault(p, 0L);
                BitSet s = r.seen(p);
                int first = s.nextSetBit(0);
                check(first == -1 ? from == n : first == from, "partition " + p + ": the new member's first record is offset "
                        + first + ", expected the committed " + from + (target.containsKey(p) ? "" : " (no commit: earliest)"));
                check(s.cardinality() == n - from, "partition " + p + ": the new member read " + s.cardinality()
                        + " records, expected " + (n - from));
                check(pos.get(new TopicPartition(topic, p)) == n, "partition " + p + " position " + pos.get(new TopicPartition(topic, p)) + ", expected " + n);
                starts.append(p).append('@').append(first == -1 ? "end" : String.valueOf(first)).append(' ');
            }
            check(r.redeliveries() == 0, "the new member got records twice: " + r.redeliverySamples());
            return "commits " + target + " (with metadata) survived closing all members; the new member started at "
                    + starts.toString().trim() + " (5 = no commit, earliest) and read to the end";
        } finally {
            stopAll(ms);
        }
    }

    // ------------------------------------------------------------------ group-static

    static String groupStatic() throws Exception {
        String scenario = "group-static";
        String topic = topicFor(scenario);
        String group = topic + "-g";
        createTopic(topic);
        List<GroupMember> ms = new ArrayList<>();
        List<GroupMember> all = new ArrayList<>();
        try {
            Main.step = "start 3 static members";
            for (int i = 0; i < 3; i++) {
                GroupMember m = new GroupMember(scenario + "-s" + i, group, topic, "range", false, staticCfg(i)).start();
                ms.add(m);
                all.add(m);
            }
            await("a range split over 3 static members", 60_000, ms, () -> splitProblem(ms, topic, "range"));
            int gen = ms.get(0).generation;
            StringBuilder detail = new StringBuilder("generation " + gen + " " + states(ms) + ";");
            for (String round : List.of("follower", "leader")) {
                GroupMember leader = null;
                for (GroupMember m : ms) if (m.ledGeneration == gen) leader = m;
                check(leader != null, "no member computed the assignment of generation " + gen + ": " + states(ms));
                GroupMember follower = null;
                for (GroupMember m : ms) if (m != leader) follower = m;
                final GroupMember target = round.equals("leader") ? leader : follower;
                int idx = ms.indexOf(target);
                List<GroupMember> others = new ArrayList<>(ms);
                others.remove(target);
                Map<GroupMember, Snapshot> before = new HashMap<>();
                for (GroupMember m : others) before.put(m, Snapshot.of(m));
                Set<TopicPartition> oldAssignment = target.assignment;
                String oldMemberId = target.memberId;

                Main.step = "close static " + round + " " + target.name + " (no LeaveGroup)";
                long t0 = System.nanoTime();
                target.close();
                Main.step = "restart static " + round + " " + target.instanceId;
                GroupMember again = new GroupMember(target.name + "-again", group, topic, "range", false, staticCfg(idx)).start();
                ms.set(idx, again);
                all.add(again);
                await("the restarted static member back in generation " + gen + " with " + GroupMember.parts(oldAssignment),
                        25_000, ms, () -> {
                            for (GroupMember m : ms) {
                                if (m.generation > gen) {
                                    throw new Main.CheckFailed("at step '" + Main.step + "': the group rebalanced (generation "
                                            + m.generation + " at " + m.name + ") when static member " + target.instanceId
                                            + " came back: " + states(ms) + "; listener calls " + m.events);
                                }
                            }
                            return again.generation == gen && again.assignment.equals(oldAssignment) ? null : states(ms);
                        });
                double backS = (System.nanoTime() - t0) / 1e9;
                Main.step = "watch the others for a rebalance";
                awaitHeartbeats(ms, 2, 30_000);
                for (GroupMember m : others) {
                    Snapshot a = before.get(m);
                    Snapshot b = Snapshot.of(m);
                    check(a.equals(b), "after static " + round + " " + target.instanceId + " restarted: " + m.name
                            + " changed from " + a + " to " + b + "; its listener calls: " + m.events);
                }
                check(again.generation == gen && again.assignment.equals(oldAssignment),
                        "restarted member moved to " + again.state() + "; listener calls " + again.events);
                check(again.revokedCalls.get() == 0 && again.lostCalls.get() == 0 && again.assignedCalls.get() == 1,
                        "restarted member's listener calls: " + again.events + ", expected one assignment");
                check(!again.memberId.isEmpty() && !again.memberId.equals(oldMemberId),
                        "restarted static member got member id '" + again.memberId + "', previous incarnation had '"
                                + oldMemberId + "' (expected a new id)");
                detail.append(String.format(" %s %s restarted, back in %.1fs with %s;", round, target.instanceId, backS,
                        GroupMember.parts(again.assignment)));
            }
            detail.append(" no rebalance: other members' generation, assignment and listener calls unchanged");
            return detail.toString();
        } finally {
            stopAll(all);
        }
    }

    static Map<String, String> staticCfg(int i) {
        return Map.of(ConsumerConfig.GROUP_INSTANCE_ID_CONFIG, Main.tag + "-static-" + i,
                ConsumerConfig.SESSION_TIMEOUT_MS_CONFIG, "30000");
    }

    // ------------------------------------------------------------------ group-two-groups

    static String groupTwoGroups() throws Exception {
        String scenario = "group-two-groups";
        String topic = topicFor(scenario);
        String groupA = topic + "-a";
        String groupB = topic + "-b";
        createTopic(topic);
        int n = 100;
        produce(topic, n, "two-1");
        List<GroupMember> a = new ArrayList<>();
        List<GroupMember> b = new ArrayList<>();
        List<GroupMember> everyone = new ArrayList<>();
        try {
            Main.step = "group A: 2 members, commitSync after every poll";
            for (int i = 0; i < 2; i++) a.add(new GroupMember(scenario + "-a" + i, groupA, topic, "range", true, Map.of()).start());
            everyone.addAll(a);
            await("group A split", 60_000, a, () -> splitProblem(a, topic, "range"));
            await("group A consumed everything", 60_000, a, () -> missing(a, 0, n));
            awaitCommitted(groupA, topic, all(n), 30_000, a);
            int genA = a.get(0).generation;

            Main.step = "group B: 1 member on the same topic";
            b.add(new GroupMember(scenario + "-b0", groupB, topic, "range", false, Map.of()).start());
            everyone.addAll(b);
            await("group B's member owning all partitions", 60_000, b, () -> splitProblem(b, topic, "range"));
            await("group B consumed everything", 60_000, b, () -> missing(b, 0, n));
            Main.step = "group A unaffected by group B joining";
            confirmNoRebalance(a, "group A rebalanced while group B formed");
            Map<TopicPartition, OffsetAndMetadata> half = new HashMap<>();
            for (TopicPartition tp : Main.partitions(topic, GP)) half.put(tp, new OffsetAndMetadata(n / 2));
            Main.step = "group B commits offset " + n / 2 + " everywhere";
            b.get(0).call("commitSync", c -> {
                c.commitSync(half, Duration.ofSeconds(30));
                return null;
            });
            Map<Integer, Long> ca = offsets(committed(groupA, topic));
            Map<Integer, Long> cb = offsets(committed(groupB, topic));
            check(ca.equals(all(n)), "group A committed " + ca + " after group B committed " + cb + ", expected " + all(n));
            check(cb.equals(all(n / 2)), "group B committed " + cb + ", expected " + all(n / 2));

            Main.step = "group B's member leaves";
            b.get(0).close();
            confirmNoRebalance(a, "group A rebalanced when group B's member left");
            produce(topic, n, "two-2");
            Main.step = "group A keeps consuming";
            await("group A consumed the second batch", 60_000, a, () -> missing(a, 0, 2 * n));
            awaitCommitted(groupA, topic, all(2 * n), 30_000, a);
            cb = offsets(committed(groupB, topic));
            check(cb.equals(all(n / 2)), "group B's commits changed to " + cb + " while only group A consumed; expected " + all(n / 2));
            String dupA = duplicates(a);
            check(dupA == null, "group A: " + dupA);
            String dupB = duplicates(b);
            check(dupB == null, "group B: " + dupB);
            check(a.get(0).generation == genA, "group A generation moved from " + genA + " to " + a.get(0).generation);
            return String.format("group A (2 members, generation %d throughout) consumed %d records and committed %d/partition; "
                    + "group B (1 member) consumed all %d and committed %d/partition; B joining, committing and leaving did "
                    + "not touch A", genA, 2 * n * GP, 2 * n, n * GP, n / 2);
        } finally {
            stopAll(everyone);
        }
    }

    // ------------------------------------------------------------------ admin-groups

    @SuppressWarnings("deprecation") // state(): the 3.9 name, deprecated but present in 4.x
    static String adminGroups() throws Exception {
        String scenario = "admin-groups";
        String topic = topicFor(scenario);
        String group = topic + "-g";
        createTopic(topic);
        produce(topic, 20, "admin-groups");
        List<GroupMember> ms = new ArrayList<>();
        try (Admin admin = Main.adminClient()) {
            Main.step = "start 2 members";
            for (int i = 0; i < 2; i++) ms.add(new GroupMember(scenario + "-m" + i, group, topic, "range", false, Map.of()).start());
            await("a range split over 2 members", 60_000, ms, () -> splitProblem(ms, topic, "range"));
            Map<TopicPartition, OffsetAndMetadata> commits = new HashMap<>();
            for (GroupMember m : ms) {
                Map<TopicPartition, OffsetAndMetadata> mine = new HashMap<>();
                for (TopicPartition tp : m.assignment) mine.put(tp, new OffsetAndMetadata(tp.partition() + 1, "meta-" + tp.partition()));
                Main.step = m.name + " commitSync " + mine;
                m.call("commitSync", c -> {
                    c.commitSync(mine, Duration.ofSeconds(30));
                    return null;
                });
                commits.putAll(mine);
            }

            Main.step = "listConsumerGroups (stable)";
            ConsumerGroupListing l = listing(admin, group);
            check(l != null, "listConsumerGroups does not list " + group);
            check(!l.isSimpleConsumerGroup(), "listConsumerGroups: " + group + " listed as a simple group: " + l);
            check(l.state().isPresent() && l.state().get() == ConsumerGroupState.STABLE,
                    "listConsumerGroups: state of " + group + " is " + l.state() + ", expected Stable");

            Main.step = "describeConsumerGroups (stable)";
            ConsumerGroupDescription d = get(admin.describeConsumerGroups(List.of(group)).all()).get(group);
            check(d != null, "describeConsumerGroups returned nothing for " + group);
            check(d.groupId().equals(group), "describeConsumerGroups group id " + d.groupId());
            check(d.state() == ConsumerGroupState.STABLE, "describeConsumerGroups state " + d.state() + ", expected Stable");
            check(!d.isSimpleConsumerGroup(), "describeConsumerGroups: simple group? " + d);
            check("range".equals(d.partitionAssignor()), "describeConsumerGroups partitionAssignor '" + d.partitionAssignor() + "', expected 'range'");
            check(d.coordinator() != null && d.coordinator().id() >= 0, "describeConsumerGroups coordinator " + d.coordinator());
            check(d.members().size() == 2, "describeConsumerGroups: " + d.members().size() + " members, expected 2: " + d.members());
            for (GroupMember m : ms) {
                MemberDescription md = null;
                for (MemberDescription x : d.members()) if (x.consumerId().equals(m.memberId)) md = x;
                check(md != null, "describeConsumerGroups: no member with id " + m.memberId + " (" + m.name + "): " + d.members());
                check(md.clientId().equals(m.clientId), "member " + m.name + ": clientId '" + md.clientId() + "', expected '" + m.clientId + "'");
                check(md.host() != null && !md.host().isEmpty(), "member " + m.name + ": empty host");
                check(md.groupInstanceId().isEmpty(), "member " + m.name + ": groupInstanceId " + md.groupInstanceId() + " for a dynamic member");
                check(md.assignment().topicPartitions().equals(m.assignment), "member " + m.name + ": assignment "
                        + md.assignment().topicPartitions() + ", but the consumer owns " + m.assignment);
            }

            Main.step = "listConsumerGroupOffsets";
            Map<TopicPartition, OffsetAndMetadata> listed = get(admin.listConsumerGroupOffsets(group).partitionsToOffsetAndMetadata());
            check(listed.equals(commits), "listConsumerGroupOffsets " + listed + ", expected " + commits);

            Main.step = "deleteConsumerGroups (group has members)";
            try {
                get(admin.deleteConsumerGroups(List.of(group)).all());
                throw new Main.CheckFailed("deleteConsumerGroups of a group with 2 members succeeded; expected GroupNotEmptyException");
            } catch (ExecutionException e) {
                check(e.getCause() instanceof GroupNotEmptyException,
                        "deleteConsumerGroups of a group with members: expected GroupNotEmptyException, got " + Main.describe(e.getCause()));
            }
            TopicPartition p0 = new TopicPartition(topic, 0);
            TopicPartition p1 = new TopicPartition(topic, 1);
            Main.step = "deleteConsumerGroupOffsets (members subscribed to the topic)";
            try {
                get(admin.deleteConsumerGroupOffsets(group, Set.of(p0)).all());
                throw new Main.CheckFailed("deleteConsumerGroupOffsets while members subscribe to the topic succeeded; "
                        + "expected GroupSubscribedToTopicException");
            } catch (ExecutionException e) {
                check(e.getCause() instanceof GroupSubscribedToTopicException,
                        "deleteConsumerGroupOffsets on a subscribed topic: expected GroupSubscribedToTopicException, got "
                                + Main.describe(e.getCause()));
            }

            Main.step = "alterConsumerGroupOffsets (group has members)";
            try {
                get(admin.alterConsumerGroupOffsets(group, Map.of(p1, new OffsetAndMetadata(5))).all());
                throw new Main.CheckFailed("alterConsumerGroupOffsets on a group with members succeeded; expected "
                        + "UnknownMemberIdException (a commit without member id/generation is only allowed while Empty)");
            } catch (ExecutionException e) {
                check(e.getCause() instanceof UnknownMemberIdException,
                        "alterConsumerGroupOffsets on a group with members: expected UnknownMemberIdException (OffsetCommit "
                                + "error UNKNOWN_MEMBER_ID), got " + Main.describe(e.getCause()));
            }
            listed = get(admin.listConsumerGroupOffsets(group).partitionsToOffsetAndMetadata());
            check(listed.equals(commits), "listConsumerGroupOffsets after a refused alter: " + listed + ", expected " + commits);

            Main.step = "close the members";
            for (GroupMember m : ms) m.close();
            await("describeConsumerGroups: Empty with no members", 30_000, List.of(), () -> {
                try {
                    ConsumerGroupDescription e = get(admin.describeConsumerGroups(List.of(group)).all()).get(group);
                    return e.state() == ConsumerGroupState.EMPTY && e.members().isEmpty() ? null
                            : "state " + e.state() + ", members " + e.members();
                } catch (Exception ex) {
                    return Main.describe(ex);
                }
            });
            ConsumerGroupListing le = listing(admin, group);
            check(le != null && le.state().isPresent() && le.state().get() == ConsumerGroupState.EMPTY,
                    "listConsumerGroups after the members left: " + le + ", expected state Empty");

            Main.step = "alterConsumerGroupOffsets (empty group)";
            get(admin.alterConsumerGroupOffsets(group, Map.of(p1, new OffsetAndMetadata(5, "altered"))).all());
            commits.put(p1, new OffsetAndMetadata(5, "altered"));
            Main.step = "deleteConsumerGroupOffsets (empty group)";
            get(admin.deleteConsumerGroupOffsets(group, Set.of(p0)).all());
            commits.remove(p0);
            listed = get(admin.listConsumerGroupOffsets(group).partitionsToOffsetAndMetadata());
            check(listed.equals(commits), "listConsumerGroupOffsets after alter (p1=5) and delete (p0): " + listed
                    + ", expected " + commits);

            Main.step = "deleteConsumerGroups (empty group)";
            get(admin.deleteConsumerGroups(List.of(group)).all());
            ConsumerGroupListing gone = listing(admin, group);
            check(gone == null, "listConsumerGroups still lists the deleted group: " + gone);
            listed = get(admin.listConsumerGroupOffsets(group).partitionsToOffsetAndMetadata());
            check(listed.isEmpty(), "listConsumerGroupOffsets of the deleted group: " + listed + ", expected none");
            Main.step = "describeConsumerGroups (deleted group)";
            try {
                ConsumerGroupDescription dead = get(admin.describeConsumerGroups(List.of(group)).all()).get(group);
                // 3.9 clients report a missing group as Dead; 4.x clients throw GroupIdNotFound.
                check(dead.state() == ConsumerGroupState.DEAD && dead.members().isEmpty(),
                        "describeConsumerGroups of the deleted group: " + dead + ", expected Dead (or GroupIdNotFound)");
            } catch (ExecutionException e) {
                check(e.getCause() instanceof GroupIdNotFoundException,
                        "describeConsumerGroups of the deleted group: expected GroupIdNotFoundException or state Dead, got "
                                + Main.describe(e.getCause()));
            }
            Main.step = "deleteConsumerGroupOffsets (deleted group)";
            try {
                get(admin.deleteConsumerGroupOffsets(group, Set.of(p1)).all());
                throw new Main.CheckFailed("deleteConsumerGroupOffsets of the deleted group succeeded; expected GroupIdNotFoundException");
            } catch (ExecutionException e) {
                check(e.getCause() instanceof GroupIdNotFoundException,
                        "deleteConsumerGroupOffsets of the deleted group: expected GroupIdNotFoundException, got "
                                + Main.describe(e.getCause()));
            }
            Main.step = "deleteConsumerGroups (deleted group)";
            try {
                get(admin.deleteConsumerGroups(List.of(group)).all());
                throw new Main.CheckFailed("deleting the deleted group again succeeded; expected GroupIdNotFoundException");
            } catch (ExecutionException e) {
                check(e.getCause() instanceof GroupIdNotFoundException,
                        "deleting a deleted group: expected GroupIdNotFoundException, got " + Main.describe(e.getCause()));
            }
            return "list (Stable, then Empty), describe (2 members: ids, client ids, hosts, assignments; range; coordinator), "
                    + "listOffsets (with metadata); while members exist: deleteGroups refused (GroupNotEmpty), deleteOffsets "
                    + "refused (GroupSubscribedToTopic), alterOffsets refused (UnknownMemberId); after they left: alterOffsets, "
                    + "deleteOffsets, deleteGroups; then describe/deleteOffsets/deleteGroups say the group is gone";
        } finally {
            stopAll(ms);
        }
    }

    @SuppressWarnings("deprecation") // listConsumerGroups: deprecated in 4.x in favour of listGroups, absent in 3.9
    static ConsumerGroupListing listing(Admin admin, String group) throws Exception {
        for (ConsumerGroupListing l : get(admin.listConsumerGroups().all())) if (l.groupId().equals(group)) return l;
        return null;
    }

    // ------------------------------------------------------------------ acceptance-kill

    static final int KILL_RECORDS = 100_000;
    static final int KILL_RATE = 4000; // records per second per member

    /** What the parent knows about one child JVM, from its .rec and .ev files. */
    static final class Child {
        final String name;
        final Process process;
        final OutputStream stdin;
        final Path rec;
        final Path ev;
        long recPos;
        long evPos;
        final BitSet[] seen = new BitSet[GP];
        long records;
        int gen = -1;
        String memberId = "";
        int ownedGen = -1;
        Set<Integer> owned = new TreeSet<>();
        int leaderGen = -1;
        final Map<Integer, Long> commits = new TreeMap<>(); // of partitions owned now
        /** A commit logged as started but not (yet) as succeeded or failed. */
        final Map<Integer, Long> inFlight = new TreeMap<>();
        final List<String> events = new ArrayList<>();
        int commitFailures;
        boolean stopped;

        Child(String name, Process process, Path dir) {
            this.name = name;
            this.process = process;
            this.stdin = process.getOutputStream();
            this.rec = dir.resolve(name + ".rec");
            this.ev = dir.resolve(name + ".ev");
            for (int p = 0; p < GP; p++) seen[p] = new BitSet();
        }

        /** Reads the complete lines appended since the last call. */
        void refresh() throws IOException {
            recPos = readLines(rec, recPos, line -> {
                int sp = line.indexOf(' ');
                int p = Integer.parseInt(line.substring(0, sp));
                int o = Integer.parseInt(line.substring(sp + 1));
                seen[p].set(o);
                records++;
            });
            evPos = readLines(ev, evPos, this::event);
        }

        private void event(String line) {
            if (events.size() < 400) events.add(line);
            String[] f = line.split(" ", 3);
            switch (f[0]) {
                case "GEN":
                    gen = Integer.parseInt(f[1]);
                    memberId = f.length > 2 ? f[2] : "";
                    break;
                case "LEADER":
                    leaderGen = Integer.parseInt(f[1]);
                    break;
                case "OWNED":
                    ownedGen = Integer.parseInt(f[1]);
                    owned = parseSet(f[2]);
                    commits.keySet().retainAll(owned);
                    break;
                case "COMMITTING":
                    inFlight.clear();
                    for (String kv : f[2].split(",")) {
                        String[] x = kv.split("=");
                        inFlight.put(Integer.parseInt(x[0]), Long.parseLong(x[1]));
                    }
                    break;
                case "COMMIT":
                    inFlight.clear();
                    for (String kv : f[2].split(",")) {
                        String[] x = kv.split("=");
                        commits.put(Integer.parseInt(x[0]), Long.parseLong(x[1]));
                    }
                    break;
                case "COMMITFAIL":
                    inFlight.clear();
                    commitFailures++;
                    break;
                case "STOPPED":
                    stopped = true;
                    break;
                default:
                    break;
            }
        }

        String state() {
            return name + "{gen " + gen + ", owned " + owned + "@" + ownedGen + ", leader@" + leaderGen + ", "
                    + records + " records, commits " + commits + (process.isAlive() ? "" : ", exited " + process.exitValue()) + "}";
        }
    }

    interface LineSink {
        void accept(String line);
    }

    /** Feeds the complete lines of `f` after byte `pos` to `sink`; returns the new position. */
    static long readLines(Path f, long pos, LineSink sink) throws IOException {
        if (!Files.exists(f)) return pos;
        try (RandomAccessFile raf = new RandomAccessFile(f.toFile(), "r")) {
            long len = raf.length();
            if (len <= pos) return pos;
            byte[] buf = new byte[(int) Math.min(len - pos, 8 << 20)];
            raf.seek(pos);
            raf.readFully(buf);
            int start = 0;
            for (int i = 0; i < buf.length; i++) {
                if (buf[i] == '\n') {
                    sink.accept(new String(buf, start, i - start, StandardCharsets.UTF_8));
                    start = i + 1;
                }
            }
            return pos + start; // a trailing partial line is read next time
        }
    }

    static Set<Integer> parseSet(String s) {
        Set<Integer> out = new TreeSet<>();
        String t = s.replace("[", "").replace("]", "").trim();
        if (t.isEmpty()) return out;
        for (String x : t.split(",")) out.add(Integer.parseInt(x.trim()));
        return out;
    }

    interface Cond {
        String notYet() throws Exception;
    }

    static void awaitChildren(String what, long timeoutMs, List<Child> cs, List<Child> mustLive, Cond cond) throws Exception {
        long deadline = System.currentTimeMillis() + timeoutMs;
        while (true) {
            for (Child c : cs) c.refresh();
            for (Child c : mustLive) {
                if (!c.process.isAlive()) {
                    throw new Main.CheckFailed("at step '" + Main.step + "': child " + c.name + " exited with status "
                            + c.process.exitValue() + " (see its .stderr/.log); " + c.state());
                }
            }
            String s = cond.notYet();
            if (s == null) return;
            if (System.currentTimeMillis() > deadline) {
                throw new Main.CheckFailed("at step '" + Main.step + "': " + what + " not reached within "
                        + timeoutMs / 1000 + "s; state: " + s);
            }
            Thread.sleep(100);
        }
    }

    static String childStates(List<Child> cs) {
        StringBuilder sb = new StringBuilder();
        for (Child c : cs) sb.append(c.state()).append(' ');
        return sb.toString().trim();
    }

    static String acceptanceKill() throws Exception {
        String scenario = "acceptance-kill";
        String topic = topicFor(scenario);
        String group = topic + "-g";
        createTopic(topic);
        long[] end = new long[GP];
        Main.step = "produce " + KILL_RECORDS + " records";
        AtomicReference<String> err = new AtomicReference<>();
        AtomicLong acked = new AtomicLong();
        try (KafkaProducer<byte[], byte[]> p = Main.producer("producer-accept-kill", Map.of())) {
            for (int i = 0; i < KILL_RECORDS; i++) {
                int part = i % GP;
                end[part]++;
                p.send(new ProducerRecord<>(topic, part, null, ("r" + i).getBytes(StandardCharsets.UTF_8)), (md, ex) -> {
                    if (ex != null) err.compareAndSet(null, Main.describe(ex));
                    else acked.incrementAndGet();
                });
            }
            p.flush();
        }
        check(err.get() == null, "produce failed: " + err.get());
        check(acked.get() == KILL_RECORDS, "only " + acked.get() + " of " + KILL_RECORDS + " records acked");

        Path dir = Files.createTempDirectory("kelp-accept-kill-");
        String java = Path.of(System.getProperty("java.home"), "bin", "java").toString();
        String cp = System.getProperty("java.class.path");
        List<Child> cs = new ArrayList<>();
        boolean passed = false;
        try {
            Main.step = "start 3 member JVMs";
            for (int i = 0; i < 3; i++) {
                String name = "c" + i;
                ProcessBuilder pb = new ProcessBuilder(java, "-Xmx256m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1",
                        "-Dorg.slf4j.simpleLogger.defaultLogLevel=warn",
                        "-Dorg.slf4j.simpleLogger.logFile=" + dir.resolve(name + ".log"),
                        "-Dorg.slf4j.simpleLogger.showDateTime=true",
                        "-cp", cp, KillChild.class.getName(), Main.bootstrap, topic, group, name, dir.toString(),
                        String.valueOf(KILL_RATE));
                pb.redirectOutput(dir.resolve(name + ".stdout").toFile());
                pb.redirectError(dir.resolve(name + ".stderr").toFile());
                cs.add(new Child(name, pb.start(), dir));
            }

            Main.step = "wait for a stable 3-way split, then for the leader to commit progress";
            AtomicReference<Child> victimRef = new AtomicReference<>();
            awaitChildren("3 members each owning 2 partitions in one generation, the leader having committed "
                    + "every partition it owns and read 2000+ records", 90_000, cs, cs, () -> {
                        int g = cs.get(0).gen;
                        Set<Integer> union = new HashSet<>();
                        for (Child c : cs) {
                            if (c.gen != g || g <= 0 || c.ownedGen != g || c.owned.size() != 2) return childStates(cs);
                            union.addAll(c.owned);
                        }
                        if (union.size() != GP) return "overlap: " + childStates(cs);
                        Child leader = null;
                        for (Child c : cs) if (c.leaderGen == g) leader = c;
                        if (leader == null) return "no leader logged for generation " + g + ": " + childStates(cs);
                        if (!leader.commits.keySet().equals(leader.owned) || leader.records < 2000) return childStates(cs);
                        victimRef.set(leader);
                        return null;
                    });
            Child victim = victimRef.get();
            List<Child> survivors = new ArrayList<>(cs);
            survivors.remove(victim);
            int killGen = victim.gen;

            Main.step = "SIGKILL " + victim.name + " (the leader)";
            long tKill = System.nanoTime();
            victim.process.destroyForcibly();
            check(victim.process.waitFor(30, TimeUnit.SECONDS), victim.name + " still alive 30s after SIGKILL");
            int exit = victim.process.exitValue();
            check(exit == 137, victim.name + " exit status " + exit + " after destroyForcibly, expected 137 (SIGKILL)");
            victim.refresh(); // its files are final now
            Set<Integer> victimOwned = new TreeSet<>(victim.owned);
            Map<Integer, Long> victimCommits = new TreeMap<>(victim.commits);
            Map<Integer, Long> victimInFlight = new TreeMap<>(victim.inFlight);
            check(victimCommits.keySet().equals(victimOwned), victim.name + " owned " + victimOwned
                    + " but its last commits cover " + victimCommits);
            boolean workLeft = false;
            for (int p : victimOwned) if (victimCommits.get(p) < end[p]) workLeft = true;
            check(workLeft, "the kill came too late: " + victim.name + " had committed " + victimCommits
                    + " = the end of its partitions");
            long victimRecords = victim.records;

            Main.step = "survivors take over and read everything";
            AtomicLong takeoverNanos = new AtomicLong(-1);
            awaitChildren("all " + KILL_RECORDS + " records seen", 240_000, cs, survivors, () -> {
                if (takeoverNanos.get() < 0) {
                    Set<Integer> union = new HashSet<>();
                    for (Child c : survivors) union.addAll(c.owned);
                    if (union.size() == GP) takeoverNanos.set(System.nanoTime() - tKill);
                }
                for (int p = 0; p < GP; p++) {
                    BitSet u = new BitSet();
                    for (Child c : cs) u.or(c.seen[p]);
                    int hole = u.nextClearBit(0);
                    if (hole < end[p]) return "partition " + p + " offset " + hole + " not seen yet: " + childStates(survivors);
                }
                return null;
            });
            Main.step = "committed offsets reach the end";
            Map<TopicPartition, OffsetAndMetadata> want = new HashMap<>();
            for (int p = 0; p < GP; p++) want.put(new TopicPartition(topic, p), new OffsetAndMetadata(end[p]));
            try (Admin admin = Main.adminClient()) {
                awaitChildren("the group's committed offsets = the end offsets", 60_000, cs, survivors, () -> {
                    Map<TopicPartition, OffsetAndMetadata> got =
                            get(admin.listConsumerGroupOffsets(group).partitionsToOffsetAndMetadata());
                    Map<TopicPartition, Long> g = new TreeMap<>(Comparator.comparingInt(TopicPartition::partition));
                    for (Map.Entry<TopicPartition, OffsetAndMetadata> e : got.entrySet()) g.put(e.getKey(), e.getValue().offset());
                    Map<TopicPartition, Long> w = new TreeMap<>(Comparator.comparingInt(TopicPartition::partition));
                    for (Map.Entry<TopicPartition, OffsetAndMetadata> e : want.entrySet()) w.put(e.getKey(), e.getValue().offset());
                    return g.equals(w) ? null : "committed " + g + ", end " + w;
                });
            }
            Main.step = "stop the survivors";
            for (Child c : survivors) {
                c.stdin.write("stop\n".getBytes(StandardCharsets.UTF_8));
                c.stdin.flush();
            }
            for (Child c : survivors) {
                check(c.process.waitFor(60, TimeUnit.SECONDS), c.name + " did not stop within 60s");
                c.refresh();
                check(c.process.exitValue() == 0 && c.stopped, c.name + " exit status " + c.process.exitValue()
                        + (c.stopped ? "" : " without closing cleanly") + "; see " + dir);
            }

            Main.step = "check every record was seen, duplicates only where the victim had not committed";
            long dups = 0;
            Map<Integer, long[]> dupRange = new TreeMap<>();
            List<String> bad = new ArrayList<>();
            for (int p = 0; p < GP; p++) {
                for (int o = 0; o < end[p]; o++) {
                    int count = 0;
                    for (Child c : cs) if (c.seen[p].get(o)) count++;
                    if (count == 0) {
                        bad.add("partition " + p + " offset " + o + " never seen");
                    } else if (count > 1) {
                        dups++;
                        boolean ok = count == 2 && victim.seen[p].get(o) && victimOwned.contains(p) && o >= victimCommits.get(p);
                        if (!ok) {
                            List<String> who = new ArrayList<>();
                            for (Child c : cs) if (c.seen[p].get(o)) who.add(c.name);
                            bad.add("partition " + p + " offset " + o + " seen by " + who + " (victim " + victim.name
                                    + " owned " + victimOwned + ", last commits " + victimCommits + ")");
                        } else {
                            long[] r = dupRange.computeIfAbsent(p, k -> new long[] {Long.MAX_VALUE, -1});
                            r[0] = Math.min(r[0], o);
                            r[1] = Math.max(r[1], o);
                        }
                    }
                    if (bad.size() >= 5) break;
                }
                if (bad.size() >= 5) break;
            }
            check(bad.isEmpty(), bad.size() + (bad.size() >= 5 ? "+" : "") + " bad records: " + bad);
            // The survivor that took a partition over resumed exactly at the victim's last commit: it re-read
            // exactly [commit, last offset the victim read]. (A commit the victim started but was killed
            // before logging as done may have landed: then the re-reads start there.)
            for (int p : victimOwned) {
                int last = victim.seen[p].previousSetBit((int) end[p] - 1);
                long c = victimCommits.get(p);
                Long maybe = victimInFlight.get(p);
                long[] r = dupRange.get(p);
                boolean ok;
                if (r == null) {
                    ok = last < c || (maybe != null && last < maybe);
                } else {
                    ok = (r[0] == c || (maybe != null && r[0] == maybe)) && r[1] == last;
                }
                check(ok, "partition " + p + ": the victim read up to offset " + last + " and had committed " + c
                        + (maybe == null ? "" : " (commit of " + maybe + " in flight)") + ", so a survivor should re-read "
                        + "exactly that tail, but re-reads span " + (r == null ? "nothing" : r[0] + ".." + r[1]));
            }
            StringBuilder dr = new StringBuilder();
            for (Map.Entry<Integer, long[]> e : dupRange.entrySet()) {
                dr.append(" p").append(e.getKey()).append('@').append(e.getValue()[0]).append("..").append(e.getValue()[1]);
            }
            int finalGen = Math.max(survivors.get(0).gen, survivors.get(1).gen);
            int refused = 0;
            for (Child c : cs) refused += c.commitFailures;
            passed = true;
            return String.format("%d records, 6 partitions, 3 member JVMs (cooperative-sticky); leader %s SIGKILLed "
                    + "at generation %d owning %s after %d records (last commits %s); survivors owned all partitions "
                    + "%.1fs later (session.timeout.ms 6000), generation %d; every record seen; %d re-read, all in the "
                    + "victim's uncommitted tail:%s; final commits = end offsets (%d commits refused during "
                    + "rebalances and retried)",
                    KILL_RECORDS, victim.name, killGen, victimOwned, victimRecords, victimCommits,
                    takeoverNanos.get() / 1e9, finalGen, dups, dr.length() == 0 ? " none" : dr.toString(), refused);
        } catch (Main.CheckFailed e) {
            throw new Main.CheckFailed(e.getMessage() + " (member files kept in " + dir + ")");
        } finally {
            for (Child c : cs) {
                if (c.process.isAlive()) c.process.destroyForcibly();
            }
            for (Child c : cs) c.process.waitFor(10, TimeUnit.SECONDS);
            if (passed) {
                try (var files = Files.list(dir)) {
                    for (Path f : (Iterable<Path>) files::iterator) Files.deleteIfExists(f);
                }
                Files.deleteIfExists(dir);
            } else {
                System.err.println("acceptance-kill: child files kept in " + dir);
            }
        }
    }

    private Groups() {}
}
