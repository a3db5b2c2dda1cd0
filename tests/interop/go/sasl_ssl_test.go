package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/twmb/franz-go/pkg/kerr"
	xdgscram "github.com/xdg-go/scram"
)

// Only a fast authentication error passes sasl-ssl-wrong-password: a login that works, a
// timeout, a dropped connection or a slow refusal must each fail it.
func TestWrongPasswordVerdict(t *testing.T) {
	for _, c := range []struct {
		name string
		took time.Duration
		err  error
		pass bool
	}{
		{"franz-go refusal", 5 * time.Millisecond, fmt.Errorf("wrapped: %w", kerr.SaslAuthenticationFailed), true},
		{"sarama refusal", 500 * time.Millisecond, sarama.Wrap(sarama.ErrOutOfBrokers, sarama.ErrSASLAuthenticationFailed), true},
		{"logged in", 5 * time.Millisecond, nil, false},
		{"timeout", 10 * time.Second, context.DeadlineExceeded, false},
		{"dropped connection", 5 * time.Millisecond, io.EOF, false},
		{"slow refusal", 9 * time.Second, kerr.SaslAuthenticationFailed, false},
	} {
		_, err := wrongPasswordVerdict("PLAIN", c.took, c.err)
		if (err == nil) != c.pass {
			t.Errorf("%s: verdict error %v, want pass=%v", c.name, err, c.pass)
		}
	}
}

// saramaXDGSCRAM driven the way sarama's broker drives a SCRAMClient (Begin, Step(""), then
// Step with each server message until Done) against xdg-go's SCRAM server.
func TestSaramaXDGSCRAMConversation(t *testing.T) {
	login := func(password string) error {
		// the server's side: alice's stored credentials for the password "right"
		c, err := xdgscram.SHA512.NewClient("alice", "right", "")
		if err != nil {
			return err
		}
		creds := c.GetStoredCredentials(xdgscram.KeyFactors{Salt: "0123456789abcdef", Iters: 4096})
		srv, err := xdgscram.SHA512.NewServer(func(string) (xdgscram.StoredCredentials, error) { return creds, nil })
		if err != nil {
			return err
		}
		sc := srv.NewConversation()
		var cl sarama.SCRAMClient = &saramaXDGSCRAM{hash: xdgscram.SHA512}
		if err := cl.Begin("alice", password, ""); err != nil {
			return err
		}
		msg, err := cl.Step("")
		if err != nil {
			return err
		}
		for steps := 0; !cl.Done(); steps++ {
			if steps > 3 {
				return errors.New("conversation does not end")
			}
			res, err := sc.Step(msg)
			if err != nil {
				return fmt.Errorf("server: %w", err)
			}
			if msg, err = cl.Step(res); err != nil {
				return fmt.Errorf("client: %w", err)
			}
		}
		if !sc.Valid() {
			return errors.New("server did not accept the login")
		}
		return nil
	}
	if err := login("right"); err != nil {
		t.Fatalf("right password: %v", err)
	}
	if err := login("wrong"); err == nil || !strings.Contains(err.Error(), "server") {
		t.Fatalf("wrong password: got %v, want the server to refuse it", err)
	}
}

// A missing variable is a skip naming it; a CA file without a certificate is a failure.
func TestLoadSASLSSL(t *testing.T) {
	t.Setenv("KELP_SASL_SSL_BOOTSTRAP", "127.0.0.1:9093")
	t.Setenv("KELP_TLS_CA", "")
	t.Setenv("KELP_SASL_USER", "alice")
	t.Setenv("KELP_SASL_PASSWORD", "")
	var sk skipError
	if _, err := loadSASLSSL(); !errors.As(err, &sk) || !strings.Contains(sk.reason, "KELP_TLS_CA, KELP_SASL_PASSWORD not set") {
		t.Fatalf("got %v, want a skip naming KELP_TLS_CA and KELP_SASL_PASSWORD", err)
	}
	bad := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(bad, []byte("not a certificate\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("KELP_TLS_CA", bad)
	t.Setenv("KELP_SASL_PASSWORD", "pw")
	if _, err := loadSASLSSL(); err == nil || errors.As(err, &sk) {
		t.Fatalf("CA file without a certificate: got %v, want a failure", err)
	}
}
