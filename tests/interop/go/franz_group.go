package main

// franz-go consumer-group members (kgo.ConsumerGroup) and the kadm group
// admin scenario.

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

var franzGroupClient = groupClient{
	name:  franzName,
	start: franzStartMember,
}

type franzMember struct {
	cl     *kgo.Client
	topic  string
	st     *memberState
	cancel context.CancelFunc
	done   chan struct{}
	once   sync.Once
}

func franzStartMember(ctx context.Context, spec memberSpec, st *memberState) (groupMember, error) {
	bal := kgo.RangeBalancer()
	if spec.cooperative {
		bal = kgo.CooperativeStickyBalancer()
	}
	topic := spec.topic
	opts := []kgo.Opt{
		kgo.ClientID(spec.clientID),
		kgo.ConsumerGroup(spec.group),
		kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.DisableAutoCommit(),
		kgo.Balancers(bal),
		kgo.SessionTimeout(spec.session),
		kgo.HeartbeatInterval(spec.heartbeat),
		kgo.RebalanceTimeout(spec.rebalance),
		kgo.FetchMaxWait(500 * time.Millisecond),
		kgo.OnPartitionsAssigned(func(_ context.Context, cl *kgo.Client, m map[string][]int32) {
			mid, gen := cl.GroupMetadata()
			st.assign(m[topic], gen, mid)
		}),
		kgo.OnPartitionsRevoked(func(ctx context.Context, cl *kgo.Client, m map[string][]int32) {
			if spec.commitOwn {
				if pos := st.positionsOf(m[topic]); len(pos) > 0 {
					if err := franzCommit(ctx, cl, topic, pos); err != nil {
						st.errorf("commit %v on revoke: %v", pos, err)
					} else {
						st.note("committed %v on revoke", pos)
					}
				}
			}
			st.revoke(m[topic], "revoked")
		}),
		kgo.OnPartitionsLost(func(_ context.Context, _ *kgo.Client, m map[string][]int32) {
			st.revoke(m[topic], "lost")
		}),
	}
	if spec.instanceID != "" {
		opts = append(opts, kgo.InstanceID(spec.instanceID))
	}
	if spec.commitOwn {
		// no revoke while a poll's records are being processed: the revoke
		// commits exactly what was processed
		opts = append(opts, kgo.BlockRebalanceOnPoll())
	}
	cl, err := franzNewClient(opts...)
	if err != nil {
		return nil, err
	}
	pctx, cancel := context.WithCancel(context.Background())
	m := &franzMember{cl: cl, topic: topic, st: st, cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(m.done)
		for {
			fs := cl.PollFetches(pctx)
			if pctx.Err() != nil || fs.IsClientClosed() {
				return
			}
			fs.EachError(func(t string, p int32, err error) {
				if !errors.Is(err, context.Canceled) {
					st.errorf("fetch %s[%d]: %v", t, p, err)
				}
			})
			fs.EachRecord(func(r *kgo.Record) {
				if r.Topic == topic {
					st.record(r.Partition, r.Offset, string(r.Value))
				}
			})
			mid, gen := cl.GroupMetadata()
			st.setGen(gen, mid)
			cl.AllowRebalance()
		}
	}()
	return m, nil
}

func franzCommit(ctx context.Context, cl *kgo.Client, topic string, offsets map[int32]int64) error {
	req := map[string]map[int32]kgo.EpochOffset{topic: {}}
	for p, o := range offsets {
		req[topic][p] = kgo.EpochOffset{Epoch: -1, Offset: o}
	}
	var rerr error
	cl.CommitOffsetsSync(ctx, req, func(_ *kgo.Client, _ *kmsg.OffsetCommitRequest, resp *kmsg.OffsetCommitResponse, err error) {
		if err != nil {
			rerr = err
			return
		}
		for _, t := range resp.Topics {
			for _, p := range t.Partitions {
				if e := kerr.ErrorForCode(p.ErrorCode); e != nil && rerr == nil {
					rerr = fmt.Errorf("OffsetCommit %s[%d]: %w", t.Topic, p.Partition, e)
				}
			}
		}
	})
	return rerr
}

func (m *franzMember) commit(ctx context.Context, offsets map[int32]int64) error {
	return franzCommit(ctx, m.cl, m.topic, offsets)
}

func (m *franzMember) close(ctx context.Context) error {
	m.once.Do(func() {
		m.cancel()
		<-m.done
		m.cl.CloseAllowingRebalance()
	})
	return nil
}

// ---------------------------------------------------------------------------------------------
// admin-groups: ListGroups, DescribeGroups, FetchOffsets (OffsetFetch),
// DeleteOffsets (OffsetDelete) and DeleteGroups through kadm, on a live group
// and after it emptied.

