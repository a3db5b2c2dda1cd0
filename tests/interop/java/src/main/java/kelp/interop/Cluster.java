package kelp.interop;

import java.util.ArrayList;
import java.util.Collection;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;

import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.DescribeClusterResult;
import org.apache.kafka.clients.admin.TopicDescription;
import org.apache.kafka.common.Node;
import org.apache.kafka.common.TopicPartitionInfo;

/**
 * cluster-metadata: several kelp instances in front of one SeaweedMQ
 * (scripts/test-seaweedmq-cluster.sh). Run only when named on the command line. Environment:
 * KELP_BOOTSTRAP (one instance only: the client must learn the others), KELP_CLUSTER_BROKERS
 * ({@code 1=127.0.0.1:PORT,2=...,3=...}, node id = advertised address), KELP_CLUSTER_TOPIC (an
 * existing topic) and KELP_CLUSTER_PARTITIONS (its partition count).
 *
 * <p>Passes when describeCluster lists exactly those nodes at those addresses with a controller
 * among them, and describeTopics names a leader among them for every partition, each node leading
 * at least one (the leader's address being the one its id has).
 */
final class Cluster {
    private Cluster() {}

    static String clusterMetadata() throws Exception {
        Map<Integer, String> want = new TreeMap<>();
        String spec = System.getenv("KELP_CLUSTER_BROKERS");
        String topic = System.getenv("KELP_CLUSTER_TOPIC");
        String parts = System.getenv("KELP_CLUSTER_PARTITIONS");
        Main.check(spec != null && topic != null && parts != null,
                "KELP_CLUSTER_BROKERS, KELP_CLUSTER_TOPIC and KELP_CLUSTER_PARTITIONS must be set");
        Main.check(!Main.bootstrap.contains(","), "KELP_BOOTSTRAP must name one instance, not " + Main.bootstrap);
        for (String item : spec.split(",")) {
            String[] kv = item.split("=", 2);
            want.put(Integer.parseInt(kv[0]), kv[1]);
        }
        int partitions = Integer.parseInt(parts);

        long t0 = System.currentTimeMillis();
        long deadline = t0 + 60_000;
        String last = "";
        try (Admin admin = Main.adminClient()) {
            while (true) {
                Main.step = "describeCluster/describeTopics through " + Main.bootstrap;
                String problem = null;
                Map<Integer, Integer> counts = new TreeMap<>();
                DescribeClusterResult dc = admin.describeCluster();
                Collection<Node> nodes = Main.get(dc.nodes());
                Node controller = Main.get(dc.controller());
                String clusterId = Main.get(dc.clusterId());
                Map<Integer, String> got = new TreeMap<>();
                for (Node n : nodes) got.put(n.id(), n.host() + ":" + n.port());
                if (!got.equals(want)) {
                    problem = "describeCluster lists " + got + ", want " + want;
                } else if (controller == null || !want.containsKey(controller.id())) {
                    problem = "describeCluster controller " + controller + " is not an instance";
                } else {
                    TopicDescription td = Main.get(admin.describeTopics(List.of(topic)).allTopicNames()).get(topic);
                    List<TopicPartitionInfo> ps = new ArrayList<>(td.partitions());
                    if (ps.size() != partitions) {
                        problem = "describeTopics: " + ps.size() + " partitions, want " + partitions;
                    } else {
                        for (TopicPartitionInfo pi : ps) {
                            Node l = pi.leader();
                            if (l == null || !want.containsKey(l.id())) {
                                problem = "partition " + pi.partition() + " leader " + l + " is not an instance";
                                break;
                            }
                            if (!(l.host() + ":" + l.port()).equals(want.get(l.id()))) {
                                problem = "partition " + pi.partition() + " leader " + l + " has the wrong address";
                                break;
                            }
                            counts.merge(l.id(), 1, Integer::sum);
                        }
                        if (problem == null && !counts.keySet().equals(want.keySet())) {
                            problem = "leaders per node " + counts + ": not every instance leads a partition";
                        }
                    }
                }
                if (problem == null) {
                    return String.format("bootstrapped from %s only: describeCluster lists nodes %s at their "
                                    + "addresses (cluster %s, controller %d); %s's %d partitions led per node %s; "
                                    + "seen after %.1fs",
                            Main.bootstrap, want.keySet(), clusterId, controller.id(), topic, partitions, counts,
                            (System.currentTimeMillis() - t0) / 1000.0);
                }
                if (!problem.equals(last)) {
                    System.err.println("cluster-metadata: " + problem);
                    last = problem;
                }
                Main.check(System.currentTimeMillis() < deadline, "not within 60s: " + problem);
                Thread.sleep(200);
            }
        }
    }
}
