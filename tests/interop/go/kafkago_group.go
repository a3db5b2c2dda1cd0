package main

// kafka-go consumer-group members (kafka.Reader with GroupID). The Reader has
// no rebalance callback; it logs every generation it joins ("joined group %s
// as member %s in generation %d") and the full assignment it then consumes
// ("subscribed to topics and partitions: %+v"), and those log calls are the
// member's view.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"reflect"
	"strings"
	"sync"
	"time"

	"github.com/segmentio/kafka-go"
)

var kafkaGoGroupClient = groupClient{
	name:          kafkaGoName,
	start:         kafkaGoStartMember,
	staticNA:      "kafka-go's Reader/ConsumerGroup has no group.instance.id (static membership, KIP-345)",
	cooperativeNA: "kafka-go implements only eager rebalancing (no cooperative-sticky / incremental rebalance protocol)",
}

type kafkaGoMember struct {
	r      *kafka.Reader
	topic  string
	st     *memberState
	cancel context.CancelFunc
	done   chan struct{}
	once   sync.Once
}

// subscribedPartitions reads the partitions out of the map kafka-go logs
// (map[topicPartition]int64 with unexported fields topic and partition).
func subscribedPartitions(arg any, topic string) ([]int32, bool) {
	v := reflect.ValueOf(arg)
	if v.Kind() != reflect.Map {
		return nil, false
	}
	out := []int32{}
	for _, k := range v.MapKeys() {
		if k.Kind() != reflect.Struct {
			return nil, false
		}
		t, p := k.FieldByName("topic"), k.FieldByName("partition")
		if !t.IsValid() || !p.IsValid() {
			return nil, false
		}
		if t.String() == topic {
			out = append(out, int32(p.Int()))
		}
	}
	return out, true
}

func kafkaGoStartMember(ctx context.Context, spec memberSpec, st *memberState) (groupMember, error) {
	var mu sync.Mutex
	gen := int32(-1)
	member := ""
	logger := kafka.LoggerFunc(func(msg string, args ...any) {
		switch {
		case msg == "joined group %s as member %s in generation %d" && len(args) == 3:
			mu.Lock()
			member, _ = args[1].(string)
			if g, ok := args[2].(int32); ok {
				gen = g
			}
			g, id := gen, member
			mu.Unlock()
			st.setGen(g, id)
		case strings.HasPrefix(msg, "subscribed to topics and partitions") && len(args) == 1:
			parts, ok := subscribedPartitions(args[0], spec.topic)
			if !ok {
				st.errorf("cannot read kafka-go's subscription log argument %T", args[0])
				return
			}
			mu.Lock()
			g, id := gen, member
			mu.Unlock()
			st.assignAll(parts, g, id)
		}
		if cfg.debug {
			logf("[kafka-go %s] "+msg, append([]any{spec.clientID}, args...)...)
		}
	})
	r := kafka.NewReader(kafka.ReaderConfig{
		Brokers:           []string{cfg.bootstrap},
		GroupID:           spec.group,
		Topic:             spec.topic,
		Dialer:            &kafka.Dialer{ClientID: spec.clientID, Timeout: 10 * time.Second},
		MinBytes:          1,
		MaxBytes:          10 << 20,
		MaxWait:           500 * time.Millisecond,
		HeartbeatInterval: spec.heartbeat,
		SessionTimeout:    spec.session,
		RebalanceTimeout:  spec.rebalance,
		JoinGroupBackoff:  250 * time.Millisecond,
		CommitInterval:    0, // CommitMessages commits synchronously
		StartOffset:       kafka.FirstOffset,
		GroupBalancers:    []kafka.GroupBalancer{kafka.RangeGroupBalancer{}},
		ReadBackoffMin:    50 * time.Millisecond,
		ReadBackoffMax:    500 * time.Millisecond,
		Logger:            logger,
		ErrorLogger: kafka.LoggerFunc(func(msg string, args ...any) {
			st.errorf(msg, args...)
		}),
	})
	rctx, cancel := context.WithCancel(context.Background())
	m := &kafkaGoMember{r: r, topic: spec.topic, st: st, cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(m.done)
		for {
			msg, err := r.FetchMessage(rctx)
			if err != nil {
				if rctx.Err() != nil || errors.Is(err, io.EOF) {
					return
				}
				st.errorf("FetchMessage: %v", err)
				select { // retry backoff, as an application would
				case <-rctx.Done():
					return
				case <-time.After(100 * time.Millisecond):
				}
				continue
			}
			st.record(int32(msg.Partition), msg.Offset, string(msg.Value))
			if spec.commitOwn {
				// kafka-go has no revoke callback: commit each record once processed
				if err := r.CommitMessages(rctx, msg); err != nil && rctx.Err() == nil {
					st.errorf("commit p%d@%d: %v", msg.Partition, msg.Offset, err)
				}
			}
		}
	}()
	return m, nil
}

func (m *kafkaGoMember) commit(ctx context.Context, offsets map[int32]int64) error {
	var msgs []kafka.Message
	for p, o := range offsets {
		if o <= 0 {
			return fmt.Errorf("kafka-go commits a message's offset + 1, cannot commit %d", o)
		}
		msgs = append(msgs, kafka.Message{Topic: m.topic, Partition: int(p), Offset: o - 1})
	}
	return m.r.CommitMessages(ctx, msgs...)
}

func (m *kafkaGoMember) close(ctx context.Context) error {
	var err error
	m.once.Do(func() {
		m.cancel()
		_, err = withCtx(ctx, "Reader.Close", func() (struct{}, error) { return struct{}{}, m.r.Close() })
		select {
		case <-m.done:
		case <-ctx.Done():
		}
	})
	return err
}
