package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

const franzName = "franz-go"

var franzScenarios = append([]string{"create-topic", "admin", "roundtrip-none", "roundtrip-gzip", "roundtrip-snappy", "roundtrip-lz4", "roundtrip-zstd", "idempotent-100k"}, append(groupScenarioNames, "admin-groups")...)

func franzNewClient(extra ...kgo.Opt) (*kgo.Client, error) {
	opts := []kgo.Opt{
		kgo.SeedBrokers(cfg.bootstrap),
		kgo.ClientID("kelp-interop-franz-go"),
		// No kgo.RecordDeliveryTimeout: franz-go measures it from the record's
		// Timestamp, and the records carry explicit timestamps an hour old.
		// Produce calls are bounded by their context instead.
		kgo.RetryTimeout(30 * time.Second),
	}
	if cfg.debug {
		opts = append(opts, kgo.WithLogger(kgo.BasicLogger(os.Stderr, kgo.LogLevelDebug, func() string { return "[franz-go] " })))
	}
	return kgo.NewClient(append(opts, extra...)...)
}

func franzCodec(name string) (kgo.CompressionCodec, error) {
	switch name {
	case "none":
		return kgo.NoCompression(), nil
	case "gzip":
		return kgo.GzipCompression(), nil
	case "snappy":
		return kgo.SnappyCompression(), nil
	case "lz4":
		return kgo.Lz4Compression(), nil
	case "zstd":
		return kgo.ZstdCompression(), nil
	}
	return kgo.CompressionCodec{}, fmt.Errorf("unknown codec %q", name)
}

func codecName(t uint8) string {
	switch t {
	case 0:
		return "none"
	case 1:
		return "gzip"
	case 2:
		return "snappy"
	case 3:
		return "lz4"
	case 4:
		return "zstd"
	}
	return fmt.Sprintf("codec(%d)", t)
}

