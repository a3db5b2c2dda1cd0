package main

import (
	"context"
	"errors"
	"fmt"
	"log"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/IBM/sarama"
)

const saramaName = "sarama"

var saramaScenarios = append([]string{"create-topic", "admin", "roundtrip-none", "roundtrip-gzip", "roundtrip-snappy", "roundtrip-lz4", "roundtrip-zstd"}, groupScenarioNames...)

func saramaConfig() *sarama.Config {
	c := sarama.NewConfig()
	c.Version = sarama.V2_8_0_0
	c.ClientID = "kelp-interop-sarama"
	c.Net.DialTimeout = 10 * time.Second
	c.Net.ReadTimeout = 15 * time.Second
	c.Net.WriteTimeout = 15 * time.Second
	c.Metadata.Retry.Max = 2
	c.Admin.Timeout = 30 * time.Second
	c.Producer.Return.Successes = true
	c.Producer.Return.Errors = true
	c.Producer.RequiredAcks = sarama.WaitForAll
	c.Producer.Partitioner = sarama.NewHashPartitioner
	c.Consumer.Return.Errors = true
	c.Consumer.MaxWaitTime = 500 * time.Millisecond
	return c
}

func saramaCompression(codec string) (sarama.CompressionCodec, error) {
	switch codec {
	case "none":
		return sarama.CompressionNone, nil
	case "gzip":
		return sarama.CompressionGZIP, nil
	case "snappy":
		return sarama.CompressionSnappy, nil
	case "lz4":
		return sarama.CompressionLZ4, nil
	case "zstd":
		return sarama.CompressionZSTD, nil
	}
	return 0, fmt.Errorf("unknown codec %q", codec)
}

// withCtx runs a blocking sarama call and gives up when ctx ends.
func withCtx[T any](ctx context.Context, what string, fn func() (T, error)) (T, error) {
	type res struct {
		v   T
		err error
	}
	ch := make(chan res, 1)
	go func() {
		v, err := fn()
		ch <- res{v, err}
	}()
	select {
	case r := <-ch:
		return r.v, r.err
	case <-ctx.Done():
		var zero T
		return zero, fmt.Errorf("sarama %s still blocked at the scenario deadline: %w", what, ctx.Err())
	}
}

// saramaTarget is the listener a sarama client talks to. The zero value is
// KELP_BOOTSTRAP in plaintext; the SASL_SSL scenarios set addr and secure.
type saramaTarget struct {
	addr   string               // "" means KELP_BOOTSTRAP
	secure func(*sarama.Config) // TLS and SASL settings, nil for plaintext
}

func (t saramaTarget) brokers() []string {
	if t.addr == "" {
		return []string{cfg.bootstrap}
	}
	return []string{t.addr}
}

func (t saramaTarget) config() *sarama.Config {
	c := saramaConfig()
	if t.secure != nil {
		t.secure(c)
	}
	return c
}

func saramaAdmin(ctx context.Context, t saramaTarget) (sarama.ClusterAdmin, error) {
	return withCtx(ctx, "NewClusterAdmin", func() (sarama.ClusterAdmin, error) {
		return sarama.NewClusterAdmin(t.brokers(), t.config())
	})
}

