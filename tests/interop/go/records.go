package main

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"sort"
	"strings"
	"time"
)

// Header is a client-neutral record header.
type Header struct {
	Key   string
	Value []byte
}

// Rec is a client-neutral record as produced.
type Rec struct {
	Key     []byte
	Value   []byte
	Headers []Header
	TsMs    int64 // explicit CreateTime, milliseconds since the epoch
}

// Placement is where the producer's ack says a record landed.
type Placement struct {
	Partition int32
	Offset    int64
}

// Got is a record as consumed.
type Got struct {
	Rec
	Partition int32
	Offset    int64
	Codec     string // batch compression seen on fetch, "" if the client does not expose it
}

const roundtripRecords = 800
const roundtripPartitions = 3

// genRecords builds n deterministic keyed records. Keys repeat (23 distinct),
// values are unique ("value-NNNNNN:" prefix) with a mix of compressible text
// and binary bytes of varying size; with headers, every record carries two
// headers with the same key ("trace") in a fixed order, the second one empty
// on every 10th record. Timestamps are explicit, strictly increasing by 1 ms
// from an hour ago.
func genRecords(n int, withHeaders bool, seed uint64) []Rec {
	base := time.Now().Add(-time.Hour).UnixMilli()
	out := make([]Rec, n)
	for i := range out {
		r := rand.New(rand.NewPCG(seed, uint64(i)))
		key := []byte(fmt.Sprintf("key-%02d", i%23))
		var v bytes.Buffer
		fmt.Fprintf(&v, "value-%06d:", i)
		if withHeaders {
			size := (i * 37) % 400
			for v.Len() < 13+size {
				if r.IntN(3) == 0 {
					b := make([]byte, 1+r.IntN(16))
					for j := range b {
						b[j] = byte(r.UintN(256))
					}
					v.Write(b)
				} else {
					v.WriteString("kelp speaks kafka ")
				}
			}
		}
		rec := Rec{Key: key, Value: v.Bytes(), TsMs: base + int64(i)}
		if withHeaders {
			second := []byte(fmt.Sprintf("b-%d", i))
			if i%10 == 0 {
				second = []byte{}
			}
			rec.Headers = []Header{
				{Key: "trace", Value: []byte(fmt.Sprintf("a-%d-%x", i, r.Uint32()))},
				{Key: "trace", Value: second},
			}
		}
		out[i] = rec
	}
	return out
}

func showBytes(b []byte) string {
	if b == nil {
		return "<nil>"
	}
	if len(b) > 48 {
		return fmt.Sprintf("%q...(%d bytes)", b[:48], len(b))
	}
	return fmt.Sprintf("%q", b)
}

func diffBytes(what string, got, want []byte) string {
	if bytes.Equal(got, want) {
		return ""
	}
	i := 0
	for i < len(got) && i < len(want) && got[i] == want[i] {
		i++
	}
	return fmt.Sprintf("%s differs at byte %d (len got %d, want %d): got %s want %s",
		what, i, len(got), len(want), showBytes(got), showBytes(want))
}

// diffRec returns "" if got matches want, else a description of the first difference.
func diffRec(got Got, want Rec, wantCodec string) string {
	if d := diffBytes("key", got.Key, want.Key); d != "" {
		return d
	}
	if d := diffBytes("value", got.Value, want.Value); d != "" {
		return d
	}
	if len(got.Headers) != len(want.Headers) {
		return fmt.Sprintf("header count got %d want %d (got %s)", len(got.Headers), len(want.Headers), showHeaders(got.Headers))
	}
	for i := range want.Headers {
		if got.Headers[i].Key != want.Headers[i].Key {
			return fmt.Sprintf("header[%d] key got %q want %q (got %s)", i, got.Headers[i].Key, want.Headers[i].Key, showHeaders(got.Headers))
		}
		if d := diffBytes(fmt.Sprintf("header[%d] value", i), got.Headers[i].Value, want.Headers[i].Value); d != "" {
			return d
		}
	}
	if got.TsMs != want.TsMs {
		return fmt.Sprintf("timestamp got %d (%s) want %d (%s), delta %d ms", got.TsMs,
			time.UnixMilli(got.TsMs).UTC().Format(time.RFC3339Nano), want.TsMs,
			time.UnixMilli(want.TsMs).UTC().Format(time.RFC3339Nano), got.TsMs-want.TsMs)
	}
	if wantCodec != "" && got.Codec != "" && got.Codec != wantCodec {
		return fmt.Sprintf("fetched batch compression is %s, produced with %s", got.Codec, wantCodec)
	}
	return ""
}

