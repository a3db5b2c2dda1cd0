package kelp.connect;

import java.io.File;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Collection;
import java.util.HashMap;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.Set;
import java.util.function.BooleanSupplier;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.Config;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.config.ConfigResource;
import org.apache.kafka.common.serialization.StringDeserializer;

/**
 * filestream-restart: a Kafka Connect distributed worker (a separate JVM running
 * org.apache.kafka.connect.cli.ConnectDistributed, as operators start it) moves the lines of a
 * file into a kelp topic with the FileStreamSource connector and out of it into another file
 * with the FileStreamSink connector. Halfway the worker is stopped (SIGTERM), more lines are
 * appended, and a new worker process with the same group and internal topics takes over: it must
 * find both connectors in the config topic, resume the source at the file position in the offsets
 * topic and the sink at its group's committed offsets. Every line must arrive in the output file
 * and in the topic, in the input's order (at-least-once: a few duplicates from the last
 * uncommitted window are counted and reported; loss, reordering or starting over fails). The worker itself checks that its internal topics are compacted
 * (DescribeConfigs) and refuses to start otherwise; the program checks it too.
 */
public final class FileRoundTrip {
    static final String CLIENT = "java-connect";
    static final String SCENARIO = "filestream-restart";
    static final int LINES = 1000;
    /** Fewer repeated lines than this after a graceful restart: see run(). */
    static final int MAX_REPEATED = 100;
    static final Duration DEADLINE = Duration.ofSeconds(180);

    public static void main(String[] args) throws Exception {
        String bootstrap = System.getenv("KELP_BOOTSTRAP");
        String prefix = System.getenv("KELP_TOPIC_PREFIX");
        Path work = Path.of(System.getenv().getOrDefault("KELP_CONNECT_WORK", "target/work"));
        long t0 = System.nanoTime();
        try {
            String detail = new FileRoundTrip(bootstrap, prefix, work).run();
            result("pass", detail + String.format(" (%.1fs)", (System.nanoTime() - t0) / 1e9));
            System.exit(0);
        } catch (Throwable e) {
            e.printStackTrace();
            result("fail", e.toString().replace('|', '/').replace('\n', ' '));
            System.exit(1);
        }
    }

    static void result(String status, String detail) {
        System.out.println("RESULT|" + CLIENT + "|" + SCENARIO + "|" + status + "|" + detail);
        System.out.flush();
    }

    final String bootstrap;
    final String prefix;
    final Path work;
    final Path input;
    final Path output;
    final String topic;
    final HttpClient http = HttpClient.newHttpClient();
    final List<Process> workers = new ArrayList<>();

    FileRoundTrip(String bootstrap, String prefix, Path work) throws Exception {
        this.bootstrap = bootstrap;
        this.prefix = prefix;
        this.work = work;
        Files.createDirectories(work);
        this.input = work.resolve(prefix + "input.txt").toAbsolutePath();
        this.output = work.resolve(prefix + "output.txt").toAbsolutePath();
        this.topic = prefix + "connect-lines";
    }

    static String line(int i) {
        return String.format("line-%05d %s", i, "abcdefghij".repeat(1 + i % 7));
    }

    String run() throws Exception {
        Files.deleteIfExists(input);
        Files.deleteIfExists(output);
        // One partition, so the order of the lines is the order of the topic.
        try (Admin admin = admin()) {
            admin.createTopics(List.of(new NewTopic(topic, 1, (short) 1))).all().get();
        }
        append(0, LINES / 2);
        try {
            Process first = startWorker(1);
            int port = restPort(1);
            waitRest(port, first);
            putConnector(port, "source", Map.of(
                    "connector.class", "org.apache.kafka.connect.file.FileStreamSourceConnector",
                    "tasks.max", "1", "file", input.toString(), "topic", topic));
            putConnector(port, "sink", Map.of(
                    "connector.class", "org.apache.kafka.connect.file.FileStreamSinkConnector",
                    "tasks.max", "1", "file", output.toString(), "topics", topic));
            waitFor("the first worker to move " + LINES / 2 + " lines",
                    () -> distinctOutput().size() >= LINES / 2, first);
            checkInternalTopicsCompacted();
            stop(first);

            append(LINES / 2, LINES);
            Process second = startWorker(2);
            waitRest(restPort(2), second);
            waitFor("the restarted worker to move all " + LINES + " lines",
                    () -> distinctOutput().size() >= LINES, second);
            waitFor("both connectors RUNNING on the restarted worker",
                    () -> running(restPort(2), "source") && running(restPort(2), "sink"), second);
            int outDups = checkOrder("output file", readOutput());
            int topicDups = checkOrder("topic", readTopic());
            // At-least-once allows the last uncommitted window again after a restart; a restart
            // that lost the sink's committed offsets or the source's stored file position would
            // repeat everything the first worker moved.
            if (outDups >= MAX_REPEATED || topicDups >= MAX_REPEATED) {
                throw new AssertionError("the restarted worker repeated " + outDups
                        + " lines in the output and " + topicDups + " in the topic (limit "
                        + MAX_REPEATED + "): it did not resume at the stored offsets");
            }
            stop(second);
            return String.format("%d lines file -> kelp -> file through a distributed worker "
                    + "restarted midway (SIGTERM, more lines appended meanwhile); internal topics "
                    + "compacted; %d duplicate lines in the output, %d in the topic",
                    LINES, outDups, topicDups);
        } finally {
            for (Process p : workers) {
                p.destroyForcibly();
            }
        }
    }

