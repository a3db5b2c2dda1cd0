// Command probe checks a SeaweedMQ broker end to end, through the same gRPC calls kelp makes
// (ConfigureTopic, PublishMessage, FetchMessage, GetPartitionRangeInfo), for the faults the
// patches in ../patches fix:
//
//	probe kill      publish N records with pipelining, run -kill-cmd (e.g. SIGKILL and restart
//	                the broker) after -kill-at acks, publish the rest again from the first
//	                unacknowledged record, then check every acknowledged record reads back at
//	                its offset and no offset was handed out twice. With -tail a reader follows the
//	                partition meanwhile; with -tail-ahead it reads whatever the broker serves, past
//	                the acknowledged offsets too, and every record it read must still be at its
//	                offset after the kill (a broker must not serve records it can lose).
//	probe fullstop  publish N records, close the stream, wait until the broker log says it
//	                unloaded the partition, publish N more on a new stream, then check the new
//	                offsets continue after the old ones and every record reads back.
//	probe bench     publish for -duration with -inflight records in flight; print records/s
//	                and the ack latency distribution.
//	probe startup   run -kill-cmd (kill the broker and start it again) and call
//	                LookupTopicBrokers from -inflight goroutines from the moment the broker's
//	                port accepts again, for -duration after the first success; print every
//	                answer, and fail if the broker went away again (a panic in -broker-log).
//
// -ts-jump-every N (any mode) stamps each N-th record 10 s later than the one before, as Kafka
// record timestamps may jump; a jump within a broker log window seals that window.
//
// It exits 1 if a check fails. Records are 100-byte values keyed "r<seq>" so that a record read
// back can be matched to the one acknowledged at that offset.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand"
	"os"
	"os/exec"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/seaweedfs/seaweedfs/weed/pb/mq_pb"
	"github.com/seaweedfs/seaweedfs/weed/pb/schema_pb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

var (
	brokerAddr   = flag.String("broker", "127.0.0.1:17777", "broker gRPC address")
	namespace    = flag.String("namespace", "kafka", "topic namespace")
	topicName    = flag.String("topic", "", "topic (default: probe-<mode>-<time>)")
	count        = flag.Int("n", 20000, "records to publish (kill: in all; fullstop: in each phase)")
	inflight     = flag.Int("inflight", 64, "records in flight on the publish stream")
	killAt       = flag.Int("kill-at", 0, "kill: run -kill-cmd after this many acks (default n/2)")
	killCmd      = flag.String("kill-cmd", "", "kill, startup: shell command that kills (and restarts) the broker")
	brokerLog    = flag.String("broker-log", "", "fullstop: broker log file to watch for the partition unload; startup: to check for a panic")
	unloadWait   = flag.Duration("unload-timeout", 60*time.Second, "fullstop: how long to wait for the unload")
	duration     = flag.Duration("duration", 10*time.Second, "bench: how long to publish; startup: how long to go on after the first successful lookup")
	valueSize    = flag.Int("value-bytes", 100, "value size")
	reconnectFor = flag.Duration("reconnect-timeout", 180*time.Second, "how long to retry a broker that is away (startup: to wait for its port and first lookup)")
	samples      = flag.Int("samples", 500, "single-record fetches at random acknowledged offsets")
	phase2Shift  = flag.Duration("phase2-ts-shift", 0, "fullstop: shift the timestamps of the records published after the reload (e.g. -1h: older than the stored ones)")
	noRepublish  = flag.Bool("no-republish", false, "kill: do not publish again after the kill, only check what the broker kept")
	tail         = flag.Bool("tail", false, "kill: also read the partition while publishing, up to the highest acked offset, and check what comes back")
	tsJumpEvery  = flag.Int("ts-jump-every", 0, "stamp each record this many records on 10 s later than the one before (Kafka producers' timestamps jump too; a jump within a broker log window seals the window)")
	startupPub   = flag.Bool("startup-publish", false, "startup: one of the goroutines opens PublishMessage streams instead")
	tailAhead    = flag.Bool("tail-ahead", false, "kill: with -tail, read past the highest acked offset too (whatever the broker serves), and check that every record read is still at its offset after the kill")
)

