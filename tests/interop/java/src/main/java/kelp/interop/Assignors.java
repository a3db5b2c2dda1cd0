package kelp.interop;

import java.util.Map;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.atomic.AtomicInteger;

import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.CooperativeStickyAssignor;
import org.apache.kafka.clients.consumer.RangeAssignor;
import org.apache.kafka.clients.consumer.RoundRobinAssignor;
import org.apache.kafka.common.Cluster;
import org.apache.kafka.common.Configurable;

/**
 * The client's own assignors (same protocol names: range, roundrobin, cooperative-sticky), which
 * also count how often each consumer (by client.id) computed a group assignment, that is, acted
 * as the group leader. Nothing else is changed.
 */
public final class Assignors {
    private static final ConcurrentHashMap<String, AtomicInteger> ASSIGN_CALLS = new ConcurrentHashMap<>();

    /** How often the consumer with this client.id ran the assignor (was elected leader). */
    static int assignCalls(String clientId) {
        AtomicInteger n = ASSIGN_CALLS.get(clientId);
        return n == null ? 0 : n.get();
    }

    static String strategyClass(String strategy) {
        switch (strategy) {
            case "range":
                return Range.class.getName();
            case "roundrobin":
                return RoundRobin.class.getName();
            case "cooperative-sticky":
                return CooperativeSticky.class.getName();
            default:
                throw new IllegalArgumentException("unknown assignor " + strategy);
        }
    }

    private static void note(String clientId) {
        if (clientId != null) ASSIGN_CALLS.computeIfAbsent(clientId, k -> new AtomicInteger()).incrementAndGet();
    }

    private static String clientId(Map<String, ?> configs) {
        Object c = configs.get(ConsumerConfig.CLIENT_ID_CONFIG);
        return c == null ? null : c.toString();
    }

    public static class Range extends RangeAssignor implements Configurable {
        private String clientId;

        @Override
        public void configure(Map<String, ?> configs) {
            clientId = clientId(configs);
        }

        @Override
        public GroupAssignment assign(Cluster metadata, GroupSubscription groupSubscription) {
            note(clientId);
            return super.assign(metadata, groupSubscription);
        }
    }

    public static class RoundRobin extends RoundRobinAssignor implements Configurable {
        private String clientId;

        @Override
        public void configure(Map<String, ?> configs) {
            clientId = clientId(configs);
        }

        @Override
        public GroupAssignment assign(Cluster metadata, GroupSubscription groupSubscription) {
            note(clientId);
            return super.assign(metadata, groupSubscription);
        }
    }

    public static class CooperativeSticky extends CooperativeStickyAssignor implements Configurable {
        private String clientId;

        @Override
        public void configure(Map<String, ?> configs) {
            clientId = clientId(configs);
        }

        @Override
        public GroupAssignment assign(Cluster metadata, GroupSubscription groupSubscription) {
            note(clientId);
            return super.assign(metadata, groupSubscription);
        }
    }

    private Assignors() {}
}