    void append(int from, int to) throws Exception {
        StringBuilder b = new StringBuilder();
        for (int i = from; i < to; i++) {
            b.append(line(i)).append('\n');
        }
        Files.writeString(input, b.toString(), StandardCharsets.UTF_8,
                StandardOpenOption.CREATE, StandardOpenOption.APPEND);
    }

    int restPort(int worker) {
        return Integer.parseInt(System.getenv("KELP_CONNECT_REST_PORT_" + worker));
    }

    /** A distributed worker in its own JVM, configured as a user would, logging to a file. */
    Process startWorker(int n) throws Exception {
        Properties p = new Properties();
        p.setProperty("bootstrap.servers", bootstrap);
        p.setProperty("group.id", prefix + "connect-cluster");
        p.setProperty("key.converter", "org.apache.kafka.connect.storage.StringConverter");
        p.setProperty("value.converter", "org.apache.kafka.connect.storage.StringConverter");
        p.setProperty("config.storage.topic", prefix + "connect-configs");
        p.setProperty("offset.storage.topic", prefix + "connect-offsets");
        p.setProperty("status.storage.topic", prefix + "connect-status");
        p.setProperty("config.storage.replication.factor", "1");
        p.setProperty("offset.storage.replication.factor", "1");
        p.setProperty("status.storage.replication.factor", "1");
        p.setProperty("offset.flush.interval.ms", "1000");
        p.setProperty("listeners", "http://127.0.0.1:" + restPort(n));
        p.setProperty("rest.advertised.host.name", "127.0.0.1");
        Path props = work.resolve(prefix + "worker-" + n + ".properties");
        try (var w = Files.newBufferedWriter(props)) {
            p.store(w, "kelp interop: Connect worker " + n);
        }
        File log = work.resolve(prefix + "worker-" + n + ".log").toFile();
        String java = Path.of(System.getProperty("java.home"), "bin", "java").toString();
        Process proc = new ProcessBuilder(java, "-Xmx384m",
                "-Dorg.slf4j.simpleLogger.defaultLogLevel=info",
                "-Dorg.slf4j.simpleLogger.showDateTime=true",
                "-cp", System.getProperty("java.class.path"),
                "org.apache.kafka.connect.cli.ConnectDistributed", props.toString())
                .redirectErrorStream(true)
                .redirectOutput(log)
                .start();
        workers.add(proc);
        return proc;
    }

    void stop(Process worker) throws Exception {
        worker.destroy(); // SIGTERM: Connect's shutdown hook stops the tasks and commits.
        if (!worker.waitFor(60, java.util.concurrent.TimeUnit.SECONDS)) {
            throw new AssertionError("worker did not exit within 60 s of SIGTERM");
        }
    }

    void waitFor(String what, BooleanSupplier done, Process worker) throws Exception {
        long end = System.nanoTime() + DEADLINE.toNanos();
        while (!done.getAsBoolean()) {
            if (!worker.isAlive()) {
                throw new AssertionError("worker exited (status " + worker.exitValue()
                        + ") while waiting for " + what);
            }
            if (System.nanoTime() > end) {
                throw new AssertionError("timed out after " + DEADLINE.toSeconds()
                        + " s waiting for " + what + " (output has "
                        + distinctOutput().size() + " distinct lines)");
            }
            Thread.sleep(200);
        }
    }

    void waitRest(int port, Process worker) throws Exception {
        waitFor("the worker's REST API on port " + port, () -> {
            try {
                return get(port, "/connectors").statusCode() == 200;
            } catch (Exception e) {
                return false;
            }
        }, worker);
    }

    HttpResponse<String> get(int port, String path) throws Exception {
        HttpRequest req = HttpRequest.newBuilder(URI.create("http://127.0.0.1:" + port + path))
                .timeout(Duration.ofSeconds(10)).GET().build();
        return http.send(req, HttpResponse.BodyHandlers.ofString());
    }