func main() {
	flag.Usage = func() {
		fmt.Fprintf(os.Stderr, "usage: probe [flags] kill|fullstop|bench|startup\n")
		flag.PrintDefaults()
	}
	flag.Parse()
	if flag.NArg() != 1 {
		flag.Usage()
		os.Exit(2)
	}
	mode := flag.Arg(0)
	if *topicName == "" {
		*topicName = fmt.Sprintf("probe-%s-%d", mode, time.Now().Unix())
	}
	conn, err := grpc.NewClient(*brokerAddr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(64<<20)))
	if err != nil {
		fatalf("dial %s: %v", *brokerAddr, err)
	}
	p := &probe{c: mq_pb.NewSeaweedMessagingClient(conn), topic: &schema_pb.Topic{Namespace: *namespace, Name: *topicName}}
	if err := p.configure(); err != nil {
		fatalf("%v", err)
	}
	logf("topic %s.%s partition %v on %s", *namespace, *topicName, p.partition, *brokerAddr)
	var ok bool
	switch mode {
	case "kill":
		ok = p.killTest()
	case "fullstop":
		ok = p.fullStopTest()
	case "bench":
		ok = p.bench()
	case "startup":
		ok = p.startupTest()
	default:
		flag.Usage()
		os.Exit(2)
	}
	if !ok {
		logf("RESULT: FAIL")
		os.Exit(1)
	}
	logf("RESULT: PASS")
}

func logf(format string, args ...any) {
	fmt.Printf("%s probe: %s\n", time.Now().Format("15:04:05.000"), fmt.Sprintf(format, args...))
}

func fatalf(format string, args ...any) {
	logf("error: "+format, args...)
	os.Exit(2)
}

type probe struct {
	c         mq_pb.SeaweedMessagingClient
	topic     *schema_pb.Topic
	partition *schema_pb.Partition

	mu      sync.Mutex
	acked   map[int64]int    // offset -> seq of the record acknowledged there
	reuse   []string         // offsets acknowledged for two different records
	seen    map[int64]string // -tail-ahead: offset -> value the tail reader read there
	scanned map[int64]string // offset -> value, from the last verify scan
}