func franzAdminGroupsScenario(ctx context.Context) (string, error) {
	topic := cfg.prefix + "go-franz-admin-groups"
	group := topic + "-g"
	env, err := newGroupEnv(ctx, topic)
	if err != nil {
		return "", err
	}
	defer env.closeAll()
	adm := env.adm
	var notes []string
	// mismatches that do not stop the rest of the scenario; any fails it
	var bad []string

	ms, sts, err := startMembers(ctx, franzGroupClient, env, memberSpec{group: group}, group+"-m0", group+"-m1")
	if err != nil {
		return "", err
	}
	if _, err := env.waitStable(ctx, group, sts, 60*time.Second); err != nil {
		return "", err
	}
	batch, err := env.produce(ctx, 10, "adm")
	if err != nil {
		return "", err
	}
	if err := env.waitConsumed(ctx, "all records", sts, batch, 30*time.Second); err != nil {
		return "", err
	}
	commits, err := commitPositions(ctx, ms, sts)
	if err != nil {
		return "", err
	}

	// ListGroups: the group, Stable, protocol type consumer
	lg, err := adm.ListGroups(ctx)
	if err != nil {
		return "", fmt.Errorf("ListGroups: %w", err)
	}
	g, ok := lg[group]
	if !ok {
		return "", fmt.Errorf("ListGroups does not list %s (lists %v)", group, lg.Groups())
	}
	if g.ProtocolType != "consumer" {
		return "", fmt.Errorf("ListGroups: %s protocol type %q, want consumer", group, g.ProtocolType)
	}
	if g.State != "" && g.State != "Stable" {
		return "", fmt.Errorf("ListGroups: %s state %q, want Stable", group, g.State)
	}
	notes = append(notes, fmt.Sprintf("ListGroups: %s consumer/%s type %q", group, g.State, g.GroupType))
	// the states filter
	lgs, err := adm.ListGroups(ctx, "Empty")
	if err != nil {
		return "", fmt.Errorf("ListGroups(states=Empty): %w", err)
	}
	if _, ok := lgs[group]; ok {
		return "", fmt.Errorf("ListGroups(states=Empty) lists the Stable group %s", group)
	}

	// DescribeGroups
	v, err := env.describe(ctx, group)
	if err != nil {
		return "", err
	}
	if v.state != "Stable" || v.protocolType != "consumer" || v.protocol != "range" || len(v.members) != 2 {
		return "", fmt.Errorf("DescribeGroups: %v, want Stable consumer/range with 2 members", v)
	}
	for _, m := range v.members {
		if m.memberID == "" || !strings.HasPrefix(m.clientID, group+"-m") {
			return "", fmt.Errorf("DescribeGroups member %+v lacks its member id / client id", m)
		}
	}
	ds, _ := adm.DescribeGroups(ctx, group)
	for _, m := range ds[group].Members {
		meta, ok := m.Join.AsConsumer()
		if !ok || len(meta.Topics) != 1 || meta.Topics[0] != topic {
			return "", fmt.Errorf("DescribeGroups member %s metadata does not decode as a consumer subscription to %s: %+v", m.ClientID, topic, meta)
		}
	}
	notes = append(notes, "DescribeGroups: "+v.String())

	// FetchOffsets
	got, err := env.committed(ctx, group)
	if err != nil {
		return "", err
	}
	for p := int32(0); p < groupPartitions; p++ {
		if got[p] != commits[p] {
			return "", fmt.Errorf("FetchOffsets: partition %d = %d, committed %d (all: %v)", p, got[p], commits[p], got)
		}
	}
	notes = append(notes, fmt.Sprintf("FetchOffsets %v", got))

	// DeleteGroups / DeleteOffsets on a live group are refused
	dr, err := adm.DeleteGroup(ctx, group)
	if err != nil && dr.Err == nil {
		return "", fmt.Errorf("DeleteGroups(live group): %w", err)
	}
	if !errors.Is(dr.Err, kerr.NonEmptyGroup) {
		return "", fmt.Errorf("DeleteGroups(live group) = %v, want NON_EMPTY_GROUP", dr.Err)
	}
	do, err := adm.DeleteOffsets(ctx, group, kadm.TopicsSet{topic: {0: {}}})
	if err != nil {
		return "", fmt.Errorf("OffsetDelete(live group, subscribed topic): %w", err)
	}
	if e, _ := do.Lookup(topic, 0); !errors.Is(e, kerr.GroupSubscribedToTopic) {
		return "", fmt.Errorf("OffsetDelete(live group, subscribed topic) = %v, want GROUP_SUBSCRIBED_TO_TOPIC", e)
	}
	notes = append(notes, "live group: DeleteGroups NON_EMPTY_GROUP, OffsetDelete GROUP_SUBSCRIBED_TO_TOPIC")

	// members leave: Empty, offsets kept
	for i, m := range ms {
		if err := env.stop(ctx, m); err != nil {
			return "", fmt.Errorf("close %s: %w", sts[i].name, err)
		}
	}
	var emptied groupView
	if err := waitFor(ctx, "group Empty after both members left", 20*time.Second, func() (bool, string) {
		v, err := env.describe(ctx, group)
		if err != nil {
			return false, err.Error()
		}
		emptied = v
		return v.state == "Empty" && len(v.members) == 0, v.String()
	}); err != nil {
		return "", err
	}
	// Kafka keeps the group's protocol type when it empties
	if emptied.protocolType != "consumer" {
		bad = append(bad, fmt.Sprintf("DescribeGroups of the emptied group: protocol type %q, want consumer", emptied.protocolType))
	}
	lge, err := adm.ListGroups(ctx, "Empty")
	if err != nil {
		return "", fmt.Errorf("ListGroups(states=Empty): %w", err)
	}
	if e, ok := lge[group]; !ok {
		return "", fmt.Errorf("ListGroups(states=Empty) does not list the emptied group %s", group)
	} else if e.ProtocolType != "consumer" {
		bad = append(bad, fmt.Sprintf("ListGroups(states=Empty): the emptied group has protocol type %q, want consumer", e.ProtocolType))
	}
	if err := env.waitCommitted(ctx, group, commits); err != nil {
		return "", fmt.Errorf("offsets of the Empty group: %w", err)
	}

	// OffsetDelete on the Empty group: partition 0 goes, the rest stay
	do, err = adm.DeleteOffsets(ctx, group, kadm.TopicsSet{topic: {0: {}}})
	if err != nil {
		return "", fmt.Errorf("OffsetDelete(empty group): %w", err)
	}
	if e, ok := do.Lookup(topic, 0); !ok || e != nil {
		return "", fmt.Errorf("OffsetDelete(empty group) partition 0: %v (present %v), want success", e, ok)
	}
	got, err = env.committed(ctx, group)
	if err != nil {
		return "", err
	}
	if _, still := got[0]; still || len(got) != groupPartitions-1 {
		return "", fmt.Errorf("after OffsetDelete of partition 0, FetchOffsets = %v", got)
	}
	notes = append(notes, "Empty group: OffsetDelete p0 ok, others kept")

	// DeleteGroups
	dr, err = adm.DeleteGroup(ctx, group)
	if err != nil || dr.Err != nil {
		return "", fmt.Errorf("DeleteGroups(empty group): %v %v %s", err, dr.Err, dr.ErrMessage)
	}
	lg, err = adm.ListGroups(ctx)
	if err != nil {
		return "", fmt.Errorf("ListGroups: %w", err)
	}
	if _, ok := lg[group]; ok {
		return "", fmt.Errorf("ListGroups still lists %s after DeleteGroups", group)
	}
	got, err = env.committed(ctx, group)
	if err != nil {
		return "", err
	}
	if len(got) != 0 {
		return "", fmt.Errorf("FetchOffsets after DeleteGroups = %v, want none", got)
	}
	dd, err := adm.DescribeGroups(ctx, group)
	if err != nil {
		return "", fmt.Errorf("DescribeGroups(deleted group): %w", err)
	}
	d := dd[group]
	if d.State != "Dead" || len(d.Members) != 0 {
		return "", fmt.Errorf("DescribeGroups(deleted group): state %q members %d err %v, want Dead", d.State, len(d.Members), d.Err)
	}
	if d.Err != nil && !errors.Is(d.Err, kerr.GroupIDNotFound) {
		return "", fmt.Errorf("DescribeGroups(deleted group): error %v, want none or GROUP_ID_NOT_FOUND", d.Err)
	}
	dr, _ = adm.DeleteGroup(ctx, group)
	if !errors.Is(dr.Err, kerr.GroupIDNotFound) {
		return "", fmt.Errorf("DeleteGroups(already deleted group) = %v, want GROUP_ID_NOT_FOUND", dr.Err)
	}
	notes = append(notes, fmt.Sprintf("DeleteGroups ok; then not listed, no offsets, described Dead (err %v), deleting again GROUP_ID_NOT_FOUND", d.Err))
	if len(bad) > 0 {
		return "", fmt.Errorf("%s (the rest passed: %s)", strings.Join(bad, "; "), strings.Join(notes, "; "))
	}
	return strings.Join(notes, "; "), nil
}