    /** PUT /connectors/NAME/config, retried while the worker is still joining its group. */
    void putConnector(int port, String name, Map<String, String> config) throws Exception {
        StringBuilder json = new StringBuilder("{");
        for (Map.Entry<String, String> e : config.entrySet()) {
            if (json.length() > 1) {
                json.append(',');
            }
            json.append('"').append(e.getKey()).append("\":\"").append(e.getValue()).append('"');
        }
        json.append('}');
        HttpRequest req = HttpRequest.newBuilder(
                URI.create("http://127.0.0.1:" + port + "/connectors/" + prefix + name + "/config"))
                .timeout(Duration.ofSeconds(30))
                .header("Content-Type", "application/json")
                .PUT(HttpRequest.BodyPublishers.ofString(json.toString())).build();
        long end = System.nanoTime() + DEADLINE.toNanos();
        String last = "";
        while (System.nanoTime() < end) {
            HttpResponse<String> r = http.send(req, HttpResponse.BodyHandlers.ofString());
            if (r.statusCode() / 100 == 2) {
                return;
            }
            last = r.statusCode() + " " + r.body();
            Thread.sleep(500);
        }
        throw new AssertionError("connector " + name + " not accepted: " + last);
    }

    boolean running(int port, String name) {
        try {
            String body = get(port, "/connectors/" + prefix + name + "/status").body();
            // {"name":..,"connector":{"state":"RUNNING",..},"tasks":[{"id":0,"state":"RUNNING",..}]}
            return body.split("\"state\":\"RUNNING\"", -1).length == 3;
        } catch (Exception e) {
            return false;
        }
    }

    List<String> readOutput() {
        try {
            if (!Files.exists(output)) {
                return List.of();
            }
            String text = Files.readString(output, StandardCharsets.UTF_8);
            List<String> lines = new ArrayList<>(List.of(text.split("\n", -1)));
            lines.remove(lines.size() - 1); // a partial last line is not a line yet
            return lines;
        } catch (Exception e) {
            throw new RuntimeException(e);
        }
    }

    Set<String> distinctOutput() {
        return new LinkedHashSet<>(readOutput());
    }

    /** The topic from its start to its end, read without a group. */
    List<String> readTopic() {
        Properties p = new Properties();
        p.setProperty(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        p.setProperty(ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, StringDeserializer.class.getName());
        p.setProperty(ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, StringDeserializer.class.getName());
        List<String> values = new ArrayList<>();
        try (KafkaConsumer<String, String> c = new KafkaConsumer<>(p)) {
            TopicPartition tp = new TopicPartition(topic, 0);
            c.assign(List.of(tp));
            c.seekToBeginning(List.of(tp));
            long endOffset = c.endOffsets(List.of(tp)).get(tp);
            long end = System.nanoTime() + DEADLINE.toNanos();
            while (c.position(tp) < endOffset && System.nanoTime() < end) {
                for (ConsumerRecord<String, String> r : c.poll(Duration.ofMillis(500))) {
                    values.add(r.value());
                }
            }
            if (c.position(tp) < endOffset) {
                throw new AssertionError("topic read stopped at " + c.position(tp) + " of " + endOffset);
            }
        }
        return values;
    }

    /** Every input line present, first occurrences in input order; returns the duplicates. */
    static int checkOrder(String where, List<String> got) {
        Set<String> seen = new LinkedHashSet<>(got);
        List<String> first = new ArrayList<>(seen);
        for (int i = 0; i < LINES; i++) {
            if (i >= first.size() || !first.get(i).equals(line(i))) {
                throw new AssertionError(where + ": line " + i + " should be '" + line(i)
                        + "', found " + (i < first.size() ? "'" + first.get(i) + "'" : "nothing")
                        + " (" + seen.size() + " distinct of " + got.size() + ")");
            }
        }
        if (first.size() != LINES) {
            throw new AssertionError(where + ": " + first.size() + " distinct lines, want " + LINES);
        }
        return got.size() - seen.size();
    }

    void checkInternalTopicsCompacted() throws Exception {
        Collection<ConfigResource> rs = new ArrayList<>();
        for (String t : List.of("connect-configs", "connect-offsets", "connect-status")) {
            rs.add(new ConfigResource(ConfigResource.Type.TOPIC, prefix + t));
        }
        try (Admin admin = admin()) {
            Map<ConfigResource, Config> got = admin.describeConfigs(rs).all().get();
            Map<String, String> policies = new HashMap<>();
            for (var e : got.entrySet()) {
                policies.put(e.getKey().name(), e.getValue().get("cleanup.policy").value());
            }
            for (String policy : policies.values()) {
                if (!policy.equals("compact")) {
                    throw new AssertionError("internal topics' cleanup.policy: " + policies);
                }
            }
        }
    }

    Admin admin() {
        Properties p = new Properties();
        p.setProperty(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        return Admin.create(p);
    }
}
