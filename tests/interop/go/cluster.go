package main

// cluster-metadata (franz-go): several kelp instances in front of one SeaweedMQ
// (scripts/test-seaweedmq-cluster.sh). Runs only when KELP_CLUSTER_BROKERS is set, so the
// single-broker interop matrix never sees it:
//
//	KELP_BOOTSTRAP         one instance only (the client must learn the others)
//	KELP_CLUSTER_BROKERS   "1=127.0.0.1:PORT,2=...,3=...": every instance, node id = address
//	KELP_CLUSTER_TOPIC     an existing topic
//	KELP_CLUSTER_PARTITIONS its partition count
//
// Passes when Metadata lists exactly those brokers at those addresses, every partition of the
// topic has a leader among them, each leads at least one, and each answers ApiVersions when
// the client talks to it directly.

import (
	"context"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kmsg"
)

func runFranzCluster(sel func(string) bool) {
	if os.Getenv("KELP_CLUSTER_BROKERS") == "" || !sel("cluster-metadata") {
		return
	}
	runScenario(franzName, "cluster-metadata", 90*time.Second, franzClusterMetadataScenario)
}

func clusterExpected() (map[int32]string, string, int32, error) {
	want := map[int32]string{}
	for _, item := range strings.Split(os.Getenv("KELP_CLUSTER_BROKERS"), ",") {
		id, addr, ok := strings.Cut(item, "=")
		n, err := strconv.Atoi(id)
		if !ok || err != nil {
			return nil, "", 0, fmt.Errorf("bad KELP_CLUSTER_BROKERS item %q", item)
		}
		want[int32(n)] = addr
	}
	topic := os.Getenv("KELP_CLUSTER_TOPIC")
	parts, err := strconv.Atoi(os.Getenv("KELP_CLUSTER_PARTITIONS"))
	if topic == "" || err != nil {
		return nil, "", 0, fmt.Errorf("KELP_CLUSTER_TOPIC and KELP_CLUSTER_PARTITIONS must be set")
	}
	return want, topic, int32(parts), nil
}

// clusterCheck says what is wrong with one Metadata answer, or returns the leaders per node.
func clusterCheck(m kadm.Metadata, want map[int32]string, topic string, parts int32) (map[int32]int, error) {
	got := map[int32]string{}
	for _, b := range m.Brokers {
		got[b.NodeID] = fmt.Sprintf("%s:%d", b.Host, b.Port)
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		return nil, fmt.Errorf("Metadata lists brokers %v, want %v", got, want)
	}
	if err := franzCheckTopic(m, topic, parts); err != nil {
		return nil, err
	}
	counts := map[int32]int{}
	for _, pd := range m.Topics[topic].Partitions {
		counts[pd.Leader]++
	}
	for id := range want {
		if counts[id] == 0 {
			return nil, fmt.Errorf("node %d leads none of %s's partitions (leaders per node %v)", id, topic, counts)
		}
	}
	if _, ok := want[m.Controller]; !ok {
		return nil, fmt.Errorf("controller %d is not one of the instances", m.Controller)
	}
	return counts, nil
}

func franzClusterMetadataScenario(ctx context.Context) (string, error) {
	want, topic, parts, err := clusterExpected()
	if err != nil {
		return "", err
	}
	if strings.Contains(cfg.bootstrap, ",") {
		return "", fmt.Errorf("KELP_BOOTSTRAP must name one instance, not %s", cfg.bootstrap)
	}
	cl, err := franzNewClient()
	if err != nil {
		return "", err
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	start := time.Now()
	deadline, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	var counts map[int32]int
	var m kadm.Metadata
	var last error
	for {
		m, err = adm.Metadata(deadline, topic)
		if err == nil {
			counts, last = clusterCheck(m, want, topic, parts)
			if last == nil {
				break
			}
		} else {
			last = err
		}
		select {
		case <-deadline.Done():
			return "", fmt.Errorf("the cluster through %s: not within 60s: %v", cfg.bootstrap, last)
		case <-time.After(200 * time.Millisecond):
		}
	}
	seen := time.Since(start)
	// Talk to every instance directly, at the address Metadata gave.
	var ids []int
	for id := range want {
		ids = append(ids, int(id))
	}
	sort.Ints(ids)
	for _, id := range ids {
		resp, err := cl.Broker(id).Request(ctx, kmsg.NewPtrApiVersionsRequest())
		if err != nil {
			return "", fmt.Errorf("ApiVersions to node %d (%s): %w", id, want[int32(id)], err)
		}
		if ec := resp.(*kmsg.ApiVersionsResponse).ErrorCode; ec != 0 {
			return "", fmt.Errorf("ApiVersions to node %d: error code %d", id, ec)
		}
	}
	return fmt.Sprintf("bootstrapped from %s only: Metadata lists nodes %v at their addresses (cluster %s, controller %d), each answers ApiVersions directly; %s's %d partitions led per node %v; seen after %s",
		cfg.bootstrap, ids, m.Cluster, m.Controller, topic, parts, counts, seen.Round(time.Millisecond)), nil
}
