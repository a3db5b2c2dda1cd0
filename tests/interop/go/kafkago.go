package main

import (
	"context"
	"errors"
	"fmt"
	"log"
	"net"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/compress"
)

const kafkaGoName = "kafka-go"

var kafkaGoScenarios = append([]string{"create-topic", "roundtrip-none", "roundtrip-gzip", "roundtrip-snappy", "roundtrip-lz4", "roundtrip-zstd"}, groupScenarioNames...)

func kafkaGoCompression(codec string) (compress.Compression, error) {
	switch codec {
	case "none":
		return compress.None, nil
	case "gzip":
		return compress.Gzip, nil
	case "snappy":
		return compress.Snappy, nil
	case "lz4":
		return compress.Lz4, nil
	case "zstd":
		return compress.Zstd, nil
	}
	return 0, fmt.Errorf("unknown codec %q", codec)
}

func kafkaGoClient() *kafka.Client {
	return &kafka.Client{Addr: kafka.TCP(cfg.bootstrap), Timeout: 30 * time.Second}
}

func kafkaGoDebugLogger(what string) kafka.Logger {
	if !cfg.debug {
		return nil
	}
	l := log.New(os.Stderr, "[kafka-go "+what+"] ", log.Lmicroseconds)
	return kafka.LoggerFunc(l.Printf)
}

