package main

// SASL_SSL scenarios (franz-go and sarama): TLS that verifies kelp's certificate against a CA
// given here (never InsecureSkipVerify), then a SASL login. They are opt-in: they run only when
// -scenarios names them, so the default interop run (one plaintext kelp) never sees them:
//
//	sasl-ssl-scram-sha-512   roundtrip of 200 records logged in with SCRAM-SHA-512
//	sasl-ssl-plain           the same with PLAIN
//	sasl-ssl-wrong-password  a wrong password (SCRAM-SHA-512, then PLAIN) must be refused fast
//	                         with an authentication error, not a timeout or a dropped connection
//
// Environment (a missing one makes the scenario skip, saying which):
//
//	KELP_SASL_SSL_BOOTSTRAP  host:port of a SASL_SSL listener of kelp
//	KELP_TLS_CA              PEM file of the CA kelp's certificate chains to
//	KELP_SASL_USER           a user of kelp's users file, with PLAIN and SCRAM-SHA-512 credentials
//	KELP_SASL_PASSWORD       its password (sasl-ssl-wrong-password sends something else)
//
// Sarama leaves the SCRAM conversation to the application (Net.SASL.SCRAMClientGeneratorFunc);
// it is done with github.com/xdg-go/scram as in sarama's own example, so the two clients log in
// with two independent SCRAM implementations.

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"time"

	"github.com/IBM/sarama"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"github.com/twmb/franz-go/pkg/sasl"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"
	xdgscram "github.com/xdg-go/scram"
)

var saslSSLScenarios = []string{"sasl-ssl-scram-sha-512", "sasl-ssl-plain", "sasl-ssl-wrong-password"}

const (
	saslSSLRecords = 200
	// A rejected login is one round trip. kelp drops a connection that has not logged in after
	// --auth-timeout-ms (10 s by default), so a client that gives up only then would take ~10 s:
	// half of that is the line between "refused" and "timed out".
	wrongPasswordLimit = 5 * time.Second
	// each wrong-password attempt is abandoned after this, and counted as a failure
	wrongPasswordAttempt = 10 * time.Second
)

// saslSSLEnv is the SASL_SSL listener and the login the scenarios use.
type saslSSLEnv struct {
	addr string
	host string // of addr: what kelp's certificate must be issued to
	tls  *tls.Config
	user string
	pass string
}