func showHeaders(hs []Header) string {
	parts := make([]string, len(hs))
	for i, h := range hs {
		parts[i] = fmt.Sprintf("%q=%s", h.Key, showBytes(h.Value))
	}
	return "[" + strings.Join(parts, " ") + "]"
}

// expectedByPartition groups record indexes by acked partition, in acked
// offset order, and checks the acks themselves: every record acked, acks
// dense from 0 in each partition, and in produce order within a partition.
func expectedByPartition(exp []Rec, place []Placement, nparts int32) ([][]int, error) {
	if len(place) != len(exp) {
		return nil, fmt.Errorf("internal: %d placements for %d records", len(place), len(exp))
	}
	per := make([][]int, nparts)
	for i, pl := range place {
		if pl.Partition < 0 || pl.Partition >= nparts {
			return nil, fmt.Errorf("produce ack for record #%d (key %q) names partition %d, topic has %d", i, exp[i].Key, pl.Partition, nparts)
		}
		per[pl.Partition] = append(per[pl.Partition], i)
	}
	for p := range per {
		idx := per[p]
		// produce order within a partition must match offset order
		for j := 1; j < len(idx); j++ {
			if place[idx[j]].Offset <= place[idx[j-1]].Offset {
				return nil, fmt.Errorf("produce acks out of order in partition %d: record #%d acked at offset %d after record #%d at offset %d",
					p, idx[j], place[idx[j]].Offset, idx[j-1], place[idx[j-1]].Offset)
			}
		}
		sort.SliceStable(idx, func(a, b int) bool { return place[idx[a]].Offset < place[idx[b]].Offset })
		for j, i := range idx {
			if place[i].Offset != int64(j) {
				return nil, fmt.Errorf("produce acks not dense in partition %d: record #%d acked at offset %d, want %d", p, i, place[i].Offset, j)
			}
		}
	}
	return per, nil
}

// compareRecords checks consumed records against produced ones partition by
// partition: offsets dense from 0, same count, and each record equal to the
// one acked at that offset. It returns the first difference.
func compareRecords(exp []Rec, per [][]int, got map[int32][]Got, wantCodec string) error {
	nparts := int32(len(per))
	for p := range got {
		if p < 0 || p >= nparts {
			return fmt.Errorf("consumed %d records from partition %d, which was not produced to (topic has %d)", len(got[p]), p, nparts)
		}
	}
	for p := int32(0); p < nparts; p++ {
		g := got[p]
		w := per[p]
		for j := 0; j < len(g) && j < len(w); j++ {
			if g[j].Offset != int64(j) {
				return fmt.Errorf("partition %d: record number %d read has offset %d, want %d (offsets must be dense from 0)", p, j, g[j].Offset, j)
			}
			if d := diffRec(g[j], exp[w[j]], wantCodec); d != "" {
				return fmt.Errorf("partition %d offset %d (produced record #%d): %s", p, j, w[j], d)
			}
		}
		if len(g) < len(w) {
			return fmt.Errorf("partition %d: read %d records, %d were acked; first missing offset %d (record #%d key %q)",
				p, len(g), len(w), len(g), w[len(g)], exp[w[len(g)]].Key)
		}
		if len(g) > len(w) {
			return fmt.Errorf("partition %d: read %d records but only %d were produced; extra record at offset %d key %s value %s",
				p, len(g), len(w), g[len(w)].Offset, showBytes(g[len(w)].Key), showBytes(g[len(w)].Value))
		}
	}
	return nil
}

