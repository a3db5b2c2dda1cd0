// Command kelp-interop-go runs the Go Kafka clients (franz-go, sarama,
// kafka-go) against a running kelp broker and prints one
// `RESULT|<client>|<scenario>|<pass|fail|skip>|<detail>` line per scenario
// (see tests/interop/README.md). It exits 1 if any scenario failed.
//
// Environment:
//
//	KELP_BOOTSTRAP      host:port of the running kelp (required)
//	KELP_TOPIC_PREFIX   prefix of every topic created (default: kelp-go-<pid>-<time>-)
//	KELP_GO_DEBUG=1     client debug logs on stderr
//
// Flags -clients and -scenarios (comma-separated) restrict what runs. The
// SASL_SSL scenarios (sasl_ssl.go) run only when -scenarios names them, and
// need only their own variables, not KELP_BOOTSTRAP.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"time"
)

type config struct {
	bootstrap string
	prefix    string
	debug     bool
	named     map[string]bool // scenarios -scenarios names; empty when it is not given
}

var cfg config

// skipError marks a scenario as skipped (with the reason as detail).
type skipError struct{ reason string }

func (s skipError) Error() string { return s.reason }

func skipf(format string, args ...any) error { return skipError{fmt.Sprintf(format, args...)} }

var (
	outMu  sync.Mutex
	failed bool
)

func sanitize(s string) string {
	s = strings.ReplaceAll(s, "\r", " ")
	s = strings.ReplaceAll(s, "\n", " ")
	s = strings.ReplaceAll(s, "|", "/")
	if len(s) > 1500 {
		s = s[:1500] + "..."
	}
	return s
}

func result(client, scenario, status, detail string) {
	outMu.Lock()
	defer outMu.Unlock()
	if status == "fail" {
		failed = true
	}
	fmt.Printf("RESULT|%s|%s|%s|%s\n", client, scenario, status, sanitize(detail))
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "[%s] %s\n", time.Now().Format("15:04:05.000"), fmt.Sprintf(format, args...))
}

type scenarioFn func(ctx context.Context) (string, error)

// runScenario runs fn with a deadline, converts panics and overruns into
// failures and prints the RESULT line. It returns true if the scenario passed.
func runScenario(client, scenario string, timeout time.Duration, fn scenarioFn) bool {
	logf("start %s %s", client, scenario)
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	type res struct {
		detail string
		err    error
	}
	ch := make(chan res, 1)
	go func() {
		defer func() {
			if r := recover(); r != nil {
				ch <- res{"", fmt.Errorf("panic: %v", r)}
			}
		}()
		d, err := fn(ctx)
		ch <- res{d, err}
	}()
	var r res
	select {
	case r = <-ch:
	case <-time.After(timeout + 20*time.Second):
		r = res{"", fmt.Errorf("scenario did not return within %s (client call hung past its deadline)", timeout+20*time.Second)}
	}
	elapsed := time.Since(start).Round(time.Millisecond)
	var sk skipError
	switch {
	case r.err == nil:
		result(client, scenario, "pass", fmt.Sprintf("%s (%s)", r.detail, elapsed))
		logf("pass %s %s in %s", client, scenario, elapsed)
		return true
	case errors.As(r.err, &sk):
		result(client, scenario, "skip", sk.reason)
		logf("skip %s %s: %s", client, scenario, sk.reason)
	default:
		d := r.err.Error()
		if errors.Is(r.err, context.DeadlineExceeded) && !strings.Contains(d, "deadline") {
			d += " (scenario deadline exceeded)"
		}
		result(client, scenario, "fail", fmt.Sprintf("%s (after %s)", d, elapsed))
		logf("FAIL %s %s in %s: %s", client, scenario, elapsed, d)
	}
	return false
}

var codecs = []string{"none", "gzip", "snappy", "lz4", "zstd"}

type suite struct {
	client    string
	scenarios []string
	run       func(sel func(string) bool)
}

func main() {
	clientsFlag := flag.String("clients", "", "comma-separated clients to run (default all): franz-go,sarama,kafka-go")
	scenariosFlag := flag.String("scenarios", "", "comma-separated scenarios to run (default all)")
	flag.Parse()

	suites := []suite{
		{"franz-go", franzScenarios, runFranz},
		{"sarama", saramaScenarios, runSarama},
		{"kafka-go", kafkaGoScenarios, runKafkaGo},
	}

	cfg.bootstrap = os.Getenv("KELP_BOOTSTRAP")
	cfg.prefix = os.Getenv("KELP_TOPIC_PREFIX")
	cfg.debug = os.Getenv("KELP_GO_DEBUG") == "1"
	if cfg.prefix == "" {
		cfg.prefix = fmt.Sprintf("kelp-go-%d-%d-", os.Getpid(), time.Now().Unix())
	}

	want := func(list string) func(string) bool {
		if strings.TrimSpace(list) == "" {
			return func(string) bool { return true }
		}
		m := map[string]bool{}
		for _, s := range strings.Split(list, ",") {
			m[strings.TrimSpace(s)] = true
		}
		return func(s string) bool { return m[s] }
	}
	wantClient := want(*clientsFlag)
	wantScenario := want(*scenariosFlag)
	cfg.named = map[string]bool{}
	onlyOptIn := false // every named scenario is an opt-in one with its own listener
	if strings.TrimSpace(*scenariosFlag) != "" {
		onlyOptIn = true
		for _, s := range strings.Split(*scenariosFlag, ",") {
			s = strings.TrimSpace(s)
			cfg.named[s] = true
			if !slices.Contains(saslSSLScenarios, s) {
				onlyOptIn = false
			}
		}
	}

	if cfg.bootstrap == "" && !onlyOptIn {
		for _, s := range suites {
			if wantClient(s.client) {
				result(s.client, "setup", "fail", "KELP_BOOTSTRAP is not set")
			}
		}
		os.Exit(2)
	}
	logf("bootstrap=%s prefix=%s", cfg.bootstrap, cfg.prefix)

	for _, s := range suites {
		if wantClient(s.client) {
			s.run(wantScenario)
		}
	}
	if failed {
		os.Exit(1)
	}
}
