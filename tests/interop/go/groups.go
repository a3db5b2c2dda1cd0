package main

// Consumer-group scenarios shared by the Go clients (franz-go, sarama,
// kafka-go). Each client implements groupClient.start, which runs one group
// member that reports what it sees into a memberState: its assignment as the
// client's own rebalance callbacks (or logs) tell it, the generation, and
// every record delivered. The scenarios drive members through joins, leaves,
// commits and restarts and check both the clients' view and the broker's view
// (DescribeGroups / OffsetFetch through franz-go's kadm, used as a neutral
// observer; topic setup and producing also go through franz-go).
//
// Every wait polls an observable condition against a generous deadline.

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

const groupPartitions = 6

var groupScenarioNames = []string{"group-split", "group-leave", "group-resume", "group-two-groups", "group-static", "group-cooperative"}

// memberSpec is how a member joins.
type memberSpec struct {
	group       string
	topic       string
	clientID    string // unique per member (DescribeGroups matches members by it)
	instanceID  string // static membership (group.instance.id) when set
	cooperative bool   // cooperative-sticky instead of the eager range assignor
	// commitOwn: the member commits what it consumed itself, the usual
	// application pattern: a synchronous commit of the revoked partitions in
	// the client's revoke callback (kafka-go, which has none: a synchronous
	// commit after each record).
	commitOwn bool
	session   time.Duration
	heartbeat time.Duration
	rebalance time.Duration
}

// groupMember is a running member.
type groupMember interface {
	// commit commits, within the member's current generation, the next
	// offset to read for each given partition (which the member owns).
	commit(ctx context.Context, offsets map[int32]int64) error
	// close shuts the client down the way an application does: a dynamic
	// member leaves the group; a static member just stops (as in a restart).
	close(ctx context.Context) error
}

type groupClient struct {
	name string
	// start starts a member; it reports into st until closed.
	start func(ctx context.Context, spec memberSpec, st *memberState) (groupMember, error)
	// staticNA / cooperativeNA: why the client cannot do it at all ("" = it can).
	staticNA      string
	cooperativeNA string
}

// ---------------------------------------------------------------------------------------------
// What a member saw.

type memberState struct {
	name string // = client id

	mu         sync.Mutex
	assigned   map[int32]bool
	gen        int32
	memberID   string
	changes    int // rebalance callbacks / new generations the client reported
	revoked    map[int32]int
	events     []string
	deliveries map[int32]map[int64]int
	values     map[int32]map[int64]string
	errs       []string
}

func newMemberState(name string) *memberState {
	return &memberState{
		name:       name,
		assigned:   map[int32]bool{},
		gen:        -1,
		revoked:    map[int32]int{},
		deliveries: map[int32]map[int64]int{},
		values:     map[int32]map[int64]string{},
	}
}

func (s *memberState) event(format string, args ...any) {
	if len(s.events) < 200 {
		s.events = append(s.events, fmt.Sprintf(time.Now().Format("15:04:05.000 ")+format, args...))
	}
	if cfg.debug {
		logf("[member %s] "+format, append([]any{s.name}, args...)...)
	}
}

// note logs an event (locking).
func (s *memberState) note(format string, args ...any) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.event(format, args...)
}

// assign adds partitions to the assignment (incremental clients, and eager
// clients after their revoke-all).
func (s *memberState) assign(parts []int32, gen int32, memberID string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, p := range parts {
		s.assigned[p] = true
	}
	s.noteGen(gen, memberID)
	s.changes++
	s.event("assigned %v (gen %d) -> now %v", sorted32(parts), gen, s.sortedAssigned())
}

// assignAll replaces the assignment (clients that only report full assignments).
func (s *memberState) assignAll(parts []int32, gen int32, memberID string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	old := s.sortedAssigned()
	now := map[int32]bool{}
	for _, p := range parts {
		now[p] = true
	}
	for _, p := range old {
		if !now[p] {
			s.revoked[p]++
		}
	}
	s.assigned = now
	s.noteGen(gen, memberID)
	s.changes++
	s.event("assignment %v (gen %d), was %v", sorted32(parts), gen, old)
}

func (s *memberState) revoke(parts []int32, why string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, p := range parts {
		if s.assigned[p] {
			s.revoked[p]++
		}
		delete(s.assigned, p)
	}
	s.changes++
	s.event("%s %v -> now %v", why, sorted32(parts), s.sortedAssigned())
}

func (s *memberState) setGen(gen int32, memberID string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.noteGen(gen, memberID)
}

func (s *memberState) noteGen(gen int32, memberID string) {
	if gen >= 0 && gen != s.gen {
		s.event("generation %d -> %d", s.gen, gen)
		s.gen = gen
	}
	if memberID != "" {
		s.memberID = memberID
	}
}

func (s *memberState) record(p int32, off int64, value string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	d := s.deliveries[p]
	if d == nil {
		d = map[int64]int{}
		s.deliveries[p] = d
		s.values[p] = map[int64]string{}
	}
	d[off]++
	s.values[p][off] = value
}

func (s *memberState) errorf(format string, args ...any) {
	s.mu.Lock()
	defer s.mu.Unlock()
	msg := fmt.Sprintf(format, args...)
	if len(s.errs) < 50 {
		s.errs = append(s.errs, msg)
	}
	s.event("error: %s", msg)
}

func (s *memberState) sortedAssigned() []int32 {
	out := make([]int32, 0, len(s.assigned))
	for p := range s.assigned {
		out = append(out, p)
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}

type memberSnap struct {
	name     string
	assigned []int32
	gen      int32
	memberID string
	changes  int
	revoked  map[int32]int
}

func (s *memberState) snap() memberSnap {
	s.mu.Lock()
	defer s.mu.Unlock()
	rv := map[int32]int{}
	for p, n := range s.revoked {
		rv[p] = n
	}
	return memberSnap{s.name, s.sortedAssigned(), s.gen, s.memberID, s.changes, rv}
}

// delivered: how many times offset off of partition p was delivered.
func (s *memberState) delivered(p int32, off int64) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.deliveries[p][off]
}