// configure creates the topic with one partition (retrying while a restarted broker is not
// ready yet) and remembers that partition.
func (p *probe) configure() error {
	deadline := time.Now().Add(*reconnectFor)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		resp, err := p.c.ConfigureTopic(ctx, &mq_pb.ConfigureTopicRequest{Topic: p.topic, PartitionCount: 1})
		cancel()
		if err == nil && len(resp.BrokerPartitionAssignments) > 0 {
			p.partition = resp.BrokerPartitionAssignments[0].Partition
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("ConfigureTopic %v: %v", p.topic, err)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

func record(seq int) (key, value []byte) {
	key = []byte(fmt.Sprintf("r%07d", seq))
	value = []byte(fmt.Sprintf("%s:%s", key, strings.Repeat("v", max(*valueSize-len(key)-1, 0))))
	return key, value
}

// tsJump is how much later than now record seq is stamped, see -ts-jump-every.
func tsJump(seq int) time.Duration {
	if *tsJumpEvery <= 0 {
		return 0
	}
	return time.Duration(seq / *tsJumpEvery) * 10 * time.Second
}

type ack struct {
	seq     int
	offset  int64
	latency time.Duration
}

// session is one publish stream.
type session struct {
	stream  mq_pb.SeaweedMessaging_PublishMessageClient
	cancel  context.CancelFunc
	tsShift time.Duration // added to each record's timestamp
}

// open opens a publish stream (which makes the broker load the partition) and waits for the
// broker's hello.
func (p *probe) open() (*session, error) {
	ctx, cancel := context.WithCancel(context.Background())
	stream, err := p.c.PublishMessage(ctx)
	if err != nil {
		cancel()
		return nil, fmt.Errorf("open publish stream: %w", err)
	}
	s := &session{stream: stream, cancel: cancel}
	if err := stream.Send(&mq_pb.PublishMessageRequest{Message: &mq_pb.PublishMessageRequest_Init{
		Init: &mq_pb.PublishMessageRequest_InitMessage{Topic: p.topic, Partition: p.partition, AckInterval: 1, PublisherName: "probe"},
	}}); err != nil {
		cancel()
		return nil, fmt.Errorf("send init: %w", err)
	}
	hello, err := stream.Recv()
	if err != nil {
		cancel()
		return nil, fmt.Errorf("publish stream hello: %w", err)
	}
	if hello.Error != "" {
		cancel()
		return nil, fmt.Errorf("publish stream refused: %s", hello.Error)
	}
	return s, nil
}

// send publishes records from, from+1, ..., to-1 with at most inflight of them unacknowledged,
// calling onAck for each ack in order. It returns the number acknowledged and the error that
// broke the stream, if any. stop, when closed, ends the publishing early.
func (s *session) send(from, to int, inflight int, stop <-chan struct{}, onAck func(ack)) (int, error) {
	type sent struct {
		seq int
		at  time.Time
	}
	window := make(chan sent, inflight) // the records in flight, in order
	slots := make(chan struct{}, inflight)
	sendErr := make(chan error, 1)
	quit := make(chan struct{})
	defer close(quit)
	go func() {
		defer close(window)
		for seq := from; seq < to; seq++ {
			select {
			case <-stop:
				sendErr <- nil
				return
			default:
			}
			key, value := record(seq)
			select {
			case slots <- struct{}{}: // blocks while inflight records are unacknowledged
			case <-quit:
				return
			}
			m := sent{seq: seq, at: time.Now()}
			window <- m
			if err := s.stream.Send(&mq_pb.PublishMessageRequest{Message: &mq_pb.PublishMessageRequest_Data{
				Data: &mq_pb.DataMessage{Key: key, Value: value, TsNs: m.at.Add(s.tsShift + tsJump(seq)).UnixNano()},
			}}); err != nil {
				sendErr <- err
				return
			}
		}
		sendErr <- nil
	}()

	acked := 0
	for m := range window {
		resp, err := s.stream.Recv()
		if err != nil {
			if err == io.EOF {
				err = errors.New("broker closed the stream")
			}
			return acked, fmt.Errorf("after %d acks: %w", acked, err)
		}
		if resp.Error != "" {
			return acked, fmt.Errorf("after %d acks: broker error %d: %s", acked, resp.ErrorCode, resp.Error)
		}
		onAck(ack{seq: m.seq, offset: resp.AssignedOffset, latency: time.Since(m.at)})
		<-slots
		acked++
	}
	if err := <-sendErr; err != nil {
		return acked, fmt.Errorf("send: %w", err)
	}
	return acked, nil
}

// close closes our side and waits until the broker ends the stream.
func (s *session) close() error {
	defer s.cancel()
	if err := s.stream.CloseSend(); err != nil {
		return fmt.Errorf("close send: %w", err)
	}
	for {
		if _, err := s.stream.Recv(); err != nil {
			if err == io.EOF {
				return nil
			}
			return fmt.Errorf("closing stream: %w", err)
		}
	}
}

// publish publishes records from..to-1 on a new stream and closes it, see send.
func (p *probe) publish(from, to int, inflight int, stop <-chan struct{}, onAck func(ack)) (int, error) {
	s, err := p.open()
	if err != nil {
		return 0, err
	}
	n, err := s.send(from, to, inflight, stop, onAck)
	if err != nil {
		s.cancel()
		return n, err
	}
	return n, s.close()
}

func (p *probe) recordAck(a ack) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if prev, ok := p.acked[a.offset]; ok && prev != a.seq {
		p.reuse = append(p.reuse, fmt.Sprintf("offset %d acked for r%07d and again for r%07d", a.offset, prev, a.seq))
	}
	p.acked[a.offset] = a.seq
}

// publishAll publishes records from..to-1, reopening the stream (after reconnectFor at most)
// whenever it breaks and resending from the first unacknowledged record. afterAck runs after
// each ack with the total acknowledged so far.
func (p *probe) publishAll(from, to int, afterAck func(total int)) error {
	next := from
	total := 0
	deadline := time.Time{}
	for next < to {
		n, err := p.publish(next, to, *inflight, nil, func(a ack) {
			p.recordAck(a)
			total++
			if afterAck != nil {
				afterAck(total)
			}
		})
		next += n
		if err == nil {
			break
		}
		if *noRepublish {
			logf("publish stream broke at r%07d (%d acked): %v; not publishing again (-no-republish)", next, total, err)
			return nil
		}
		if n > 0 || deadline.IsZero() {
			deadline = time.Now().Add(*reconnectFor)
			logf("publish stream broke at r%07d (%d acked so far): %v", next, total, err)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("broker did not take records again within %v: %v", *reconnectFor, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	return nil
}

func (p *probe) killTest() bool {
	p.acked = map[int64]int{}
	if *killCmd == "" {
		fatalf("kill needs -kill-cmd")
	}
	at := *killAt
	if at == 0 {
		at = *count / 2
	}
	var once sync.Once
	killed := make(chan error, 1)
	start := time.Now()
	tailDone := make(chan struct{})
	tailResult := make(chan bool, 1)
	if *tail {
		go func() { tailResult <- p.tailReader(tailDone) }()
	} else {
		tailResult <- true
	}
	err := p.publishAll(0, *count, func(total int) {
		if total >= at {
			once.Do(func() {
				logf("%d records acknowledged; running: %s", total, *killCmd)
				go func() {
					out, err := exec.Command("sh", "-c", *killCmd).CombinedOutput()
					for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
						logf("  kill-cmd: %s", line)
					}
					killed <- err
				}()
			})
		}
	})
	close(tailDone)
	tailOK := <-tailResult
	if err != nil {
		logf("publishing failed: %v", err)
		return false
	}
	if kerr := <-killed; kerr != nil {
		logf("kill command failed: %v", kerr)
		return false
	}
	if *noRepublish {
		// Wait until the restarted broker serves the partition again.
		deadline := time.Now().Add(*reconnectFor)
		for {
			_, err := p.fetch(0, 1)
			if err == nil {
				break
			}
			if time.Now().After(deadline) {
				logf("broker did not serve the partition within %v: %v", *reconnectFor, err)
				break
			}
			time.Sleep(500 * time.Millisecond)
		}
		return p.verify() && tailOK && p.checkSeen()
	}
	logf("all %d records acknowledged in %.1fs", *count, time.Since(start).Seconds())
	return p.verify() && tailOK && p.checkSeen()
}

// tailReader reads the partition from offset 0 while records are published, never beyond the
// highest acknowledged offset (with -tail-ahead: as far as the broker serves), and checks each
// record read against the one acknowledged at its offset, until done is closed and it has
// caught up. With -tail-ahead it keeps what it read in p.seen, for checkSeen.
func (p *probe) tailReader(done <-chan struct{}) bool {
	var pos int64
	wrong, emptyPolls, fetchErrs, early := 0, 0, 0, 0
	var examples []string
	p.seen = map[int64]string{}
	for {
		end := p.maxAcked() + 1
		if pos >= end {
			select {
			case <-done:
				if pos >= p.maxAcked()+1 {
					ok := wrong == 0 && emptyPolls == 0
					logf("tail reader: read %d records while publishing; %d read back as another record, %d empty answers below the acked offsets, %d fetch errors (broker away) %s",
						pos, wrong, emptyPolls, fetchErrs, strings.Join(examples, "; "))
					if *tailAhead {
						logf("tail reader: %d records read before the probe had their ack (acks in transit, or records the broker served unacknowledged)", early)
					}
					if !ok {
						logf("CHECK FAILED: the tail reader got wrong or no records below acknowledged offsets")
					}
					return ok
				}
			default:
			}
			if !*tailAhead {
				time.Sleep(5 * time.Millisecond)
				continue
			}
		}
		maxMessages := min(end-pos, 500)
		if *tailAhead {
			maxMessages = 500
		}
		resp, err := p.fetch(pos, int32(maxMessages))
		if err != nil {
			fetchErrs++
			time.Sleep(50 * time.Millisecond)
			continue
		}
		if len(resp.Messages) == 0 {
			if pos >= end {
				time.Sleep(5 * time.Millisecond) // at the end of what the broker serves
				continue
			}
			emptyPolls++
			if len(examples) < 3 {
				examples = append(examples, fmt.Sprintf("empty at %d (HWM %d)", pos, resp.HighWaterMark))
			}
			time.Sleep(20 * time.Millisecond)
			continue
		}
		p.mu.Lock()
		for i, m := range resp.Messages {
			off := pos + int64(i)
			seq, ok := p.acked[off]
			if *tailAhead {
				p.seen[off] = string(m.Value)
				if !ok {
					early++
				}
			}
			if ok {
				if _, want := record(seq); string(m.Value) != string(want) {
					wrong++
					if len(examples) < 3 {
						examples = append(examples, fmt.Sprintf("offset %d: want r%07d, got %.8q", off, seq, m.Value))
					}
				}
			}
		}
		p.mu.Unlock()
		pos += int64(len(resp.Messages))
	}
}

// checkSeen checks that every record the -tail-ahead reader got is at its offset in the last
// scan: a record served and then lost (or replaced) in the kill was served before it was durable.
func (p *probe) checkSeen() bool {
	if !*tailAhead {
		return true
	}
	lost, replaced := 0, 0
	var examples []string
	for off, value := range p.seen {
		got, found := p.scanned[off]
		switch {
		case !found:
			lost++
		case got != value:
			replaced++
		default:
			continue
		}
		if len(examples) < 3 {
			examples = append(examples, fmt.Sprintf("offset %d: read %.8q, now %.8q", off, value, got))
		}
	}
	if lost+replaced > 0 {
		logf("CHECK FAILED: of %d records the tail reader read, %d are gone after the kill and %d are now another record (e.g. %s)",
			len(p.seen), lost, replaced, strings.Join(examples, "; "))
		return false
	}
	logf("check: all %d records the tail reader read are still at their offsets after the kill", len(p.seen))
	return true
}

func (p *probe) fullStopTest() bool {
	p.acked = map[int64]int{}
	if *brokerLog == "" {
		fatalf("fullstop needs -broker-log")
	}
	n := *count
	unloadsBefore := countUnloads(*brokerLog, p.topic.Name)
	if err := p.publishAll(0, n, nil); err != nil {
		logf("phase 1: %v", err)
		return false
	}
	last1 := p.maxAcked()
	logf("phase 1: %d records acknowledged, offsets up to %d; stream closed", n, last1)

	deadline := time.Now().Add(*unloadWait)
	for countUnloads(*brokerLog, p.topic.Name) <= unloadsBefore {
		if time.Now().After(deadline) {
			logf("the broker did not log the unload of %s within %v", p.topic.Name, *unloadWait)
			return false
		}
		time.Sleep(100 * time.Millisecond)
	}
	logf("broker unloaded the partition (broker log)")

	// A new publisher (as a restarted kelp would) loads the partition again and holds it.
	s, err := p.open()
	if err != nil {
		logf("phase 2: %v", err)
		return false
	}
	defer s.cancel()
	s.tsShift = *phase2Shift
	logf("phase 2: publish stream open again (partition loaded); reading phase 1 back before publishing")
	ok := p.verify()

	var first2 int64 = -1
	if _, err := s.send(n, 2*n, *inflight, nil, func(a ack) {
		p.recordAck(a)
		if a.seq == n {
			first2 = a.offset
		}
	}); err != nil {
		logf("phase 2: %v", err)
		return false
	}
	if first2 != last1+1 {
		logf("CHECK FAILED: the first record after the reload got offset %d, expected %d", first2, last1+1)
		ok = false
	} else {
		logf("check: offsets continue after the reload (first new offset %d)", first2)
	}
	logf("phase 2: %d more records acknowledged; reading everything back with the stream still open", n)
	ok = p.verify() && ok
	if err := s.close(); err != nil {
		logf("phase 2: %v", err)
		ok = false
	}
	return ok
}

// countUnloads counts the broker log lines saying a partition of the topic was removed.
func countUnloads(path, topic string) int {
	data, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	n := 0
	for _, line := range strings.Split(string(data), "\n") {
		if strings.Contains(line, "Removed local topic") && strings.Contains(line, topic) {
			n++
		}
	}
	return n
}

func (p *probe) maxAcked() int64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	m := int64(-1)
	for off := range p.acked {
		m = max(m, off)
	}
	return m
}

func (p *probe) fetch(offset int64, maxMessages int32) (*mq_pb.FetchMessageResponse, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	resp, err := p.c.FetchMessage(ctx, &mq_pb.FetchMessageRequest{
		Topic: p.topic, Partition: p.partition, StartOffset: offset, MaxMessages: maxMessages, MaxBytes: 4 << 20,
	})
	if err != nil {
		return nil, err
	}
	if resp.Error != "" {
		return resp, fmt.Errorf("fetch error %d: %s", resp.ErrorCode, resp.Error)
	}
	return resp, nil
}

// verify reads the partition back like kelp does (records numbered start + i) and compares
// it with the acknowledgements.
func (p *probe) verify() bool {
	ok := true
	p.mu.Lock()
	acked := p.acked
	reuse := p.reuse
	p.mu.Unlock()
	if len(reuse) > 0 {
		ok = false
		logf("CHECK FAILED: %d offsets acknowledged for two different records, e.g. %s", len(reuse), reuse[0])
	} else {
		logf("check: no offset acknowledged twice (%d acks)", len(acked))
	}
	maxAcked := int64(-1)
	for off := range acked {
		maxAcked = max(maxAcked, off)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	info, err := p.c.GetPartitionRangeInfo(ctx, &mq_pb.GetPartitionRangeInfoRequest{Topic: p.topic, Partition: p.partition})
	cancel()
	var hwm int64
	if err != nil || info.Error != "" || info.OffsetRange == nil {
		logf("GetPartitionRangeInfo: %v %v", err, info.GetError())
	} else {
		hwm = info.OffsetRange.HighWaterMark
		logf("GetPartitionRangeInfo: earliest %d, high-water mark %d (highest acked offset %d)",
			info.OffsetRange.EarliestOffset, hwm, maxAcked)
	}
	if hwm <= maxAcked {
		ok = false
		logf("CHECK FAILED: high-water mark %d is not above the highest acknowledged offset %d", hwm, maxAcked)
	}

	// Sequential scan, numbering records start + i.
	scanned := map[int64]string{}
	var stuck []int64
	var fetchErrs []string
	end := max(hwm, maxAcked+1)
	for off := int64(0); off < end; {
		resp, err := p.fetch(off, 1000)
		if err != nil {
			fetchErrs = append(fetchErrs, fmt.Sprintf("at %d: %v", off, err))
			stuck = append(stuck, off)
			off++
			continue
		}
		if len(resp.Messages) == 0 {
			stuck = append(stuck, off)
			off++ // skip the unreadable offset and go on
			continue
		}
		for i, m := range resp.Messages {
			scanned[off+int64(i)] = string(m.Value)
		}
		off += int64(len(resp.Messages))
	}
	if len(stuck) > 0 {
		ok = false
		logf("CHECK FAILED: %d offsets below the high-water mark returned no record, first %v; fetch errors: %d %s",
			len(stuck), stuck[:min(len(stuck), 5)], len(fetchErrs), strings.Join(fetchErrs[:min(len(fetchErrs), 2)], "; "))
	}
	missing, wrong := 0, 0
	var examples []string
	for off, seq := range acked {
		_, want := record(seq)
		got, found := scanned[off]
		switch {
		case !found:
			missing++
		case got != string(want):
			wrong++
		default:
			continue
		}
		if len(examples) < 3 {
			examples = append(examples, fmt.Sprintf("offset %d: want r%07d, got %.8q", off, seq, got))
		}
	}
	p.mu.Lock()
	p.scanned = scanned
	p.mu.Unlock()
	if missing+wrong > 0 {
		ok = false
		logf("CHECK FAILED: scan from 0: %d acknowledged records missing, %d read back as another record (e.g. %s)",
			missing, wrong, strings.Join(examples, "; "))
	} else {
		logf("check: scan from 0 read %d records; every acknowledged record is at its offset", len(scanned))
	}

	// Random access: single-record fetches at acknowledged offsets.
	offs := make([]int64, 0, len(acked))
	for off := range acked {
		offs = append(offs, off)
	}
	sort.Slice(offs, func(i, j int) bool { return offs[i] < offs[j] })
	rand.Shuffle(len(offs), func(i, j int) { offs[i], offs[j] = offs[j], offs[i] })
	bad := 0
	var badEx []string
	checked := min(*samples, len(offs))
	for _, off := range offs[:checked] {
		resp, err := p.fetch(off, 1)
		_, want := record(acked[off])
		if err != nil || len(resp.Messages) != 1 || string(resp.Messages[0].Value) != string(want) {
			bad++
			if len(badEx) < 3 {
				got := "nothing"
				if err != nil {
					got = err.Error()
				} else if len(resp.Messages) > 0 {
					got = fmt.Sprintf("%.8q", resp.Messages[0].Value)
				}
				badEx = append(badEx, fmt.Sprintf("offset %d: want r%07d, got %s", off, acked[off], got))
			}
		}
	}
	if bad > 0 {
		ok = false
		logf("CHECK FAILED: %d of %d single-record fetches at acknowledged offsets wrong (e.g. %s)", bad, checked, strings.Join(badEx, "; "))
	} else {
		logf("check: %d single-record fetches at random acknowledged offsets all right", checked)
	}
	return ok
}

func (p *probe) bench() bool {
	var mu sync.Mutex
	var lat []time.Duration
	stop := make(chan struct{})
	time.AfterFunc(*duration, func() { close(stop) })
	start := time.Now()
	n, err := p.publish(0, 1<<40, *inflight, stop, func(a ack) {
		mu.Lock()
		lat = append(lat, a.latency)
		mu.Unlock()
	})
	elapsed := time.Since(start)
	if err != nil {
		logf("bench: %v", err)
		return false
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	q := func(f float64) time.Duration { return lat[min(int(f*float64(len(lat))), len(lat)-1)] }
	logf("bench: %d in flight: %d records in %.1fs = %.0f records/s; ack latency p50 %v p99 %v max %v",
		*inflight, n, elapsed.Seconds(), float64(n)/elapsed.Seconds(),
		q(0.5).Round(10*time.Microsecond), q(0.99).Round(10*time.Microsecond), lat[len(lat)-1].Round(10*time.Microsecond))
	return true
}