// loadSASLSSL reads the environment; a missing variable is a skip, a bad one a failure.
func loadSASLSSL() (saslSSLEnv, error) {
	var missing []string
	get := func(name string) string {
		v := os.Getenv(name)
		if v == "" {
			missing = append(missing, name)
		}
		return v
	}
	e := saslSSLEnv{addr: get("KELP_SASL_SSL_BOOTSTRAP")}
	caFile := get("KELP_TLS_CA")
	e.user = get("KELP_SASL_USER")
	e.pass = get("KELP_SASL_PASSWORD")
	if len(missing) > 0 {
		return e, skipf("%s not set (needs a SASL_SSL listener of kelp, the CA of its certificate and a user)", strings.Join(missing, ", "))
	}
	host, _, err := net.SplitHostPort(e.addr)
	if err != nil {
		return e, fmt.Errorf("KELP_SASL_SSL_BOOTSTRAP %q is not host:port: %w", e.addr, err)
	}
	e.host = host
	pem, err := os.ReadFile(caFile)
	if err != nil {
		return e, fmt.Errorf("KELP_TLS_CA: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return e, fmt.Errorf("KELP_TLS_CA %s holds no PEM certificate", caFile)
	}
	// Only the CA given is trusted. ServerName stays empty on purpose: franz-go and sarama
	// both set it to the host of the broker they dial, so every connection (the bootstrap and
	// the advertised addresses) is checked against the name it was made to.
	e.tls = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	return e, nil
}

// tlsProbe handshakes with kelp directly (crypto/tls, no Kafka bytes) with the clients' TLS
// settings: the certificate must verify for the host dialed, and be refused for a name it was
// not issued to, which shows the clients' check is a real one.
func (e saslSSLEnv) tlsProbe(ctx context.Context) (string, error) {
	dial := func(serverName string) (*tls.Conn, error) {
		c := e.tls.Clone()
		c.ServerName = serverName
		d := tls.Dialer{NetDialer: &net.Dialer{Timeout: 10 * time.Second}, Config: c}
		conn, err := d.DialContext(ctx, "tcp", e.addr)
		if err != nil {
			return nil, err
		}
		return conn.(*tls.Conn), nil
	}
	conn, err := dial(e.host)
	if err != nil {
		return "", fmt.Errorf("TLS handshake with %s (server name %s, trusting only KELP_TLS_CA): %w", e.addr, e.host, err)
	}
	st := conn.ConnectionState()
	conn.Close()
	const wrongName = "not-kelp.invalid"
	if conn, err := dial(wrongName); err == nil {
		conn.Close()
		return "", fmt.Errorf("TLS handshake with server name %s succeeded: kelp's certificate is not checked", wrongName)
	} else if he := (x509.HostnameError{}); !errors.As(err, &he) {
		return "", fmt.Errorf("TLS handshake with server name %s failed, but not on the name: %v", wrongName, err)
	}
	return fmt.Sprintf("%s %s, certificate %q verified against KELP_TLS_CA for %s (refused for %s)",
		tls.VersionName(st.Version), tls.CipherSuiteName(st.CipherSuite), st.PeerCertificates[0].Subject.String(), e.host, wrongName), nil
}

// saslSSLRecs are the roundtrip's records; every 50th value is grown past 64 KiB so that one
// Kafka frame spans several TLS records (16 KiB at most) in each direction.
func saslSSLRecs(seed uint64) []Rec {
	recs := genRecords(saslSSLRecords, true, seed)
	for i := 0; i < len(recs); i += 50 {
		big := make([]byte, 0, len(recs[i].Value)+70_000)
		big = append(big, recs[i].Value...)
		for j := 0; len(big) < 70_000; j++ {
			big = append(big, byte(i+j*7))
		}
		recs[i].Value = big
	}
	return recs
}

// saslSSLRun loads the environment, probes TLS and runs fn; it adds the TLS facts to the detail.
func saslSSLRun(fn func(ctx context.Context, e saslSSLEnv) (string, error)) scenarioFn {
	return func(ctx context.Context) (string, error) {
		e, err := loadSASLSSL()
		if err != nil {
			return "", err
		}
		probe, err := e.tlsProbe(ctx)
		if err != nil {
			return "", err
		}
		d, err := fn(ctx, e)
		if err != nil {
			return "", err
		}
		return fmt.Sprintf("%s; %s", d, probe), nil
	}
}

// isAuthFailure says whether err is kelp refusing the login (SASL_AUTHENTICATION_FAILED), as
// opposed to a timeout, a dropped connection or any other error.
func isAuthFailure(err error) bool {
	if errors.Is(err, kerr.SaslAuthenticationFailed) || errors.Is(err, sarama.ErrSASLAuthenticationFailed) {
		return true
	}
	m := strings.ToLower(err.Error())
	return strings.Contains(m, "sasl_authentication_failed") || strings.Contains(m, "sasl authentication failed")
}

// wrongPasswordVerdict judges one login attempt with a wrong password that took took.
func wrongPasswordVerdict(mech string, took time.Duration, err error) (string, error) {
	took = took.Round(time.Millisecond)
	switch {
	case err == nil:
		return "", fmt.Errorf("%s: logged in with a wrong password", mech)
	case !isAuthFailure(err):
		if errors.Is(err, context.DeadlineExceeded) {
			return "", fmt.Errorf("%s: no answer to the login within %s (the client timed out instead of being refused): %v", mech, took, err)
		}
		return "", fmt.Errorf("%s: wrong password failed after %s without an authentication error: %v", mech, took, err)
	case took > wrongPasswordLimit:
		return "", fmt.Errorf("%s: refused, but only after %s (limit %s): %v", mech, took, wrongPasswordLimit, err)
	}
	return fmt.Sprintf("%s refused in %s: %v", mech, took, err), nil
}

// ---- franz-go ------------------------------------------------------------------------------

func runFranzSASLSSL() {
	if cfg.named["sasl-ssl-scram-sha-512"] {
		runScenario(franzName, "sasl-ssl-scram-sha-512", 120*time.Second, saslSSLRun(func(ctx context.Context, e saslSSLEnv) (string, error) {
			return franzSASLSSLRoundtrip(ctx, e, "SCRAM-SHA-512", scram.Auth{User: e.user, Pass: e.pass}.AsSha512Mechanism())
		}))
	}
	if cfg.named["sasl-ssl-plain"] {
		runScenario(franzName, "sasl-ssl-plain", 120*time.Second, saslSSLRun(func(ctx context.Context, e saslSSLEnv) (string, error) {
			return franzSASLSSLRoundtrip(ctx, e, "PLAIN", plain.Auth{User: e.user, Pass: e.pass}.AsMechanism())
		}))
	}
	if cfg.named["sasl-ssl-wrong-password"] {
		runScenario(franzName, "sasl-ssl-wrong-password", 60*time.Second, saslSSLRun(franzWrongPassword))
	}
}

func (e saslSSLEnv) franzOpts(m sasl.Mechanism) []kgo.Opt {
	return []kgo.Opt{kgo.SeedBrokers(e.addr), kgo.DialTLSConfig(e.tls.Clone()), kgo.SASL(m)}
}

func franzSASLSSLRoundtrip(ctx context.Context, e saslSSLEnv, mech string, m sasl.Mechanism) (string, error) {
	topic := cfg.prefix + "go-franz-" + strings.ToLower("sasl-ssl-"+mech)
	d, err := roundtrip(ctx, franzRT{e.franzOpts(m)}, topic, "none", saslSSLRecs(4), 60*time.Second)
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("as %s with %s over TLS: %s", e.user, mech, d), nil
}

func franzWrongPassword(ctx context.Context, e saslSSLEnv) (string, error) {
	wrong := e.pass + "-wrong"
	var notes []string
	for _, a := range []struct {
		mech string
		m    sasl.Mechanism
	}{
		{"SCRAM-SHA-512", scram.Auth{User: e.user, Pass: wrong}.AsSha512Mechanism()},
		{"PLAIN", plain.Auth{User: e.user, Pass: wrong}.AsMechanism()},
	} {
		cl, err := franzNewClient(e.franzOpts(a.m)...)
		if err != nil {
			return "", err
		}
		actx, cancel := context.WithTimeout(ctx, wrongPasswordAttempt)
		start := time.Now()
		// Any request needs a logged-in connection; Metadata is the first a client sends.
		_, err = kmsg.NewPtrMetadataRequest().RequestWith(actx, cl)
		took := time.Since(start)
		cancel()
		cl.Close()
		n, err := wrongPasswordVerdict(a.mech, took, err)
		if err != nil {
			return "", err
		}
		notes = append(notes, n)
	}
	return fmt.Sprintf("user %s with a wrong password: %s", e.user, strings.Join(notes, "; ")), nil
}

// ---- sarama --------------------------------------------------------------------------------

func runSaramaSASLSSL() {
	if cfg.named["sasl-ssl-scram-sha-512"] {
		runScenario(saramaName, "sasl-ssl-scram-sha-512", 120*time.Second, saslSSLRun(func(ctx context.Context, e saslSSLEnv) (string, error) {
			return saramaSASLSSLRoundtrip(ctx, e, sarama.SASLTypeSCRAMSHA512)
		}))
	}
	if cfg.named["sasl-ssl-plain"] {
		runScenario(saramaName, "sasl-ssl-plain", 120*time.Second, saslSSLRun(func(ctx context.Context, e saslSSLEnv) (string, error) {
			return saramaSASLSSLRoundtrip(ctx, e, sarama.SASLTypePlaintext)
		}))
	}
	if cfg.named["sasl-ssl-wrong-password"] {
		runScenario(saramaName, "sasl-ssl-wrong-password", 60*time.Second, saslSSLRun(saramaWrongPassword))
	}
}

// saramaXDGSCRAM is sarama's SCRAMClient done with xdg-go/scram (sarama's example, as is).
type saramaXDGSCRAM struct {
	hash xdgscram.HashGeneratorFcn
	conv *xdgscram.ClientConversation
}

func (x *saramaXDGSCRAM) Begin(user, password, authzID string) error {
	c, err := x.hash.NewClient(user, password, authzID)
	if err != nil {
		return err
	}
	x.conv = c.NewConversation()
	return nil
}

func (x *saramaXDGSCRAM) Step(challenge string) (string, error) { return x.conv.Step(challenge) }
func (x *saramaXDGSCRAM) Done() bool                            { return x.conv.Done() }

func (e saslSSLEnv) saramaTarget(mech sarama.SASLMechanism, pass string) saramaTarget {
	return saramaTarget{addr: e.addr, secure: func(c *sarama.Config) {
		c.Net.TLS.Enable = true
		c.Net.TLS.Config = e.tls.Clone()
		c.Net.SASL.Enable = true
		c.Net.SASL.Mechanism = mech
		c.Net.SASL.User = e.user
		c.Net.SASL.Password = pass
		switch mech {
		case sarama.SASLTypeSCRAMSHA512:
			c.Net.SASL.SCRAMClientGeneratorFunc = func() sarama.SCRAMClient { return &saramaXDGSCRAM{hash: xdgscram.SHA512} }
		case sarama.SASLTypeSCRAMSHA256:
			c.Net.SASL.SCRAMClientGeneratorFunc = func() sarama.SCRAMClient { return &saramaXDGSCRAM{hash: xdgscram.SHA256} }
		}
	}}
}

func saramaSASLSSLRoundtrip(ctx context.Context, e saslSSLEnv, mech sarama.SASLMechanism) (string, error) {
	topic := cfg.prefix + "go-sarama-" + strings.ToLower("sasl-ssl-"+string(mech))
	d, err := roundtrip(ctx, saramaRT{e.saramaTarget(mech, e.pass)}, topic, "none", saslSSLRecs(5), 60*time.Second)
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("as %s with %s over TLS: %s", e.user, mech, d), nil
}

func saramaWrongPassword(ctx context.Context, e saslSSLEnv) (string, error) {
	wrong := e.pass + "-wrong"
	var notes []string
	for _, mech := range []sarama.SASLMechanism{sarama.SASLTypeSCRAMSHA512, sarama.SASLTypePlaintext} {
		t := e.saramaTarget(mech, wrong)
		actx, cancel := context.WithTimeout(ctx, wrongPasswordAttempt)
		start := time.Now()
		// NewClient connects and asks for metadata, which needs the login. Sarama tries the
		// seed broker Metadata.Retry.Max+1 times, 250 ms apart, even after a refused login:
		// the ~0.5 s this takes is sarama's, kelp refuses each login at once.
		cl, err := withCtx(actx, "NewClient", func() (sarama.Client, error) { return sarama.NewClient(t.brokers(), t.config()) })
		took := time.Since(start)
		cancel()
		if cl != nil {
			cl.Close()
		}
		n, err := wrongPasswordVerdict(string(mech), took, err)
		if err != nil {
			return "", err
		}
		notes = append(notes, n)
	}
	return fmt.Sprintf("user %s with a wrong password: %s", e.user, strings.Join(notes, "; ")), nil
}