// kafkaGoWaitTopic polls Metadata until the topic has the partitions, each with a leader.
func kafkaGoWaitTopic(ctx context.Context, topic string, partitions int) error {
	c := kafkaGoClient()
	deadline := time.Now().Add(30 * time.Second)
	var last error
	for {
		md, err := c.Metadata(ctx, &kafka.MetadataRequest{Topics: []string{topic}})
		last = err
		if err == nil {
			last = fmt.Errorf("topic missing from metadata")
			for _, t := range md.Topics {
				if t.Name != topic {
					continue
				}
				switch {
				case t.Error != nil:
					last = fmt.Errorf("topic error %v", t.Error)
				case len(t.Partitions) != partitions:
					last = fmt.Errorf("%d partitions, want %d", len(t.Partitions), partitions)
				default:
					last = nil
					for _, p := range t.Partitions {
						if p.Error != nil || p.Leader.Host == "" {
							last = fmt.Errorf("partition %d error %v leader %d@%s:%d", p.ID, p.Error, p.Leader.ID, p.Leader.Host, p.Leader.Port)
							break
						}
					}
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

func runKafkaGo(sel func(string) bool) {
	if sel("create-topic") {
		runScenario(kafkaGoName, "create-topic", 60*time.Second, kafkaGoCreateTopicScenario)
	}
	for _, codec := range codecs {
		sc := "roundtrip-" + codec
		if !sel(sc) {
			continue
		}
		runScenario(kafkaGoName, sc, 120*time.Second, func(ctx context.Context) (string, error) {
			recs := genRecords(roundtripRecords, true, 4)
			return roundtrip(ctx, kafkaGoRT{}, cfg.prefix+"go-kafkago-rt-"+codec, codec, recs, 60*time.Second)
		})
	}
	runGroupScenarios(kafkaGoGroupClient, "kafkago", sel)
}

// kafkaGoCreateTopicScenario uses the classic path: Conn to the bootstrap,
// ask it for the controller, CreateTopics on a Conn to the controller.
func kafkaGoCreateTopicScenario(ctx context.Context) (string, error) {
	topic := cfg.prefix + "go-kafkago-create"
	conn, err := kafka.DialContext(ctx, "tcp", cfg.bootstrap)
	if err != nil {
		return "", fmt.Errorf("dial %s: %w", cfg.bootstrap, err)
	}
	defer conn.Close()
	if dl, ok := ctx.Deadline(); ok {
		conn.SetDeadline(dl)
	}
	ctrl, err := conn.Controller()
	if err != nil {
		return "", fmt.Errorf("Conn.Controller (metadata): %w", err)
	}
	ctrlAddr := net.JoinHostPort(ctrl.Host, strconv.Itoa(ctrl.Port))
	cconn, err := kafka.DialContext(ctx, "tcp", ctrlAddr)
	if err != nil {
		return "", fmt.Errorf("dial controller %d at %s: %w", ctrl.ID, ctrlAddr, err)
	}
	defer cconn.Close()
	if dl, ok := ctx.Deadline(); ok {
		cconn.SetDeadline(dl)
	}
	if err := cconn.CreateTopics(kafka.TopicConfig{Topic: topic, NumPartitions: 3, ReplicationFactor: 1}); err != nil {
		return "", fmt.Errorf("Conn.CreateTopics on controller %s: %w", ctrlAddr, err)
	}
	if err := kafkaGoWaitTopic(ctx, topic, 3); err != nil {
		return "", err
	}
	parts, err := conn.ReadPartitions(topic)
	if err != nil {
		return "", fmt.Errorf("Conn.ReadPartitions(%s): %w", topic, err)
	}
	if len(parts) != 3 {
		return "", fmt.Errorf("Conn.ReadPartitions(%s) returned %d partitions, want 3", topic, len(parts))
	}
	// Conn.CreateTopics hides TOPIC_ALREADY_EXISTS; Client.CreateTopics reports it per topic.
	resp, err := kafkaGoClient().CreateTopics(ctx, &kafka.CreateTopicsRequest{
		Topics: []kafka.TopicConfig{{Topic: topic, NumPartitions: 3, ReplicationFactor: 1}},
	})
	if err != nil {
		return "", fmt.Errorf("second create (Client.CreateTopics): %w", err)
	}
	if terr := resp.Errors[topic]; !errors.Is(terr, kafka.TopicAlreadyExists) {
		return "", fmt.Errorf("second create of %s: got %v, want TOPIC_ALREADY_EXISTS", topic, terr)
	}
	return fmt.Sprintf("created %s on controller %d@%s, 3 partitions with leaders, re-create gave TOPIC_ALREADY_EXISTS", topic, ctrl.ID, ctrlAddr), nil
}

// kafkaGoRT implements rtClient with kafka-go.
type kafkaGoRT struct{}

func (kafkaGoRT) createTopic(ctx context.Context, topic string, partitions int32) error {
	resp, err := kafkaGoClient().CreateTopics(ctx, &kafka.CreateTopicsRequest{
		Topics: []kafka.TopicConfig{{Topic: topic, NumPartitions: int(partitions), ReplicationFactor: 1}},
	})
	if err != nil {
		return fmt.Errorf("Client.CreateTopics: %w", err)
	}
	if terr := resp.Errors[topic]; terr != nil {
		return fmt.Errorf("Client.CreateTopics: %w", terr)
	}
	return kafkaGoWaitTopic(ctx, topic, int(partitions))
}

func (kafkaGoRT) produce(ctx context.Context, topic, codec string, recs []Rec) ([]Placement, error) {
	cc, err := kafkaGoCompression(codec)
	if err != nil {
		return nil, err
	}
	index := make(map[string]int, len(recs))
	for i, r := range recs {
		index[string(r.Value)] = i
	}
	place := make([]Placement, len(recs))
	acked := make([]bool, len(recs))
	var mu sync.Mutex
	var complErr error
	w := &kafka.Writer{
		Addr:         kafka.TCP(cfg.bootstrap),
		Topic:        topic,
		Balancer:     &kafka.Hash{},
		Compression:  cc,
		RequiredAcks: kafka.RequireAll,
		BatchSize:    100,
		BatchTimeout: 10 * time.Millisecond,
		WriteTimeout: 30 * time.Second,
		ReadTimeout:  30 * time.Second,
		MaxAttempts:  5,
		Logger:       kafkaGoDebugLogger("writer"),
		Completion: func(msgs []kafka.Message, err error) {
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				if complErr == nil {
					complErr = err
				}
				return
			}
			for _, m := range msgs {
				i, ok := index[string(m.Value)]
				if !ok {
					if complErr == nil {
						complErr = fmt.Errorf("completion for unknown message %s", showBytes(m.Value))
					}
					continue
				}
				place[i] = Placement{int32(m.Partition), m.Offset}
				acked[i] = true
			}
		},
	}
	msgs := make([]kafka.Message, len(recs))
	for i, r := range recs {
		m := kafka.Message{Key: r.Key, Value: r.Value, Time: time.UnixMilli(r.TsMs)}
		for _, h := range r.Headers {
			m.Headers = append(m.Headers, kafka.Header{Key: h.Key, Value: h.Value})
		}
		msgs[i] = m
	}
	werr := w.WriteMessages(ctx, msgs...)
	cerr := w.Close()
	if werr != nil {
		var wes kafka.WriteErrors
		if errors.As(werr, &wes) {
			n := 0
			var first error
			for _, e := range wes {
				if e != nil {
					n++
					if first == nil {
						first = e
					}
				}
			}
			return nil, fmt.Errorf("Writer.WriteMessages: %d of %d messages failed, first: %v", n, len(msgs), first)
		}
		return nil, fmt.Errorf("Writer.WriteMessages: %w", werr)
	}
	if cerr != nil {
		return nil, fmt.Errorf("Writer.Close: %w", cerr)
	}
	mu.Lock()
	defer mu.Unlock()
	if complErr != nil {
		return nil, fmt.Errorf("Writer completion: %w", complErr)
	}
	for i, ok := range acked {
		if !ok {
			return nil, fmt.Errorf("record #%d was never acked by the writer", i)
		}
	}
	return place, nil
}

func (kafkaGoRT) consume(ctx context.Context, topic string, want map[int32]int) (map[int32][]Got, error) {
	var mu sync.Mutex
	got := map[int32][]Got{}
	var errs []string
	var wg sync.WaitGroup
	for p, n := range want {
		wg.Add(1)
		go func(p int32, n int) {
			defer wg.Done()
			r := kafka.NewReader(kafka.ReaderConfig{
				Brokers:   []string{cfg.bootstrap},
				Topic:     topic,
				Partition: int(p),
				MinBytes:  1,
				MaxBytes:  10 << 20,
				MaxWait:   500 * time.Millisecond,
				// The reader's background lag poll dials its own connection; when the partition
				// is read to the end before that poll returns, Close cancels it and kafka-go
				// reports "failed to read lag: context canceled". That race is in the client
				// (a fast broker wins it), and lag is not what this scenario checks.
				ReadLagInterval: -1,
				Logger:          kafkaGoDebugLogger(fmt.Sprintf("reader p%d", p)),
				ErrorLogger: kafka.LoggerFunc(func(msg string, args ...any) {
					mu.Lock()
					errs = append(errs, fmt.Sprintf("partition %d: %s", p, fmt.Sprintf(msg, args...)))
					mu.Unlock()
					if cfg.debug {
						logf("[kafka-go reader p%d] ERROR "+msg, append([]any{p}, args...)...)
					}
				}),
			})
			defer r.Close()
			if err := r.SetOffset(kafka.FirstOffset); err != nil {
				mu.Lock()
				errs = append(errs, fmt.Sprintf("partition %d: SetOffset(FirstOffset): %v", p, err))
				mu.Unlock()
				return
			}
			for count := 0; count < n; count++ {
				m, err := r.ReadMessage(ctx)
				if err != nil {
					if ctx.Err() == nil {
						mu.Lock()
						errs = append(errs, fmt.Sprintf("partition %d: ReadMessage: %v", p, err))
						mu.Unlock()
					}
					return
				}
				g := Got{Rec: Rec{Key: m.Key, Value: m.Value, TsMs: m.Time.UnixMilli()}, Partition: int32(m.Partition), Offset: m.Offset}
				for _, h := range m.Headers {
					g.Headers = append(g.Headers, Header{Key: h.Key, Value: h.Value})
				}
				mu.Lock()
				got[p] = append(got[p], g)
				mu.Unlock()
			}
		}(p, n)
	}
	wg.Wait()
	mu.Lock()
	defer mu.Unlock()
	if ctx.Err() != nil {
		return got, fmt.Errorf("timed out (%v); reader errors seen: %v", ctx.Err(), lastN(errs, 3))
	}
	if len(errs) > 0 {
		return got, fmt.Errorf("reader errors: %v", lastN(errs, 3))
	}
	return got, nil
}

func (kafkaGoRT) endOffsets(ctx context.Context, topic string, partitions int32) (map[int32]int64, error) {
	req := &kafka.ListOffsetsRequest{Topics: map[string][]kafka.OffsetRequest{}}
	for p := 0; p < int(partitions); p++ {
		req.Topics[topic] = append(req.Topics[topic], kafka.LastOffsetOf(p))
	}
	resp, err := kafkaGoClient().ListOffsets(ctx, req)
	if err != nil {
		return nil, fmt.Errorf("Client.ListOffsets: %w", err)
	}
	out := map[int32]int64{}
	for _, po := range resp.Topics[topic] {
		if po.Error != nil {
			return nil, fmt.Errorf("Client.ListOffsets partition %d: %w", po.Partition, po.Error)
		}
		out[int32(po.Partition)] = po.LastOffset
	}
	return out, nil
}