// checkEndOffsets compares the broker's latest offsets with the acked counts.
func checkEndOffsets(per [][]int, ends map[int32]int64) error {
	for p := range per {
		e, ok := ends[int32(p)]
		if !ok {
			return fmt.Errorf("ListOffsets(latest) returned nothing for partition %d", p)
		}
		if e != int64(len(per[p])) {
			return fmt.Errorf("ListOffsets(latest) partition %d = %d, want %d (records acked there)", p, e, len(per[p]))
		}
	}
	return nil
}

func wantCounts(per [][]int) map[int32]int {
	m := map[int32]int{}
	for p, idx := range per {
		m[int32(p)] = len(idx)
	}
	return m
}

func countsString(per [][]int) string {
	parts := make([]string, len(per))
	for p, idx := range per {
		parts[p] = fmt.Sprintf("p%d=%d", p, len(idx))
	}
	return strings.Join(parts, ",")
}

func gotCountsString(got map[int32][]Got, nparts int32) string {
	parts := []string{}
	for p := int32(0); p < nparts; p++ {
		parts = append(parts, fmt.Sprintf("p%d=%d", p, len(got[p])))
	}
	return strings.Join(parts, ",")
}

// rtClient is what a client implements to take part in a roundtrip.
type rtClient interface {
	createTopic(ctx context.Context, topic string, partitions int32) error
	// produce sends recs in order with the codec and returns each record's acked placement.
	produce(ctx context.Context, topic, codec string, recs []Rec) ([]Placement, error)
	// consume reads each partition from the earliest offset (assignment, no
	// group) until it has want[p] records or ctx ends.
	consume(ctx context.Context, topic string, want map[int32]int) (map[int32][]Got, error)
	endOffsets(ctx context.Context, topic string, partitions int32) (map[int32]int64, error)
}

// roundtrip runs create, produce, consume, compare, end-offsets check.
func roundtrip(ctx context.Context, c rtClient, topic, codec string, recs []Rec, consumeTimeout time.Duration) (string, error) {
	if err := c.createTopic(ctx, topic, roundtripPartitions); err != nil {
		return "", fmt.Errorf("create topic %s: %w", topic, err)
	}
	place, err := c.produce(ctx, topic, codec, recs)
	if err != nil {
		return "", fmt.Errorf("produce (%s): %w", codec, err)
	}
	per, err := expectedByPartition(recs, place, roundtripPartitions)
	if err != nil {
		return "", err
	}
	cctx, cancel := context.WithTimeout(ctx, consumeTimeout)
	got, cerr := c.consume(cctx, topic, wantCounts(per))
	cancel()
	if derr := compareRecords(recs, per, got, codec); derr != nil {
		if cerr != nil {
			return "", fmt.Errorf("consume: %v; read %s of acked %s; first difference: %v", cerr, gotCountsString(got, roundtripPartitions), countsString(per), derr)
		}
		return "", derr
	}
	if cerr != nil {
		return "", fmt.Errorf("consume: %v (all records matched though)", cerr)
	}
	ends, err := c.endOffsets(ctx, topic, roundtripPartitions)
	if err != nil {
		return "", fmt.Errorf("list end offsets: %w", err)
	}
	if err := checkEndOffsets(per, ends); err != nil {
		return "", err
	}
	detail := fmt.Sprintf("%d records (%s) matched key/value/headers/timestamp/offsets", len(recs), countsString(per))
	for _, g := range got {
		if len(g) > 0 && g[0].Codec != "" {
			detail += "; fetched batches carry codec " + g[0].Codec
			break
		}
	}
	return detail, nil
}