// offsetsOf returns the sorted distinct offsets delivered from p.
func (s *memberState) offsetsOf(p int32) []int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []int64
	for o := range s.deliveries[p] {
		out = append(out, o)
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}

// history is the member's event log for failure details.
func (s *memberState) history(n int) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	ev := s.events
	if len(ev) > n {
		ev = ev[len(ev)-n:]
	}
	e := ""
	if len(s.errs) > 0 {
		e = fmt.Sprintf(" errors: %v", lastN(s.errs, 3))
	}
	return fmt.Sprintf("%s[%s]%s", s.name, strings.Join(ev, "; "), e)
}

func sorted32(in []int32) []int32 {
	out := append([]int32(nil), in...)
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}

func equal32(a, b []int32) bool {
	a, b = sorted32(a), sorted32(b)
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// ---------------------------------------------------------------------------------------------
// The scenario environment: topic, producer, observer.

type groupEnv struct {
	topic string
	cl    *kgo.Client
	adm   *kadm.Client

	mu       sync.Mutex
	produced map[int32]map[int64]string
	ends     map[int32]int64

	members []groupMember
}

func newGroupEnv(ctx context.Context, topic string) (*groupEnv, error) {
	if _, err := franzCreate(ctx, topic, groupPartitions, nil); err != nil {
		return nil, fmt.Errorf("create topic %s (%d partitions): %w", topic, groupPartitions, err)
	}
	cl, err := franzNewClient(kgo.DefaultProduceTopic(topic), kgo.RecordPartitioner(kgo.ManualPartitioner()),
		kgo.ClientID("kelp-interop-group-observer"))
	if err != nil {
		return nil, err
	}
	return &groupEnv{topic: topic, cl: cl, adm: kadm.NewClient(cl), produced: map[int32]map[int64]string{}, ends: map[int32]int64{}}, nil
}

// closeAll closes every member still running and the observer client.
func (e *groupEnv) closeAll() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	for _, m := range e.members {
		if m == nil {
			continue
		}
		wg.Add(1)
		go func(m groupMember) { defer wg.Done(); m.close(ctx) }(m)
	}
	wg.Wait()
	e.cl.Close()
}

// start starts a member and remembers it for closeAll.
func (e *groupEnv) start(ctx context.Context, gc groupClient, spec memberSpec) (groupMember, *memberState, error) {
	if spec.topic == "" {
		spec.topic = e.topic
	}
	if spec.session == 0 {
		spec.session = 10 * time.Second
	}
	if spec.heartbeat == 0 {
		spec.heartbeat = 500 * time.Millisecond
	}
	if spec.rebalance == 0 {
		spec.rebalance = 30 * time.Second
	}
	st := newMemberState(spec.clientID)
	m, err := gc.start(ctx, spec, st)
	if err != nil {
		return nil, st, fmt.Errorf("start member %s of group %s: %w", spec.clientID, spec.group, err)
	}
	e.members = append(e.members, m)
	return m, st, nil
}

// stop closes one member (and forgets it for closeAll).
func (e *groupEnv) stop(ctx context.Context, m groupMember) error {
	for i, x := range e.members {
		if x == m {
			e.members[i] = nil
		}
	}
	return m.close(ctx)
}

// produce appends n records to every partition; it returns the offsets per partition.
func (e *groupEnv) produce(ctx context.Context, n int, tag string) (map[int32][]int64, error) {
	var rs []*kgo.Record
	for p := int32(0); p < groupPartitions; p++ {
		for i := 0; i < n; i++ {
			rs = append(rs, &kgo.Record{Partition: p, Key: []byte(fmt.Sprintf("k%d", i)), Value: []byte(fmt.Sprintf("%s-p%d-%d", tag, p, i))})
		}
	}
	res := e.cl.ProduceSync(ctx, rs...)
	if err := res.FirstErr(); err != nil {
		return nil, fmt.Errorf("produce %s: %w", tag, err)
	}
	out := map[int32][]int64{}
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, r := range res {
		p, o := r.Record.Partition, r.Record.Offset
		out[p] = append(out[p], o)
		if e.produced[p] == nil {
			e.produced[p] = map[int64]string{}
		}
		e.produced[p][o] = string(r.Record.Value)
		if o+1 > e.ends[p] {
			e.ends[p] = o + 1
		}
	}
	for p := range out {
		sort.Slice(out[p], func(i, j int) bool { return out[p][i] < out[p][j] })
	}
	return out, nil
}

func (e *groupEnv) end(p int32) int64 {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.ends[p]
}

func (e *groupEnv) value(p int32, off int64) (string, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	v, ok := e.produced[p][off]
	return v, ok
}

type viewMember struct {
	memberID, clientID, instanceID string
	parts                          []int32
}

type groupView struct {
	state, protocolType, protocol string
	members                       []viewMember
}

func (v groupView) String() string {
	var ms []string
	for _, m := range v.members {
		inst := ""
		if m.instanceID != "" {
			inst = " instance " + m.instanceID
		}
		ms = append(ms, fmt.Sprintf("%s%s owns %v", m.clientID, inst, m.parts))
	}
	return fmt.Sprintf("state %s protocol %s/%s members [%s]", v.state, v.protocolType, v.protocol, strings.Join(ms, "; "))
}

func (v groupView) byClient(id string) (viewMember, int) {
	n := 0
	var out viewMember
	for _, m := range v.members {
		if m.clientID == id {
			n++
			out = m
		}
	}
	return out, n
}

