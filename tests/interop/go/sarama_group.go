package main

// sarama consumer-group members (sarama.ConsumerGroup). A member's
// assignment is the set of claims whose ConsumeClaim is running: with the
// eager range strategy a rebalance ends every claim and Consume is called
// again; with cooperative-sticky only revoked claims end.

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/IBM/sarama"
)

var saramaGroupClient = groupClient{
	name:  saramaName,
	start: saramaStartMember,
}

type saramaMember struct {
	cg        sarama.ConsumerGroup
	topic     string
	commitOwn bool
	st        *memberState
	cancel    context.CancelFunc
	done      chan struct{}
	once      sync.Once

	mu   sync.Mutex
	sess sarama.ConsumerGroupSession
}

type saramaHandler struct{ m *saramaMember }

func (h saramaHandler) Setup(sess sarama.ConsumerGroupSession) error {
	h.m.mu.Lock()
	h.m.sess = sess
	h.m.mu.Unlock()
	h.m.st.setGen(sess.GenerationID(), sess.MemberID())
	return nil
}

func (h saramaHandler) Cleanup(sess sarama.ConsumerGroupSession) error {
	h.m.mu.Lock()
	if h.m.sess == sess {
		h.m.sess = nil
	}
	h.m.mu.Unlock()
	return nil
}

func (h saramaHandler) ConsumeClaim(sess sarama.ConsumerGroupSession, claim sarama.ConsumerGroupClaim) error {
	m := h.m
	p := claim.Partition()
	m.mu.Lock()
	m.sess = sess
	m.mu.Unlock()
	m.st.assign([]int32{p}, sess.GenerationID(), sess.MemberID())
	defer func() {
		if m.commitOwn {
			// the claim ends when its partition is revoked (or the session ends):
			// commit what was processed
			if pos := m.st.positionsOf([]int32{p}); len(pos) > 0 {
				sess.MarkOffset(m.topic, p, pos[p], "")
				sess.Commit()
				m.st.note("committed %v at the end of the claim", pos)
			}
		}
		m.st.revoke([]int32{p}, "claim ended")
	}()
	for {
		select {
		case msg, ok := <-claim.Messages():
			if !ok {
				return nil
			}
			m.st.record(msg.Partition, msg.Offset, string(msg.Value))
		case <-sess.Context().Done():
			return nil
		}
	}
}

func saramaStartMember(ctx context.Context, spec memberSpec, st *memberState) (groupMember, error) {
	c := saramaConfig()
	c.ClientID = spec.clientID
	c.Consumer.Offsets.Initial = sarama.OffsetOldest
	c.Consumer.Offsets.AutoCommit.Enable = false
	c.Consumer.Group.Session.Timeout = spec.session
	c.Consumer.Group.Heartbeat.Interval = spec.heartbeat
	c.Consumer.Group.Rebalance.Timeout = spec.rebalance
	c.Consumer.Group.Rebalance.Retry.Backoff = 250 * time.Millisecond
	c.Consumer.Group.Rebalance.Retry.Max = 20
	if spec.cooperative {
		c.Consumer.Group.Rebalance.GroupStrategies = []sarama.BalanceStrategy{sarama.NewBalanceStrategyCooperativeSticky()}
	} else {
		c.Consumer.Group.Rebalance.GroupStrategies = []sarama.BalanceStrategy{sarama.NewBalanceStrategyRange()}
	}
	if spec.instanceID != "" {
		c.Consumer.Group.InstanceId = spec.instanceID
	}
	cg, err := withCtx(ctx, "NewConsumerGroup", func() (sarama.ConsumerGroup, error) {
		return sarama.NewConsumerGroup([]string{cfg.bootstrap}, spec.group, c)
	})
	if err != nil {
		return nil, fmt.Errorf("NewConsumerGroup: %w", err)
	}
	cctx, cancel := context.WithCancel(context.Background())
	m := &saramaMember{cg: cg, topic: spec.topic, commitOwn: spec.commitOwn, st: st, cancel: cancel, done: make(chan struct{})}
	go func() {
		for err := range cg.Errors() {
			st.errorf("%v", err)
		}
	}()
	// A cooperative rebalance updates the live session's generation without
	// calling the handler for retained claims: watch it.
	go func() {
		for {
			select {
			case <-cctx.Done():
				return
			case <-time.After(50 * time.Millisecond):
			}
			m.mu.Lock()
			sess := m.sess
			m.mu.Unlock()
			if sess != nil {
				st.setGen(sess.GenerationID(), sess.MemberID())
			}
		}
	}()
	go func() {
		defer close(m.done)
		for {
			err := cg.Consume(cctx, []string{spec.topic}, saramaHandler{m})
			if cctx.Err() != nil || errors.Is(err, sarama.ErrClosedConsumerGroup) {
				return
			}
			if err != nil {
				st.errorf("Consume: %v", err)
				select {
				case <-cctx.Done():
					return
				case <-time.After(250 * time.Millisecond): // retry backoff, as an application would
				}
			}
		}
	}()
	return m, nil
}

func (m *saramaMember) commit(ctx context.Context, offsets map[int32]int64) error {
	m.mu.Lock()
	sess := m.sess
	m.mu.Unlock()
	if sess == nil {
		return errNoSession
	}
	for p, o := range offsets {
		// MarkOffset only moves forward and ResetOffset only backward: together they set o.
		sess.MarkOffset(m.topic, p, o, "")
		sess.ResetOffset(m.topic, p, o, "")
	}
	_, err := withCtx(ctx, "ConsumerGroupSession.Commit", func() (struct{}, error) {
		sess.Commit()
		return struct{}{}, nil
	})
	return err
}

func (m *saramaMember) close(ctx context.Context) error {
	var err error
	m.once.Do(func() {
		m.cancel()
		_, err = withCtx(ctx, "ConsumerGroup.Close", func() (struct{}, error) { return struct{}{}, m.cg.Close() })
		select {
		case <-m.done:
		case <-ctx.Done():
		}
	})
	return err
}
