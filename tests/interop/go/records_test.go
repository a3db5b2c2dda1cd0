package main

import (
	"strings"
	"testing"
)

// The comparator must catch every kind of difference the roundtrips promise to check.
func TestCompareRecordsCatchesDifferences(t *testing.T) {
	recs := genRecords(60, true, 9)
	place := make([]Placement, len(recs))
	next := map[int32]int64{}
	for i := range recs {
		p := int32(i % 3)
		place[i] = Placement{p, next[p]}
		next[p]++
	}
	per, err := expectedByPartition(recs, place, 3)
	if err != nil {
		t.Fatal(err)
	}
	good := func() map[int32][]Got {
		got := map[int32][]Got{}
		for p, idx := range per {
			for j, i := range idx {
				r := recs[i]
				hs := append([]Header(nil), r.Headers...)
				got[int32(p)] = append(got[int32(p)], Got{Rec: Rec{Key: r.Key, Value: r.Value, Headers: hs, TsMs: r.TsMs}, Partition: int32(p), Offset: int64(j), Codec: "zstd"})
			}
		}
		return got
	}
	if err := compareRecords(recs, per, good(), "zstd"); err != nil {
		t.Fatalf("identical records reported different: %v", err)
	}
	cases := []struct {
		name   string
		mutate func(map[int32][]Got)
		want   string
	}{
		{"key", func(g map[int32][]Got) { g[1][3].Key = []byte("other") }, "key differs"},
		{"value", func(g map[int32][]Got) { g[0][2].Value = append([]byte{}, g[0][2].Value[:5]...) }, "value differs"},
		{"header order", func(g map[int32][]Got) {
			h := g[2][1].Headers
			h[0], h[1] = h[1], h[0]
		}, "header[0] value"},
		{"header dropped", func(g map[int32][]Got) { g[2][4].Headers = g[2][4].Headers[:1] }, "header count"},
		{"timestamp", func(g map[int32][]Got) { g[0][0].TsMs++ }, "timestamp"},
		{"codec", func(g map[int32][]Got) { g[0][7].Codec = "none" }, "compression"},
		{"offset gap", func(g map[int32][]Got) { g[1][5].Offset = 6 }, "dense"},
		{"missing", func(g map[int32][]Got) { g[2] = g[2][:len(g[2])-1] }, "first missing offset"},
		{"extra", func(g map[int32][]Got) {
			g[1] = append(g[1], Got{Rec: Rec{Key: []byte("k")}, Partition: 1, Offset: int64(len(g[1]))})
		}, "extra record"},
		{"duplicate", func(g map[int32][]Got) {
			d := g[0][3]
			g[0] = append(g[0][:4], g[0][3:]...)
			g[0][4] = d
			for j := range g[0] {
				g[0][j].Offset = int64(j)
			}
		}, "key differs"},
	}
	for _, c := range cases {
		g := good()
		c.mutate(g)
		err := compareRecords(recs, per, g, "zstd")
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: got %v, want error containing %q", c.name, err, c.want)
		}
	}
	ends := map[int32]int64{0: 20, 1: 20, 2: 19}
	if err := checkEndOffsets(per, ends); err == nil {
		t.Errorf("end offsets mismatch not caught")
	}
	// acks out of order / not dense
	bad := append([]Placement(nil), place...)
	bad[3], bad[6] = bad[6], bad[3]
	if _, err := expectedByPartition(recs, bad, 3); err == nil || !strings.Contains(err.Error(), "out of order") {
		t.Errorf("reordered acks: got %v", err)
	}
	bad = append([]Placement(nil), place...)
	bad[len(bad)-1].Offset += 2
	if _, err := expectedByPartition(recs, bad, 3); err == nil || !strings.Contains(err.Error(), "not dense") {
		t.Errorf("gap in acks: got %v", err)
	}
}
