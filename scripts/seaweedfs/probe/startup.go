package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/seaweedfs/seaweedfs/weed/pb/mq_pb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
)

// startupTest runs -kill-cmd, which must kill the broker and start it again, and from the
// moment the broker's port accepts again calls LookupTopicBrokers from -inflight goroutines
// (with -startup-publish one of them opens PublishMessage streams instead), as a client does
// that reconnects at once. It stops -duration after the first successful lookup, or after
// -reconnect-timeout without one, or when the broker goes away again. It prints every distinct
// answer with its count and when it came (milliseconds after the port accepted), and fails if
// the broker went away (its port refuses connections, or with -broker-log a panic in the log since the
// restart) or no lookup succeeded.
func (p *probe) startupTest() bool {
	if *killCmd == "" {
		fatalf("startup needs -kill-cmd")
	}
	logSize := int64(0)
	if *brokerLog != "" {
		if fi, err := os.Stat(*brokerLog); err == nil {
			logSize = fi.Size()
		}
	}
	logf("running: %s", *killCmd)
	killed := make(chan error, 1)
	go func() {
		out, err := exec.Command("sh", "-c", *killCmd).CombinedOutput()
		for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
			logf("  kill-cmd: %s", line)
		}
		killed <- err
	}()

	// The broker is down once its port refuses; it is back once the port accepts again.
	if !waitPort(false, 60*time.Second) {
		logf("the broker's port still accepts 60 s after the kill command started")
		return false
	}
	down := time.Now()
	if !waitPort(true, *reconnectFor) {
		logf("the broker's port did not accept within %v", *reconnectFor)
		return false
	}
	up := time.Now()
	logf("broker port closed, accepts again %d ms later; calling LookupTopicBrokers from %d goroutines",
		up.Sub(down).Milliseconds(), *inflight)

	// A new connection: the old one backs off after the broker went away.
	conn, err := grpc.NewClient(*brokerAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		fatalf("dial %s: %v", *brokerAddr, err)
	}
	defer conn.Close()
	c := mq_pb.NewSeaweedMessagingClient(conn)

	type answer struct {
		n           int
		first, last time.Duration
	}
	var mu sync.Mutex
	answers := map[string]*answer{}
	var firstOK time.Duration = -1
	note := func(key string, ok bool) {
		at := time.Since(up)
		mu.Lock()
		defer mu.Unlock()
		a := answers[key]
		if a == nil {
			a = &answer{first: at}
			answers[key] = a
		}
		a.n++
		a.last = at
		if ok && firstOK < 0 {
			firstOK = at
		}
	}
	stop := make(chan struct{})
	var stopOnce sync.Once
	stopNow := func() { stopOnce.Do(func() { close(stop) }) }
	var wg sync.WaitGroup
	for i := 0; i < *inflight; i++ {
		publish := i == 0 && *startupPub
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				if publish {
					key, ok := p.startupPublish(c)
					note(key, ok)
					continue
				}
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				_, err := c.LookupTopicBrokers(ctx, &mq_pb.LookupTopicBrokersRequest{Topic: p.topic})
				cancel()
				if err != nil {
					note("LookupTopicBrokers: "+describe(err), false)
				} else {
					note("LookupTopicBrokers: OK", true)
				}
			}
		}()
	}

	// Stop -duration after the first success, after -reconnect-timeout without one, or when
	// the broker's port closes again.
	crashed := time.Duration(-1)
	for {
		time.Sleep(5 * time.Millisecond)
		if _, refused := portState(); refused {
			crashed = time.Since(up)
			break
		}
		mu.Lock()
		ok := firstOK
		mu.Unlock()
		if ok >= 0 && time.Since(up) > ok+*duration {
			break
		}
		if ok < 0 && time.Since(up) > *reconnectFor {
			break
		}
	}
	stopNow()
	wg.Wait()
	if kerr := <-killed; kerr != nil {
		logf("kill command failed: %v", kerr)
	}

	keys := make([]string, 0, len(answers))
	for k := range answers {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool { return answers[keys[i]].first < answers[keys[j]].first })
	for _, k := range keys {
		a := answers[k]
		logf("  %6d x %s (at %d-%d ms)", a.n, k, a.first.Milliseconds(), a.last.Milliseconds())
	}
	result := true
	if crashed >= 0 {
		logf("the broker went away %d ms after its port accepted (the port refuses connections)", crashed.Milliseconds())
		result = false
	}
	if *brokerLog != "" {
		if panics := panicLines(*brokerLog, logSize); len(panics) > 0 {
			logf("broker log since the restart:")
			for _, line := range panics {
				logf("  | %s", line)
			}
			result = false
		}
	}
	if firstOK < 0 {
		logf("no lookup succeeded")
		return false
	}
	logf("first successful lookup %d ms after the port accepted", firstOK.Milliseconds())
	return result
}

// startupPublish opens a publish stream and waits for the broker's first answer, as kelp does
// when it reopens its streams; it returns that answer as a key for the summary.
func (p *probe) startupPublish(c mq_pb.SeaweedMessagingClient) (string, bool) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	stream, err := c.PublishMessage(ctx)
	if err != nil {
		return "PublishMessage: " + describe(err), false
	}
	if err := stream.Send(&mq_pb.PublishMessageRequest{Message: &mq_pb.PublishMessageRequest_Init{
		Init: &mq_pb.PublishMessageRequest_InitMessage{Topic: p.topic, Partition: p.partition, AckInterval: 1, PublisherName: "probe"},
	}}); err != nil {
		return "PublishMessage: " + describe(err), false
	}
	hello, err := stream.Recv()
	if err != nil {
		return "PublishMessage: " + describe(err), false
	}
	if hello.Error != "" {
		return fmt.Sprintf("PublishMessage: error code %d: %s", hello.ErrorCode, hello.Error), false
	}
	return "PublishMessage: OK", true
}

// describe is an error's gRPC code and message.
func describe(err error) string {
	s := status.Convert(err)
	return fmt.Sprintf("%s: %s", s.Code(), s.Message())
}

// portState dials the broker's port: accepted, or refused (nothing listens there). A dial that
// times out (a busy broker) is neither.
func portState() (accepted, refused bool) {
	c, err := net.DialTimeout("tcp", *brokerAddr, time.Second)
	if err != nil {
		return false, errors.Is(err, syscall.ECONNREFUSED)
	}
	c.Close()
	return true, false
}

// waitPort waits until the broker's port accepts (open) or refuses (!open).
func waitPort(open bool, timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for {
		accepted, refused := portState()
		if open && accepted || !open && refused {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(time.Millisecond)
	}
}

// panicLines returns the lines of a panic the log has after offset from: the panic line and
// the next 12 (the first frames).
func panicLines(path string, from int64) []string {
	data, err := os.ReadFile(path)
	if err != nil || int64(len(data)) < from {
		return nil
	}
	lines := strings.Split(string(data[from:]), "\n")
	for i, line := range lines {
		if strings.HasPrefix(line, "panic:") {
			return lines[i:min(i+13, len(lines))]
		}
	}
	return nil
}