// saramaWaitTopic polls DescribeTopics until the topic has the partitions with leaders.
func saramaWaitTopic(ctx context.Context, adm sarama.ClusterAdmin, topic string, partitions int) error {
	deadline := time.Now().Add(30 * time.Second)
	var last error
	for {
		md, err := withCtx(ctx, "ClusterAdmin.DescribeTopics", func() ([]*sarama.TopicMetadata, error) { return adm.DescribeTopics([]string{topic}) })
		switch {
		case err != nil:
			last = err
		case len(md) != 1:
			last = fmt.Errorf("DescribeTopics returned %d topics", len(md))
		case !errors.Is(md[0].Err, sarama.ErrNoError):
			last = fmt.Errorf("topic error %v", md[0].Err)
		case len(md[0].Partitions) != partitions:
			last = fmt.Errorf("%d partitions, want %d", len(md[0].Partitions), partitions)
		default:
			last = nil
			for _, p := range md[0].Partitions {
				if !errors.Is(p.Err, sarama.ErrNoError) || p.Leader < 0 {
					last = fmt.Errorf("partition %d err %v leader %d", p.ID, p.Err, p.Leader)
					break
				}
			}
			if last == nil {
				return nil
			}
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("topic %s not ready in metadata within 30s: %v", topic, last)
		}
		select {
		case <-ctx.Done():
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func saramaCreate(ctx context.Context, t saramaTarget, topic string, partitions int32) error {
	adm, err := saramaAdmin(ctx, t)
	if err != nil {
		return fmt.Errorf("NewClusterAdmin: %w", err)
	}
	defer adm.Close()
	if _, err := withCtx(ctx, "ClusterAdmin.CreateTopic", func() (struct{}, error) {
		return struct{}{}, adm.CreateTopic(topic, &sarama.TopicDetail{NumPartitions: partitions, ReplicationFactor: 1}, false)
	}); err != nil {
		return fmt.Errorf("ClusterAdmin.CreateTopic: %w", err)
	}
	return saramaWaitTopic(ctx, adm, topic, int(partitions))
}

func runSarama(sel func(string) bool) {
	if cfg.debug {
		sarama.Logger = log.New(os.Stderr, "[sarama] ", log.Lmicroseconds)
	}
	createdTopic := cfg.prefix + "go-sarama-create"
	createdOK := false
	if sel("create-topic") {
		createdOK = runScenario(saramaName, "create-topic", 60*time.Second, func(ctx context.Context) (string, error) {
			if err := saramaCreate(ctx, saramaTarget{}, createdTopic, 3); err != nil {
				return "", err
			}
			adm, err := saramaAdmin(ctx, saramaTarget{})
			if err != nil {
				return "", err
			}
			defer adm.Close()
			_, err = withCtx(ctx, "ClusterAdmin.CreateTopic", func() (struct{}, error) {
				return struct{}{}, adm.CreateTopic(createdTopic, &sarama.TopicDetail{NumPartitions: 3, ReplicationFactor: 1}, false)
			})
			if !errors.Is(err, sarama.ErrTopicAlreadyExists) {
				return "", fmt.Errorf("second CreateTopic of %s: got %v, want TOPIC_ALREADY_EXISTS", createdTopic, err)
			}
			return fmt.Sprintf("created %s with 3 partitions, leaders in metadata, re-create gave TOPIC_ALREADY_EXISTS", createdTopic), nil
		})
	}
	if sel("admin") {
		runScenario(saramaName, "admin", 60*time.Second, func(ctx context.Context) (string, error) {
			if !sel("create-topic") {
				if err := saramaCreate(ctx, saramaTarget{}, createdTopic, 3); err != nil {
					return "", fmt.Errorf("create %s: %w", createdTopic, err)
				}
			} else if !createdOK {
				return "", skipf("admin inspects the topic made by create-topic, which failed")
			}
			return saramaAdminScenario(ctx, createdTopic)
		})
	}
	for _, codec := range codecs {
		sc := "roundtrip-" + codec
		if !sel(sc) {
			continue
		}
		runScenario(saramaName, sc, 120*time.Second, func(ctx context.Context) (string, error) {
			recs := genRecords(roundtripRecords, true, 3)
			return roundtrip(ctx, saramaRT{}, cfg.prefix+"go-sarama-rt-"+codec, codec, recs, 60*time.Second)
		})
	}
	runGroupScenarios(saramaGroupClient, "sarama", sel)
	runSaramaSASLSSL()
}

func saramaAdminScenario(ctx context.Context, topic string) (string, error) {
	adm, err := saramaAdmin(ctx, saramaTarget{})
	if err != nil {
		return "", fmt.Errorf("NewClusterAdmin: %w", err)
	}
	defer adm.Close()
	var notes []string
	topics, err := withCtx(ctx, "ClusterAdmin.ListTopics", adm.ListTopics)
	if err != nil {
		return "", fmt.Errorf("ListTopics: %w", err)
	}
	td, ok := topics[topic]
	if !ok {
		return "", fmt.Errorf("ListTopics does not include %s (%d topics listed)", topic, len(topics))
	}
	if td.NumPartitions != 3 {
		return "", fmt.Errorf("ListTopics shows %s with %d partitions, want 3", topic, td.NumPartitions)
	}
	notes = append(notes, fmt.Sprintf("list-topics sees %d topics", len(topics)))
	entries, err := withCtx(ctx, "ClusterAdmin.DescribeConfig", func() ([]sarama.ConfigEntry, error) {
		return adm.DescribeConfig(sarama.ConfigResource{Type: sarama.TopicResource, Name: topic})
	})
	if err != nil {
		return "", fmt.Errorf("DescribeConfig(topic %s): %w", topic, err)
	}
	if len(entries) == 0 {
		return "", fmt.Errorf("DescribeConfig(topic %s) returned no entries", topic)
	}
	notes = append(notes, fmt.Sprintf("describe-config %d entries", len(entries)))
	type cluster struct {
		brokers []*sarama.Broker
		ctrl    int32
	}
	cl, err := withCtx(ctx, "ClusterAdmin.DescribeCluster", func() (cluster, error) {
		b, c, err := adm.DescribeCluster()
		return cluster{b, c}, err
	})
	if err != nil {
		return "", fmt.Errorf("DescribeCluster: %w", err)
	}
	if len(cl.brokers) == 0 {
		return "", fmt.Errorf("DescribeCluster lists no brokers")
	}
	var bs []string
	ctrlOK := false
	for _, b := range cl.brokers {
		bs = append(bs, fmt.Sprintf("%d@%s", b.ID(), b.Addr()))
		if b.ID() == cl.ctrl {
			ctrlOK = true
		}
	}
	if !ctrlOK {
		return "", fmt.Errorf("DescribeCluster controller %d is not among brokers %v", cl.ctrl, bs)
	}
	notes = append(notes, fmt.Sprintf("describe-cluster brokers %v controller %d", bs, cl.ctrl))
	return strings.Join(notes, "; "), nil
}

// saramaRT implements rtClient with sarama, against its target's listener.
type saramaRT struct{ at saramaTarget }

func (rt saramaRT) createTopic(ctx context.Context, topic string, partitions int32) error {
	return saramaCreate(ctx, rt.at, topic, partitions)
}

func (rt saramaRT) produce(ctx context.Context, topic, codec string, recs []Rec) ([]Placement, error) {
	c := rt.at.config()
	cc, err := saramaCompression(codec)
	if err != nil {
		return nil, err
	}
	c.Producer.Compression = cc
	p, err := withCtx(ctx, "NewSyncProducer", func() (sarama.SyncProducer, error) {
		return sarama.NewSyncProducer(rt.at.brokers(), c)
	})
	if err != nil {
		return nil, fmt.Errorf("NewSyncProducer: %w", err)
	}
	defer p.Close()
	msgs := make([]*sarama.ProducerMessage, len(recs))
	for i, r := range recs {
		m := &sarama.ProducerMessage{
			Topic:     topic,
			Key:       sarama.ByteEncoder(r.Key),
			Value:     sarama.ByteEncoder(r.Value),
			Timestamp: time.UnixMilli(r.TsMs),
			Partition: -1,
		}
		for _, h := range r.Headers {
			m.Headers = append(m.Headers, sarama.RecordHeader{Key: []byte(h.Key), Value: h.Value})
		}
		msgs[i] = m
	}
	if _, err := withCtx(ctx, "SyncProducer.SendMessages", func() (struct{}, error) { return struct{}{}, p.SendMessages(msgs) }); err != nil {
		var perrs sarama.ProducerErrors
		if errors.As(err, &perrs) && len(perrs) > 0 {
			return nil, fmt.Errorf("%d of %d messages failed, first: %v", len(perrs), len(msgs), perrs[0].Err)
		}
		return nil, err
	}
	place := make([]Placement, len(recs))
	for i, m := range msgs {
		place[i] = Placement{m.Partition, m.Offset}
	}
	return place, nil
}

func (rt saramaRT) consume(ctx context.Context, topic string, want map[int32]int) (map[int32][]Got, error) {
	consumer, err := withCtx(ctx, "NewConsumer", func() (sarama.Consumer, error) {
		return sarama.NewConsumer(rt.at.brokers(), rt.at.config())
	})
	if err != nil {
		return nil, fmt.Errorf("NewConsumer: %w", err)
	}
	defer consumer.Close()
	var mu sync.Mutex
	got := map[int32][]Got{}
	var errs []string
	var wg sync.WaitGroup
	for p, n := range want {
		pc, err := withCtx(ctx, "ConsumePartition", func() (sarama.PartitionConsumer, error) {
			return consumer.ConsumePartition(topic, p, sarama.OffsetOldest)
		})
		if err != nil {
			return got, fmt.Errorf("ConsumePartition(%d, OffsetOldest): %w", p, err)
		}
		wg.Add(1)
		go func(p int32, n int, pc sarama.PartitionConsumer) {
			defer wg.Done()
			defer pc.AsyncClose()
			count := 0
			for count < n {
				select {
				case <-ctx.Done():
					return
				case m, ok := <-pc.Messages():
					if !ok {
						return
					}
					g := Got{Rec: Rec{Key: m.Key, Value: m.Value, TsMs: m.Timestamp.UnixMilli()}, Partition: m.Partition, Offset: m.Offset}
					for _, h := range m.Headers {
						g.Headers = append(g.Headers, Header{Key: string(h.Key), Value: h.Value})
					}
					mu.Lock()
					got[p] = append(got[p], g)
					mu.Unlock()
					count++
				case e, ok := <-pc.Errors():
					if ok {
						mu.Lock()
						errs = append(errs, fmt.Sprintf("partition %d: %v", p, e.Err))
						mu.Unlock()
					}
				}
			}
		}(p, n, pc)
	}
	wg.Wait()
	mu.Lock()
	defer mu.Unlock()
	if ctx.Err() != nil {
		return got, fmt.Errorf("timed out (%v); consumer errors seen: %v", ctx.Err(), lastN(errs, 3))
	}
	if len(errs) > 0 {
		return got, fmt.Errorf("consumer errors: %v", lastN(errs, 3))
	}
	return got, nil
}

func (rt saramaRT) endOffsets(ctx context.Context, topic string, partitions int32) (map[int32]int64, error) {
	client, err := withCtx(ctx, "NewClient", func() (sarama.Client, error) {
		return sarama.NewClient(rt.at.brokers(), rt.at.config())
	})
	if err != nil {
		return nil, err
	}
	defer client.Close()
	out := map[int32]int64{}
	for p := int32(0); p < partitions; p++ {
		o, err := withCtx(ctx, "Client.GetOffset", func() (int64, error) { return client.GetOffset(topic, p, sarama.OffsetNewest) })
		if err != nil {
			return nil, fmt.Errorf("GetOffset(partition %d, newest): %w", p, err)
		}
		out[p] = o
	}
	return out, nil
}