// describe asks the broker (DescribeGroups) about a group.
func (e *groupEnv) describe(ctx context.Context, group string) (groupView, error) {
	ds, err := e.adm.DescribeGroups(ctx, group)
	if err != nil {
		return groupView{}, fmt.Errorf("DescribeGroups(%s): %w", group, err)
	}
	d, ok := ds[group]
	if !ok {
		return groupView{}, fmt.Errorf("DescribeGroups(%s): group missing from response", group)
	}
	if d.Err != nil {
		return groupView{state: d.State}, fmt.Errorf("DescribeGroups(%s): %w %s", group, d.Err, d.ErrMessage)
	}
	v := groupView{state: d.State, protocolType: d.ProtocolType, protocol: d.Protocol}
	for _, m := range d.Members {
		vm := viewMember{memberID: m.MemberID, clientID: m.ClientID}
		if m.InstanceID != nil {
			vm.instanceID = *m.InstanceID
		}
		if c, ok := m.Assigned.AsConsumer(); ok {
			for _, t := range c.Topics {
				if t.Topic == e.topic {
					vm.parts = append(vm.parts, t.Partitions...)
				}
			}
		}
		vm.parts = sorted32(vm.parts)
		v.members = append(v.members, vm)
	}
	return v, nil
}

// committed asks the broker (OffsetFetch) for the group's committed offsets on the topic.
func (e *groupEnv) committed(ctx context.Context, group string) (map[int32]int64, error) {
	os, err := e.adm.FetchOffsets(ctx, group)
	if err != nil {
		return nil, fmt.Errorf("OffsetFetch(%s): %w", group, err)
	}
	out := map[int32]int64{}
	for p, o := range os[e.topic] {
		if o.Err != nil {
			return nil, fmt.Errorf("OffsetFetch(%s) partition %d: %w", group, p, o.Err)
		}
		if o.At >= 0 {
			out[p] = o.At
		}
	}
	return out, nil
}