// franzWaitTopic polls metadata until topic has the given partitions, each
// with a leader among the advertised brokers, or ctx ends.
func franzWaitTopic(ctx context.Context, adm *kadm.Client, topic string, partitions int32) (kadm.TopicDetail, error) {
	deadline, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	var last error
	for {
		m, err := adm.Metadata(deadline, topic)
		if err == nil {
			last = franzCheckTopic(m, topic, partitions)
			if last == nil {
				return m.Topics[topic], nil
			}
		} else {
			last = err
		}
		select {
		case <-deadline.Done():
			return kadm.TopicDetail{}, fmt.Errorf("topic %s not ready in metadata within 30s: %v", topic, last)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func franzCheckTopic(m kadm.Metadata, topic string, partitions int32) error {
	td, ok := m.Topics[topic]
	if !ok {
		return fmt.Errorf("topic missing from metadata response")
	}
	if td.Err != nil {
		return fmt.Errorf("metadata topic error: %v", td.Err)
	}
	if int32(len(td.Partitions)) != partitions {
		return fmt.Errorf("metadata lists %d partitions, want %d", len(td.Partitions), partitions)
	}
	brokers := map[int32]bool{}
	for _, b := range m.Brokers {
		brokers[b.NodeID] = true
	}
	for p := int32(0); p < partitions; p++ {
		pd, ok := td.Partitions[p]
		if !ok {
			return fmt.Errorf("metadata has no partition %d (has %v)", p, partitionIDs(td.Partitions))
		}
		if pd.Err != nil {
			return fmt.Errorf("partition %d error: %v", p, pd.Err)
		}
		if pd.Leader < 0 || !brokers[pd.Leader] {
			return fmt.Errorf("partition %d leader %d is not an advertised broker (brokers %v)", p, pd.Leader, brokerIDs(m.Brokers))
		}
	}
	return nil
}

func partitionIDs(ps kadm.PartitionDetails) []int32 {
	var ids []int32
	for id := range ps {
		ids = append(ids, id)
	}
	sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
	return ids
}

func brokerIDs(bs kadm.BrokerDetails) []string {
	var s []string
	for _, b := range bs {
		s = append(s, fmt.Sprintf("%d@%s:%d", b.NodeID, b.Host, b.Port))
	}
	return s
}

// franzCreate creates a topic with kadm and waits until metadata shows it.
// opts are extra client options (another listener, TLS, SASL).
func franzCreate(ctx context.Context, topic string, partitions int32, configs map[string]*string, opts ...kgo.Opt) (kadm.CreateTopicResponse, error) {
	cl, err := franzNewClient(opts...)
	if err != nil {
		return kadm.CreateTopicResponse{}, err
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	resp, err := adm.CreateTopic(ctx, partitions, 1, configs, topic)
	if err != nil {
		msg := ""
		if resp.ErrMessage != "" {
			msg = " (" + resp.ErrMessage + ")"
		}
		return resp, fmt.Errorf("CreateTopics: %w%s", err, msg)
	}
	if _, err := franzWaitTopic(ctx, adm, topic, partitions); err != nil {
		return resp, err
	}
	return resp, nil
}

func runFranz(sel func(string) bool) {
	createdTopic := cfg.prefix + "go-franz-create"
	createdOK := false
	if sel("create-topic") {
		createdOK = runScenario(franzName, "create-topic", 60*time.Second, func(ctx context.Context) (string, error) {
			return franzCreateTopicScenario(ctx, createdTopic)
		})
	}
	if sel("admin") {
		runScenario(franzName, "admin", 60*time.Second, func(ctx context.Context) (string, error) {
			if !sel("create-topic") {
				if _, err := franzCreate(ctx, createdTopic, 3, nil); err != nil {
					return "", fmt.Errorf("create %s: %w", createdTopic, err)
				}
			} else if !createdOK {
				return "", skipf("admin inspects the topic made by create-topic, which failed")
			}
			return franzAdminScenario(ctx, createdTopic)
		})
	}
	for _, codec := range codecs {
		sc := "roundtrip-" + codec
		if !sel(sc) {
			continue
		}
		runScenario(franzName, sc, 120*time.Second, func(ctx context.Context) (string, error) {
			recs := genRecords(roundtripRecords, true, 1)
			return roundtrip(ctx, franzRT{}, cfg.prefix+"go-franz-rt-"+codec, codec, recs, 60*time.Second)
		})
	}
	if sel("idempotent-100k") {
		runScenario(franzName, "idempotent-100k", 240*time.Second, franzIdempotentScenario)
	}
	runGroupScenarios(franzGroupClient, "franz", sel)
	if sel("admin-groups") {
		runScenario(franzName, "admin-groups", 150*time.Second, franzAdminGroupsScenario)
	}
	runFranzCluster(sel)
	runFranzSASLSSL()
}

func franzCreateTopicScenario(ctx context.Context, topic string) (string, error) {
	resp, err := franzCreate(ctx, topic, 3, nil)
	if err != nil {
		return "", err
	}
	// CreateTopics v5+ reports the partition count and replication factor.
	if resp.NumPartitions != 3 && resp.NumPartitions != -1 {
		return "", fmt.Errorf("CreateTopics response num_partitions=%d, want 3", resp.NumPartitions)
	}
	if resp.ReplicationFactor != 1 && resp.ReplicationFactor != -1 {
		return "", fmt.Errorf("CreateTopics response replication_factor=%d, want 1", resp.ReplicationFactor)
	}
	// creating it again must fail with TOPIC_ALREADY_EXISTS
	cl, err := franzNewClient()
	if err != nil {
		return "", err
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	_, err = adm.CreateTopic(ctx, 3, 1, nil, topic)
	if !errors.Is(err, kerr.TopicAlreadyExists) {
		return "", fmt.Errorf("second CreateTopics of %s: got %v, want TOPIC_ALREADY_EXISTS", topic, err)
	}
	return fmt.Sprintf("created %s with 3 partitions (response num_partitions=%d, topic_id=%s), leaders in metadata, re-create gave TOPIC_ALREADY_EXISTS",
		topic, resp.NumPartitions, resp.ID), nil
}

func franzAdminScenario(ctx context.Context, topic string) (string, error) {
	cl, err := franzNewClient()
	if err != nil {
		return "", err
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	var notes []string

	// list topics (all, no names)
	tds, err := adm.ListTopics(ctx)
	if err != nil {
		return "", fmt.Errorf("ListTopics: %w", err)
	}
	td, ok := tds[topic]
	if !ok {
		return "", fmt.Errorf("ListTopics (all topics) does not include %s; it lists %d topics", topic, len(tds))
	}
	if len(td.Partitions) != 3 {
		return "", fmt.Errorf("ListTopics shows %s with %d partitions, want 3", topic, len(td.Partitions))
	}
	notes = append(notes, fmt.Sprintf("list-topics sees %d topics", len(tds)))

	// describe configs of that topic
	rcs, err := adm.DescribeTopicConfigs(ctx, topic)
	if err != nil {
		return "", fmt.Errorf("DescribeConfigs(topic %s): %w", topic, err)
	}
	rc, err := rcs.On(topic, nil)
	if err != nil {
		return "", fmt.Errorf("DescribeConfigs: no resource for %s in response: %w", topic, err)
	}
	if rc.Err != nil {
		return "", fmt.Errorf("DescribeConfigs(topic %s): resource error %v %s", topic, rc.Err, rc.ErrMessage)
	}
	if len(rc.Configs) == 0 {
		return "", fmt.Errorf("DescribeConfigs(topic %s) returned no config entries (Kafka returns every topic config)", topic)
	}
	keys := []string{}
	for _, c := range rc.Configs {
		keys = append(keys, c.Key)
	}
	sort.Strings(keys)
	notes = append(notes, fmt.Sprintf("describe-configs %d entries", len(rc.Configs)))

	// a topic created with an explicit config must report it back
	cfgTopic := cfg.prefix + "go-franz-admin-cfg"
	if _, err := franzCreate(ctx, cfgTopic, 1, map[string]*string{"retention.ms": kadm.StringPtr("7200000")}); err != nil {
		return "", fmt.Errorf("create %s with retention.ms=7200000: %w", cfgTopic, err)
	}
	rcs, err = adm.DescribeTopicConfigs(ctx, cfgTopic)
	if err != nil {
		return "", fmt.Errorf("DescribeConfigs(topic %s): %w", cfgTopic, err)
	}
	rc, err = rcs.On(cfgTopic, nil)
	if err != nil || rc.Err != nil {
		return "", fmt.Errorf("DescribeConfigs(topic %s): %v %v %s", cfgTopic, err, rc.Err, rc.ErrMessage)
	}
	found := false
	for _, c := range rc.Configs {
		if c.Key == "retention.ms" {
			found = true
			if c.Value == nil || *c.Value != "7200000" {
				return "", fmt.Errorf("DescribeConfigs(%s) retention.ms = %v, want 7200000 (set at CreateTopics)", cfgTopic, strPtr(c.Value))
			}
			if c.Source != kmsg.ConfigSourceDynamicTopicConfig {
				return "", fmt.Errorf("DescribeConfigs(%s) retention.ms source = %v, want DYNAMIC_TOPIC_CONFIG", cfgTopic, c.Source)
			}
		}
	}
	if !found {
		return "", fmt.Errorf("DescribeConfigs(%s) has no retention.ms entry (topic created with retention.ms=7200000); keys: %s", cfgTopic, strings.Join(keys, ","))
	}
	notes = append(notes, "create-topic config retention.ms reported back")

	// describe cluster: metadata view
	m, err := adm.BrokerMetadata(ctx)
	if err != nil {
		return "", fmt.Errorf("Metadata (brokers): %w", err)
	}
	if len(m.Brokers) == 0 {
		return "", fmt.Errorf("Metadata lists no brokers")
	}
	ctrlOK := false
	for _, b := range m.Brokers {
		if b.NodeID == m.Controller {
			ctrlOK = true
		}
	}
	if !ctrlOK {
		return "", fmt.Errorf("Metadata controller_id %d is not among brokers %v", m.Controller, brokerIDs(m.Brokers))
	}
	notes = append(notes, fmt.Sprintf("cluster id %q brokers %v controller %d", m.Cluster, brokerIDs(m.Brokers), m.Controller))

	// describe cluster: DescribeCluster API (key 60), if advertised
	vers, err := adm.ApiVersions(ctx)
	if err != nil {
		return "", fmt.Errorf("ApiVersions: %w", err)
	}
	advertised := false
	for _, v := range vers {
		if v.Err != nil {
			return "", fmt.Errorf("ApiVersions from broker %d: %v", v.NodeID, v.Err)
		}
		if _, _, ok := v.KeyVersions(60); ok {
			advertised = true
		}
	}
	if advertised {
		req := kmsg.NewPtrDescribeClusterRequest()
		resp, err := req.RequestWith(ctx, cl)
		if err != nil {
			return "", fmt.Errorf("DescribeCluster: %w", err)
		}
		if err := kerr.ErrorForCode(resp.ErrorCode); err != nil {
			return "", fmt.Errorf("DescribeCluster: %v %s", err, strPtr(resp.ErrorMessage))
		}
		if len(resp.Brokers) != len(m.Brokers) {
			return "", fmt.Errorf("DescribeCluster lists %d brokers, Metadata %d", len(resp.Brokers), len(m.Brokers))
		}
		if resp.ClusterID != m.Cluster {
			return "", fmt.Errorf("DescribeCluster cluster_id %q, Metadata cluster_id %q", resp.ClusterID, m.Cluster)
		}
		if resp.ControllerID != m.Controller {
			return "", fmt.Errorf("DescribeCluster controller_id %d, Metadata controller_id %d", resp.ControllerID, m.Controller)
		}
		notes = append(notes, "DescribeCluster agrees with Metadata")
	} else {
		notes = append(notes, "DescribeCluster (key 60) not advertised, used Metadata only")
	}
	return strings.Join(notes, "; "), nil
}

func strPtr(s *string) string {
	if s == nil {
		return "<null>"
	}
	return *s
}

// franzRT implements rtClient with franz-go. opts are extra options for
// every client it makes; nil talks plaintext to KELP_BOOTSTRAP.
type franzRT struct{ opts []kgo.Opt }

func (rt franzRT) createTopic(ctx context.Context, topic string, partitions int32) error {
	_, err := franzCreate(ctx, topic, partitions, nil, rt.opts...)
	return err
}

func toFranzRecord(r Rec) *kgo.Record {
	kr := &kgo.Record{Key: r.Key, Value: r.Value, Timestamp: time.UnixMilli(r.TsMs)}
	for _, h := range r.Headers {
		kr.Headers = append(kr.Headers, kgo.RecordHeader{Key: h.Key, Value: h.Value})
	}
	return kr
}

func (rt franzRT) produce(ctx context.Context, topic, codec string, recs []Rec) ([]Placement, error) {
	cc, err := franzCodec(codec)
	if err != nil {
		return nil, err
	}
	cl, err := franzNewClient(append([]kgo.Opt{kgo.DefaultProduceTopic(topic), kgo.ProducerBatchCompression(cc)}, rt.opts...)...)
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	krs := make([]*kgo.Record, len(recs))
	index := make(map[*kgo.Record]int, len(recs))
	for i, r := range recs {
		krs[i] = toFranzRecord(r)
		index[krs[i]] = i
	}
	res := cl.ProduceSync(ctx, krs...)
	if err := res.FirstErr(); err != nil {
		n := 0
		for _, r := range res {
			if r.Err != nil {
				n++
			}
		}
		return nil, fmt.Errorf("%d of %d records failed, first: %w", n, len(recs), err)
	}
	place := make([]Placement, len(recs))
	for _, r := range res {
		i, ok := index[r.Record]
		if !ok {
			return nil, fmt.Errorf("internal: unknown record in produce results")
		}
		place[i] = Placement{r.Record.Partition, r.Record.Offset}
	}
	return place, nil
}

func fromFranzRecord(r *kgo.Record) Got {
	g := Got{
		Rec:       Rec{Key: r.Key, Value: r.Value, TsMs: r.Timestamp.UnixMilli()},
		Partition: r.Partition,
		Offset:    r.Offset,
		Codec:     codecName(r.Attrs.CompressionType()),
	}
	for _, h := range r.Headers {
		g.Headers = append(g.Headers, Header{Key: h.Key, Value: h.Value})
	}
	return g
}

func (rt franzRT) consume(ctx context.Context, topic string, want map[int32]int) (map[int32][]Got, error) {
	parts := map[int32]kgo.Offset{}
	for p := range want {
		parts[p] = kgo.NewOffset().AtStart()
	}
	cl, err := franzNewClient(append([]kgo.Opt{
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: parts}),
		kgo.FetchMaxWait(500 * time.Millisecond),
	}, rt.opts...)...)
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	got := map[int32][]Got{}
	done := func() bool {
		for p, n := range want {
			if len(got[p]) < n {
				return false
			}
		}
		return true
	}
	var fetchErrs []string
	for !done() {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			return got, fmt.Errorf("timed out (%v); fetch errors seen: %v", ctx.Err(), lastN(fetchErrs, 3))
		}
		fs.EachError(func(t string, p int32, err error) {
			fetchErrs = append(fetchErrs, fmt.Sprintf("%s[%d]: %v", t, p, err))
		})
		fs.EachRecord(func(r *kgo.Record) {
			if r.Topic == topic {
				got[r.Partition] = append(got[r.Partition], fromFranzRecord(r))
			}
		})
	}
	if len(fetchErrs) > 0 {
		return got, fmt.Errorf("fetch errors: %v", lastN(fetchErrs, 3))
	}
	return got, nil
}

func lastN(s []string, n int) []string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

func (rt franzRT) endOffsets(ctx context.Context, topic string, partitions int32) (map[int32]int64, error) {
	cl, err := franzNewClient(rt.opts...)
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	lo, err := kadm.NewClient(cl).ListEndOffsets(ctx, topic)
	if err != nil {
		return nil, err
	}
	out := map[int32]int64{}
	var perr error
	lo.Each(func(o kadm.ListedOffset) {
		if o.Err != nil && perr == nil {
			perr = fmt.Errorf("partition %d: %w", o.Partition, o.Err)
		}
		if o.Topic == topic && o.Err == nil {
			out[o.Partition] = o.Offset
		}
	})
	return out, perr
}

func franzIdempotentScenario(ctx context.Context) (string, error) {
	const n = 100_000
	topic := cfg.prefix + "go-franz-idem-100k"
	if err := (franzRT{}).createTopic(ctx, topic, roundtripPartitions); err != nil {
		return "", fmt.Errorf("create topic %s: %w", topic, err)
	}
	recs := genRecords(n, false, 2)
	cl, err := franzNewClient(kgo.DefaultProduceTopic(topic), kgo.ProducerBatchCompression(kgo.NoCompression()))
	if err != nil {
		return "", err
	}
	defer cl.Close()
	pid, epoch, err := cl.ProducerID(ctx)
	if err != nil {
		return "", fmt.Errorf("InitProducerId (idempotent producer): %w", err)
	}
	if pid < 0 {
		return "", fmt.Errorf("client is not idempotent: producer id %d", pid)
	}
	place := make([]Placement, n)
	var mu sync.Mutex
	var firstErr error
	nerr := 0
	for i, r := range recs {
		i := i
		cl.Produce(ctx, toFranzRecord(r), func(kr *kgo.Record, err error) {
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				nerr++
				if firstErr == nil {
					firstErr = fmt.Errorf("record #%d: %w", i, err)
				}
				return
			}
			place[i] = Placement{kr.Partition, kr.Offset}
		})
	}
	if err := cl.Flush(ctx); err != nil {
		return "", fmt.Errorf("flush: %w", err)
	}
	mu.Lock()
	if firstErr != nil {
		mu.Unlock()
		return "", fmt.Errorf("%d of %d produces failed, first %v", nerr, n, firstErr)
	}
	mu.Unlock()
	per, err := expectedByPartition(recs, place, roundtripPartitions)
	if err != nil {
		return "", err
	}
	cctx, cancel := context.WithTimeout(ctx, 120*time.Second)
	got, cerr := (franzRT{}).consume(cctx, topic, wantCounts(per))
	cancel()
	if derr := compareRecords(recs, per, got, "none"); derr != nil {
		if cerr != nil {
			return "", fmt.Errorf("consume: %v; read %s of acked %s; first difference: %v", cerr, gotCountsString(got, roundtripPartitions), countsString(per), derr)
		}
		return "", derr
	}
	if cerr != nil {
		return "", fmt.Errorf("consume: %v", cerr)
	}
	// values are unique: no duplicate and every index seen once
	seen := make([]bool, n)
	for _, g := range got {
		for _, r := range g {
			var idx int
			if _, err := fmt.Sscanf(string(r.Value), "value-%06d:", &idx); err != nil || idx < 0 || idx >= n {
				return "", fmt.Errorf("unparseable value %s at partition %d offset %d", showBytes(r.Value), r.Partition, r.Offset)
			}
			if seen[idx] {
				return "", fmt.Errorf("duplicate record #%d at partition %d offset %d", idx, r.Partition, r.Offset)
			}
			seen[idx] = true
		}
	}
	for i, s := range seen {
		if !s {
			return "", fmt.Errorf("record #%d never consumed", i)
		}
	}
	ends, err := (franzRT{}).endOffsets(ctx, topic, roundtripPartitions)
	if err != nil {
		return "", fmt.Errorf("list end offsets: %w", err)
	}
	if err := checkEndOffsets(per, ends); err != nil {
		return "", err
	}
	return fmt.Sprintf("%d records (%s), producer id %d epoch %d, no duplicate, no gap", n, countsString(per), pid, epoch), nil
}