// waitFor polls cond until it holds or limit passes; the error quotes cond's last status.
func waitFor(ctx context.Context, what string, limit time.Duration, cond func() (bool, string)) error {
	deadline := time.Now().Add(limit)
	for {
		ok, status := cond()
		if ok {
			return nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("%s: not reached within %s: %s", what, limit, status)
		}
		select {
		case <-ctx.Done():
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// stableCheck: the members' own views form an exact, balanced split of the
// topic's partitions, all in one generation, and the broker agrees
// (DescribeGroups: Stable, exactly these members, same assignments).
func (e *groupEnv) stableCheck(ctx context.Context, group string, sts []*memberState) (bool, string, groupView) {
	snaps := make([]memberSnap, len(sts))
	owner := map[int32]string{}
	var problems []string
	gen := int32(-1)
	for i, st := range sts {
		snaps[i] = st.snap()
		s := snaps[i]
		for _, p := range s.assigned {
			if o, dup := owner[p]; dup {
				problems = append(problems, fmt.Sprintf("partition %d owned by both %s and %s", p, o, s.name))
			}
			owner[p] = s.name
		}
		if s.gen >= 0 {
			if gen >= 0 && s.gen != gen {
				problems = append(problems, fmt.Sprintf("generations differ (%d vs %d)", gen, s.gen))
			}
			gen = s.gen
		}
	}
	for p := int32(0); p < groupPartitions; p++ {
		if _, ok := owner[p]; !ok {
			problems = append(problems, fmt.Sprintf("partition %d owned by no member", p))
		}
	}
	lo, hi := groupPartitions/len(sts), (groupPartitions+len(sts)-1)/len(sts)
	for _, s := range snaps {
		if len(s.assigned) < lo || len(s.assigned) > hi {
			problems = append(problems, fmt.Sprintf("%s owns %d partitions, want %d..%d", s.name, len(s.assigned), lo, hi))
		}
	}
	var views []string
	for _, s := range snaps {
		views = append(views, fmt.Sprintf("%s=%v(gen %d)", s.name, s.assigned, s.gen))
	}
	status := "clients see " + strings.Join(views, " ")
	v, err := e.describe(ctx, group)
	if err != nil {
		problems = append(problems, err.Error())
	} else {
		status += "; broker: " + v.String()
		if v.state != "Stable" {
			problems = append(problems, "broker state "+v.state)
		}
		if len(v.members) != len(sts) {
			problems = append(problems, fmt.Sprintf("broker lists %d members, want %d", len(v.members), len(sts)))
		}
		for _, s := range snaps {
			vm, n := v.byClient(s.name)
			if n != 1 {
				problems = append(problems, fmt.Sprintf("broker lists %d members with client id %s", n, s.name))
			} else if !equal32(vm.parts, s.assigned) {
				problems = append(problems, fmt.Sprintf("broker says %s owns %v, client says %v", s.name, vm.parts, s.assigned))
			}
		}
	}
	if len(problems) > 0 {
		return false, status + "; problems: " + strings.Join(lastN(problems, 4), ", "), v
	}
	return true, status, v
}

func (e *groupEnv) waitStable(ctx context.Context, group string, sts []*memberState, limit time.Duration) (groupView, error) {
	var view groupView
	err := waitFor(ctx, fmt.Sprintf("group %s stable with %d members", group, len(sts)), limit, func() (bool, string) {
		ok, status, v := e.stableCheck(ctx, group, sts)
		view = v
		return ok, status
	})
	if err != nil {
		return view, fmt.Errorf("%w; history: %s", err, histories(sts))
	}
	return view, nil
}

func histories(sts []*memberState) string {
	var hs []string
	for _, s := range sts {
		hs = append(hs, s.history(8))
	}
	return strings.Join(hs, " | ")
}

// waitConsumed waits until every offset of want was delivered to at least one of sts.
func (e *groupEnv) waitConsumed(ctx context.Context, what string, sts []*memberState, want map[int32][]int64, limit time.Duration) error {
	err := waitFor(ctx, what, limit, func() (bool, string) {
		var missing []string
		total := 0
		for p := int32(0); p < groupPartitions; p++ {
			for _, o := range want[p] {
				total++
				n := 0
				for _, s := range sts {
					n += s.delivered(p, o)
				}
				if n == 0 {
					missing = append(missing, fmt.Sprintf("p%d@%d", p, o))
				}
			}
		}
		if len(missing) == 0 {
			return true, ""
		}
		head := missing
		if len(head) > 8 {
			head = head[:8]
		}
		return false, fmt.Sprintf("%d of %d records not delivered yet, e.g. %v", len(missing), total, head)
	})
	if err != nil {
		return fmt.Errorf("%w; history: %s", err, histories(sts))
	}
	return nil
}

// checkOnce: every offset of want was delivered exactly once in total over
// sts, with the value produced there; with owners set, to the member that
// owns the partition.
func (e *groupEnv) checkOnce(sts []*memberState, want map[int32][]int64, owners bool) error {
	for p := int32(0); p < groupPartitions; p++ {
		for _, o := range want[p] {
			var got []string
			for _, s := range sts {
				n := s.delivered(p, o)
				for i := 0; i < n; i++ {
					got = append(got, s.name)
				}
				if n > 0 {
					s.mu.Lock()
					v := s.values[p][o]
					own := s.assigned[p]
					s.mu.Unlock()
					if w, ok := e.value(p, o); ok && v != w {
						return fmt.Errorf("partition %d offset %d: %s got value %q, produced %q", p, o, s.name, v, w)
					}
					if owners && !own {
						return fmt.Errorf("partition %d offset %d delivered to %s, which does not own partition %d", p, o, s.name, p)
					}
				}
			}
			if len(got) != 1 {
				return fmt.Errorf("partition %d offset %d delivered %d times (to %v), want exactly once", p, o, len(got), got)
			}
		}
	}
	return nil
}

// positionsOf: for each given partition with deliveries, one past the highest offset delivered.
func (s *memberState) positionsOf(parts []int32) map[int32]int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[int32]int64{}
	for _, p := range parts {
		for o := range s.deliveries[p] {
			if o+1 > out[p] {
				out[p] = o + 1
			}
		}
	}
	return out
}

// positions: for each partition the member owns, one past the highest offset delivered.
func positions(st *memberState) map[int32]int64 {
	st.mu.Lock()
	defer st.mu.Unlock()
	out := map[int32]int64{}
	for p := range st.assigned {
		next := int64(0)
		for o := range st.deliveries[p] {
			if o+1 > next {
				next = o + 1
			}
		}
		out[p] = next
	}
	return out
}

// waitCommitted polls OffsetFetch until the group's commits equal want.
func (e *groupEnv) waitCommitted(ctx context.Context, group string, want map[int32]int64) error {
	return waitFor(ctx, fmt.Sprintf("OffsetFetch(%s) to show the commits", group), 15*time.Second, func() (bool, string) {
		got, err := e.committed(ctx, group)
		if err != nil {
			return false, err.Error()
		}
		for p, w := range want {
			if got[p] != w {
				return false, fmt.Sprintf("committed %v, want %v", got, want)
			}
		}
		return true, ""
	})
}

func flatten(m map[int32][]int64) int {
	n := 0
	for _, v := range m {
		n += len(v)
	}
	return n
}

func rangeOffsets(from, to int64) []int64 {
	var out []int64
	for o := from; o < to; o++ {
		out = append(out, o)
	}
	return out
}

func assignmentsString(sts []*memberState) string {
	var parts []string
	for _, s := range sts {
		sn := s.snap()
		parts = append(parts, fmt.Sprintf("%v", sn.assigned))
	}
	return strings.Join(parts, " ")
}

// ---------------------------------------------------------------------------------------------
// Scenarios.

func runGroupScenarios(gc groupClient, short string, sel func(string) bool) {
	base := cfg.prefix + "go-" + short + "-"
	run := func(name string, fn func(ctx context.Context, env *groupEnv, group string) (string, error)) {
		if !sel(name) {
			return
		}
		runScenario(gc.name, name, 150*time.Second, func(ctx context.Context) (string, error) {
			topic := base + name
			env, err := newGroupEnv(ctx, topic)
			if err != nil {
				return "", err
			}
			defer env.closeAll()
			return fn(ctx, env, topic+"-g")
		})
	}
	run("group-split", func(ctx context.Context, env *groupEnv, group string) (string, error) {
		return groupSplit(ctx, gc, env, group)
	})
	run("group-leave", func(ctx context.Context, env *groupEnv, group string) (string, error) {
		return groupLeave(ctx, gc, env, group)
	})
	run("group-resume", func(ctx context.Context, env *groupEnv, group string) (string, error) {
		return groupResume(ctx, gc, env, group)
	})
	run("group-two-groups", func(ctx context.Context, env *groupEnv, group string) (string, error) {
		return groupTwoGroups(ctx, gc, env, group)
	})
	if sel("group-static") {
		if gc.staticNA != "" {
			result(gc.name, "group-static", "n/a", gc.staticNA)
		} else {
			run("group-static", func(ctx context.Context, env *groupEnv, group string) (string, error) {
				return groupStatic(ctx, gc, env, group)
			})
		}
	}
	if sel("group-cooperative") {
		if gc.cooperativeNA != "" {
			result(gc.name, "group-cooperative", "n/a", gc.cooperativeNA)
		} else {
			run("group-cooperative", func(ctx context.Context, env *groupEnv, group string) (string, error) {
				return groupCooperative(ctx, gc, env, group)
			})
		}
	}
}

func startMembers(ctx context.Context, gc groupClient, env *groupEnv, base memberSpec, names ...string) ([]groupMember, []*memberState, error) {
	var ms []groupMember
	var sts []*memberState
	for _, n := range names {
		spec := base
		spec.clientID = n
		m, st, err := env.start(ctx, gc, spec)
		if err != nil {
			return ms, sts, err
		}
		ms = append(ms, m)
		sts = append(sts, st)
	}
	return ms, sts, nil
}

// commitPositions has every member commit, in its generation, the next offset
// after what it consumed on each partition it owns; it returns all commits.
func commitPositions(ctx context.Context, ms []groupMember, sts []*memberState) (map[int32]int64, error) {
	all := map[int32]int64{}
	for i, m := range ms {
		pos := positions(sts[i])
		if err := m.commit(ctx, pos); err != nil {
			return nil, fmt.Errorf("%s: OffsetCommit %v: %w; history: %s", sts[i].name, pos, err, sts[i].history(6))
		}
		for p, o := range pos {
			all[p] = o
		}
	}
	return all, nil
}

// group-split: 3 members split 6 partitions; every partition has exactly one
// owner (clients and broker agree), and records produced afterwards go once
// to the owner of their partition.
func groupSplit(ctx context.Context, gc groupClient, env *groupEnv, group string) (string, error) {
	if _, err := env.produce(ctx, 10, "before"); err != nil {
		return "", err
	}
	_, sts, err := startMembers(ctx, gc, env, memberSpec{group: group}, group+"-m0", group+"-m1", group+"-m2")
	if err != nil {
		return "", err
	}
	view, err := env.waitStable(ctx, group, sts, 60*time.Second)
	if err != nil {
		return "", err
	}
	markers, err := env.produce(ctx, 5, "after-stable")
	if err != nil {
		return "", err
	}
	if err := env.waitConsumed(ctx, "records produced after the group was stable", sts, markers, 30*time.Second); err != nil {
		return "", err
	}
	if err := env.checkOnce(sts, markers, true); err != nil {
		return "", fmt.Errorf("%w; assignments %s", err, assignmentsString(sts))
	}
	if ok, status, _ := env.stableCheck(ctx, group, sts); !ok {
		return "", fmt.Errorf("group no longer stable after consuming: %s; history: %s", status, histories(sts))
	}
	return fmt.Sprintf("3 members own %s (protocol %s); %d records produced afterwards each consumed once by its partition's owner",
		assignmentsString(sts), view.protocol, flatten(markers)), nil
}

// group-leave: one of 3 members leaves cleanly; the other two take all 6
// partitions well before the session timeout (so it was the LeaveGroup, not an
// expiry) and consume everything exactly once. Members commit what they
// consumed the usual way: synchronously when partitions are revoked (the
// leaver on its way out, the others when the rebalance starts), so every
// partition resumes exactly where its previous owner stopped.
func groupLeave(ctx context.Context, gc groupClient, env *groupEnv, group string) (string, error) {
	const session = 30 * time.Second
	ms, sts, err := startMembers(ctx, gc, env, memberSpec{group: group, session: session, commitOwn: true}, group+"-m0", group+"-m1", group+"-m2")
	if err != nil {
		return "", err
	}
	if _, err := env.waitStable(ctx, group, sts, 60*time.Second); err != nil {
		return "", err
	}
	// produced once the group is stable, so startup rebalances cannot re-deliver it
	batchA, err := env.produce(ctx, 20, "a")
	if err != nil {
		return "", err
	}
	if err := env.waitConsumed(ctx, "first batch", sts, batchA, 30*time.Second); err != nil {
		return "", err
	}
	leaver := sts[1].snap()
	before, _ := env.describe(ctx, group)
	t0 := time.Now()
	if err := env.stop(ctx, ms[1]); err != nil {
		return "", fmt.Errorf("close (leave) %s: %w", leaver.name, err)
	}
	rest := []*memberState{sts[0], sts[2]}
	view, err := env.waitStable(ctx, group, rest, session-8*time.Second)
	if err != nil {
		return "", fmt.Errorf("after %s left (it owned %v): %w", leaver.name, leaver.assigned, err)
	}
	took := time.Since(t0).Round(time.Millisecond)
	if old, n := before.byClient(leaver.name); n == 1 {
		for _, m := range view.members {
			if m.memberID == old.memberID {
				return "", fmt.Errorf("DescribeGroups still lists the member id %s of %s after it left", old.memberID, leaver.name)
			}
		}
	}
	batchB, err := env.produce(ctx, 20, "b")
	if err != nil {
		return "", err
	}
	all := map[int32][]int64{}
	for p := int32(0); p < groupPartitions; p++ {
		all[p] = append(append([]int64{}, batchA[p]...), batchB[p]...)
	}
	if err := env.waitConsumed(ctx, "second batch", rest, batchB, 30*time.Second); err != nil {
		return "", err
	}
	if err := env.checkOnce(sts, all, false); err != nil {
		return "", fmt.Errorf("%w (each member commits on revoke); history: %s", err, histories(sts))
	}
	if err := env.checkOnce(rest, batchB, true); err != nil {
		return "", err
	}
	restOwn := assignmentsString(rest)
	// The rest leave too (committing on the way out): the group ends Empty
	// with every record committed.
	for _, i := range []int{0, 2} {
		if err := env.stop(ctx, ms[i]); err != nil {
			return "", fmt.Errorf("close (leave) %s: %w", sts[i].name, err)
		}
	}
	if err := waitFor(ctx, "group Empty after every member left", 20*time.Second, func() (bool, string) {
		v, err := env.describe(ctx, group)
		if err != nil {
			return false, err.Error()
		}
		return v.state == "Empty" && len(v.members) == 0, v.String()
	}); err != nil {
		return "", err
	}
	ends := map[int32]int64{}
	for p := int32(0); p < groupPartitions; p++ {
		ends[p] = env.end(p)
	}
	if err := env.waitCommitted(ctx, group, ends); err != nil {
		return "", fmt.Errorf("%w; history: %s", err, histories(sts))
	}
	return fmt.Sprintf("%s left owning %v; %.1fs later (session timeout %s) the other two own %s; %d records consumed exactly once across the leave (commits on revoke), all committed once the group was Empty",
		leaver.name, leaver.assigned, took.Seconds(), session, restOwn, flatten(all)), nil
}

// resumeAt is the part of each partition group-resume commits.
func resumeAt(p int32) int64 { return 7 + 4*int64(p) }

// group-resume: two members consume everything, commit a different part of
// each partition, and leave; a new member resumes exactly at the commits.
func groupResume(ctx context.Context, gc groupClient, env *groupEnv, group string) (string, error) {
	const n = 40
	batch, err := env.produce(ctx, n, "r")
	if err != nil {
		return "", err
	}
	ms, sts, err := startMembers(ctx, gc, env, memberSpec{group: group}, group+"-m0", group+"-m1")
	if err != nil {
		return "", err
	}
	if _, err := env.waitStable(ctx, group, sts, 60*time.Second); err != nil {
		return "", err
	}
	if err := env.waitConsumed(ctx, "all records", sts, batch, 30*time.Second); err != nil {
		return "", err
	}
	want := map[int32]int64{}
	for i, m := range ms {
		part := map[int32]int64{}
		for _, p := range sts[i].snap().assigned {
			part[p] = resumeAt(p)
			want[p] = resumeAt(p)
		}
		if err := m.commit(ctx, part); err != nil {
			return "", fmt.Errorf("%s: OffsetCommit %v: %w", sts[i].name, part, err)
		}
	}
	if err := env.waitCommitted(ctx, group, want); err != nil {
		return "", err
	}
	for i, m := range ms {
		if err := env.stop(ctx, m); err != nil {
			return "", fmt.Errorf("close %s: %w", sts[i].name, err)
		}
	}
	if err := waitFor(ctx, "group Empty after both members left", 20*time.Second, func() (bool, string) {
		v, err := env.describe(ctx, group)
		if err != nil {
			return false, err.Error()
		}
		return v.state == "Empty" && len(v.members) == 0, v.String()
	}); err != nil {
		return "", err
	}
	if err := env.waitCommitted(ctx, group, want); err != nil {
		return "", fmt.Errorf("commits after the group emptied: %w", err)
	}
	_, rsts, err := startMembers(ctx, gc, env, memberSpec{group: group}, group+"-resumer")
	if err != nil {
		return "", err
	}
	if _, err := env.waitStable(ctx, group, rsts, 60*time.Second); err != nil {
		return "", err
	}
	rest := map[int32][]int64{}
	for p := int32(0); p < groupPartitions; p++ {
		rest[p] = rangeOffsets(resumeAt(p), n)
	}
	if err := env.waitConsumed(ctx, "the uncommitted rest", rsts, rest, 30*time.Second); err != nil {
		return "", err
	}
	for p := int32(0); p < groupPartitions; p++ {
		got := rsts[0].offsetsOf(p)
		if len(got) == 0 || got[0] != resumeAt(p) {
			return "", fmt.Errorf("partition %d: resumed member read offsets %v, want to start at the commit %d (re-read or gap)", p, got, resumeAt(p))
		}
	}
	if err := env.checkOnce(rsts, rest, true); err != nil {
		return "", err
	}
	return fmt.Sprintf("committed %v after consuming %d per partition; after both left, a new member read exactly offsets commit..%d of every partition, once each", want, n, n-1), nil
}

// group-two-groups: groups A (2 members) and B (1 member) on one topic each
// consume everything and commit independently.
func groupTwoGroups(ctx context.Context, gc groupClient, env *groupEnv, group string) (string, error) {
	const n1, n2 = 30, 10
	const bAt = 12
	ga, gb := group+"-a", group+"-b"
	batch1, err := env.produce(ctx, n1, "one")
	if err != nil {
		return "", err
	}
	ams, asts, err := startMembers(ctx, gc, env, memberSpec{group: ga}, ga+"-m0", ga+"-m1")
	if err != nil {
		return "", err
	}
	bms, bsts, err := startMembers(ctx, gc, env, memberSpec{group: gb}, gb+"-m0")
	if err != nil {
		return "", err
	}
	if _, err := env.waitStable(ctx, ga, asts, 60*time.Second); err != nil {
		return "", err
	}
	if _, err := env.waitStable(ctx, gb, bsts, 60*time.Second); err != nil {
		return "", err
	}
	if err := env.waitConsumed(ctx, "group A reads everything", asts, batch1, 30*time.Second); err != nil {
		return "", err
	}
	if err := env.waitConsumed(ctx, "group B reads everything", bsts, batch1, 30*time.Second); err != nil {
		return "", err
	}
	acommit, err := commitPositions(ctx, ams, asts)
	if err != nil {
		return "", err
	}
	bwant := map[int32]int64{}
	for p := int32(0); p < groupPartitions; p++ {
		bwant[p] = bAt
	}
	if err := bms[0].commit(ctx, bwant); err != nil {
		return "", fmt.Errorf("group B OffsetCommit: %w", err)
	}
	if err := env.waitCommitted(ctx, ga, acommit); err != nil {
		return "", err
	}
	if err := env.waitCommitted(ctx, gb, bwant); err != nil {
		return "", err
	}
	batch2, err := env.produce(ctx, n2, "two")
	if err != nil {
		return "", err
	}
	if err := env.waitConsumed(ctx, "group A reads the second batch", asts, batch2, 30*time.Second); err != nil {
		return "", err
	}
	if err := env.waitConsumed(ctx, "group B reads the second batch", bsts, batch2, 30*time.Second); err != nil {
		return "", err
	}
	if err := env.checkOnce(asts, batch2, true); err != nil {
		return "", fmt.Errorf("group A: %w", err)
	}
	if err := env.checkOnce(bsts, batch2, true); err != nil {
		return "", fmt.Errorf("group B: %w", err)
	}
	acommit2, err := commitPositions(ctx, ams, asts)
	if err != nil {
		return "", err
	}
	aOwn := assignmentsString(asts)
	if err := env.waitCommitted(ctx, ga, acommit2); err != nil {
		return "", err
	}
	if err := env.waitCommitted(ctx, gb, bwant); err != nil {
		return "", fmt.Errorf("group B's commits after group A committed again: %w", err)
	}
	for _, m := range append(ams, bms...) {
		if err := env.stop(ctx, m); err != nil {
			return "", fmt.Errorf("close: %w", err)
		}
	}
	// B resumes at its own commits, untouched by A's.
	_, rsts, err := startMembers(ctx, gc, env, memberSpec{group: gb}, gb+"-resumer")
	if err != nil {
		return "", err
	}
	if _, err := env.waitStable(ctx, gb, rsts, 60*time.Second); err != nil {
		return "", err
	}
	rest := map[int32][]int64{}
	for p := int32(0); p < groupPartitions; p++ {
		rest[p] = rangeOffsets(bAt, n1+n2)
	}
	if err := env.waitConsumed(ctx, "group B resumes", rsts, rest, 30*time.Second); err != nil {
		return "", err
	}
	for p := int32(0); p < groupPartitions; p++ {
		if got := rsts[0].offsetsOf(p); got[0] != bAt {
			return "", fmt.Errorf("group B partition %d resumed at %d, its commit is %d (group A committed %d)", p, got[0], bAt, acommit2[p])
		}
	}
	if err := env.checkOnce(rsts, rest, true); err != nil {
		return "", fmt.Errorf("group B resumed: %w", err)
	}
	return fmt.Sprintf("A (2 members %s) and B (1 member) each read all %d records; A committed %v, B %d everywhere, neither moved the other; B resumed at %d",
		aOwn, (n1+n2)*groupPartitions, acommit2, bAt, bAt), nil
}

// group-static: 3 static members; each in turn restarts (closes without
// leaving, then a new client with the same group.instance.id joins) well
// within the session timeout. Every restart gets its old partitions back in
// the same generation, and the members not restarting see no rebalance.
// Restarting all three covers the group leader, whichever it is.
func groupStatic(ctx context.Context, gc groupClient, env *groupEnv, group string) (string, error) {
	const session = 30 * time.Second
	const heartbeat = 500 * time.Millisecond
	if _, err := env.produce(ctx, 5, "s"); err != nil {
		return "", err
	}
	spec := memberSpec{group: group, session: session, heartbeat: heartbeat}
	specs := make([]memberSpec, 3)
	ms := make([]groupMember, 3)
	sts := make([]*memberState, 3)
	for i := range specs {
		specs[i] = spec
		specs[i].clientID = fmt.Sprintf("%s-m%d", group, i)
		specs[i].instanceID = fmt.Sprintf("%s-instance-%d", group, i)
		m, st, err := env.start(ctx, gc, specs[i])
		if err != nil {
			return "", err
		}
		ms[i], sts[i] = m, st
	}
	first, err := env.waitStable(ctx, group, sts, 60*time.Second)
	if err != nil {
		return "", err
	}
	for _, m := range first.members {
		if m.instanceID == "" {
			return "", fmt.Errorf("DescribeGroups shows member %s (client %s) without its group.instance.id", m.memberID, m.clientID)
		}
	}
	gen := sts[0].snap().gen
	owned := make([][]int32, 3)
	for i := range sts {
		owned[i] = sts[i].snap().assigned
	}
	// a rebalance reaches the others with their next heartbeat
	unchanged := func(i int, was memberSnap) error {
		now := sts[i].snap()
		if now.changes != was.changes || now.gen != was.gen || !equal32(now.assigned, was.assigned) {
			return fmt.Errorf("%s saw a rebalance after a static restart: gen %d -> %d, assignment %v -> %v; history: %s",
				now.name, was.gen, now.gen, was.assigned, now.assigned, sts[i].history(8))
		}
		return nil
	}
	var took []string
	for r := 0; r < 3; r++ {
		before, err := env.describe(ctx, group)
		if err != nil {
			return "", err
		}
		others := map[int]memberSnap{}
		for i := range sts {
			if i != r {
				others[i] = sts[i].snap()
			}
		}
		oldID, _ := before.byClient(sts[r].name)
		t0 := time.Now()
		if err := env.stop(ctx, ms[r]); err != nil {
			return "", fmt.Errorf("close static member %s: %w", sts[r].name, err)
		}
		if v, err := env.describe(ctx, group); err != nil || v.state != "Stable" || len(v.members) != 3 {
			return "", fmt.Errorf("right after static member %s closed, DescribeGroups says %v (err %v); a static member's close must not leave", sts[r].name, v, err)
		}
		m, st, err := env.start(ctx, gc, specs[r])
		if err != nil {
			return "", err
		}
		ms[r], sts[r] = m, st
		if err := waitFor(ctx, fmt.Sprintf("restarted static member %s owns its old partitions", st.name), 20*time.Second, func() (bool, string) {
			ns := st.snap()
			v, err := env.describe(ctx, group)
			if err != nil {
				return false, err.Error()
			}
			status := fmt.Sprintf("restarted member sees %v in gen %d (had %v in gen %d); broker: %v", ns.assigned, ns.gen, owned[r], gen, v)
			if !equal32(ns.assigned, owned[r]) || v.state != "Stable" || len(v.members) != 3 {
				return false, status
			}
			nm, n := v.byClient(st.name)
			if n != 1 || !equal32(nm.parts, owned[r]) || nm.memberID == oldID.memberID {
				return false, status
			}
			return true, status
		}); err != nil {
			return "", fmt.Errorf("%w; history: %s", err, histories(sts))
		}
		took = append(took, fmt.Sprintf("%.1fs", time.Since(t0).Seconds()))
		if g := st.snap().gen; g >= 0 && gen >= 0 && g != gen {
			return "", fmt.Errorf("restarted static member %s joined generation %d, the group was in generation %d (a rebalance happened); history: %s", st.name, g, gen, histories(sts))
		}
		for i, was := range others {
			if err := unchanged(i, was); err != nil {
				return "", err
			}
		}
		after, err := env.describe(ctx, group)
		if err != nil {
			return "", err
		}
		for i := range others {
			b, _ := before.byClient(sts[i].name)
			a, n := after.byClient(sts[i].name)
			if n != 1 || a.memberID != b.memberID {
				return "", fmt.Errorf("%s's member id changed from %s to %s across %s's static restart", sts[i].name, b.memberID, a.memberID, sts[r].name)
			}
		}
	}
	markers, err := env.produce(ctx, 3, "after-restarts")
	if err != nil {
		return "", err
	}
	if err := env.waitConsumed(ctx, "records after the restarts", sts, markers, 30*time.Second); err != nil {
		return "", err
	}
	if err := env.checkOnce(sts, markers, true); err != nil {
		return "", err
	}
	// No late rebalance either: watch everyone for a dozen heartbeat
	// intervals; any assignment callback or generation change fails at once.
	window := 12 * heartbeat
	snaps := []memberSnap{sts[0].snap(), sts[1].snap(), sts[2].snap()}
	for end := time.Now().Add(window); time.Now().Before(end); {
		for i := range sts {
			if err := unchanged(i, snaps[i]); err != nil {
				return "", err
			}
		}
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
	for i := range sts {
		if err := unchanged(i, snaps[i]); err != nil {
			return "", err
		}
	}
	return fmt.Sprintf("3 static members owning %v %v %v each restarted in turn (session timeout %s) and had their partitions back after %s, under new member ids, all in generation %d; the others saw no rebalance then nor in the %s after; %d new records consumed once by their owners",
		owned[0], owned[1], owned[2], session, strings.Join(took, "/"), gen, window, flatten(markers)), nil
}

// group-cooperative: 2 cooperative-sticky members own 3 partitions each; a
// third joins. The two keep 2 of their 3 partitions each without those ever
// being revoked; only the moved partitions change hands.
func groupCooperative(ctx context.Context, gc groupClient, env *groupEnv, group string) (string, error) {
	if _, err := env.produce(ctx, 5, "c"); err != nil {
		return "", err
	}
	spec := memberSpec{group: group, cooperative: true}
	_, sts, err := startMembers(ctx, gc, env, spec, group+"-m0", group+"-m1")
	if err != nil {
		return "", err
	}
	view, err := env.waitStable(ctx, group, sts, 60*time.Second)
	if err != nil {
		return "", err
	}
	if view.protocol != "cooperative-sticky" {
		return "", fmt.Errorf("DescribeGroups protocol %q, want cooperative-sticky", view.protocol)
	}
	before := []memberSnap{sts[0].snap(), sts[1].snap()}
	spec.clientID = group + "-m2"
	_, nst, err := env.start(ctx, gc, spec)
	if err != nil {
		return "", err
	}
	all := []*memberState{sts[0], sts[1], nst}
	if _, err := env.waitStable(ctx, group, all, 60*time.Second); err != nil {
		return "", err
	}
	var moved []int32
	for i := 0; i < 2; i++ {
		now := sts[i].snap()
		kept := map[int32]bool{}
		for _, p := range now.assigned {
			kept[p] = true
		}
		for _, p := range now.assigned {
			if !containsP(before[i].assigned, p) {
				return "", fmt.Errorf("%s gained partition %d when a member joined (had %v, now %v)", now.name, p, before[i].assigned, now.assigned)
			}
			if now.revoked[p] != before[i].revoked[p] {
				return "", fmt.Errorf("%s had partition %d revoked during the incremental rebalance although it kept it (had %v, now %v); history: %s",
					now.name, p, before[i].assigned, now.assigned, sts[i].history(10))
			}
		}
		if len(now.assigned) == 0 {
			return "", fmt.Errorf("%s lost everything", now.name)
		}
		for _, p := range before[i].assigned {
			if !kept[p] {
				moved = append(moved, p)
			}
		}
	}
	markers, err := env.produce(ctx, 3, "after-join")
	if err != nil {
		return "", err
	}
	if err := env.waitConsumed(ctx, "records after the join", all, markers, 30*time.Second); err != nil {
		return "", err
	}
	if err := env.checkOnce(all, markers, true); err != nil {
		return "", err
	}
	return fmt.Sprintf("before %v %v; after a third member joined %s: only %v moved, kept partitions never revoked; %d new records consumed once by their owners",
		before[0].assigned, before[1].assigned, assignmentsString(all), sorted32(moved), flatten(markers)), nil
}

func containsP(ps []int32, p int32) bool {
	for _, x := range ps {
		if x == p {
			return true
		}
	}
	return false
}

var errNoSession = errors.New("member has no active group session (not assigned yet or rebalancing)")
