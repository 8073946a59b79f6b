package vhostuser

import (
	"bytes"
	"encoding/binary"
	"math"
	"slices"
	"testing"
)

// Bounds that keep every FuzzMemTable run fast (the fuzzer minimises each new input by
// running it many times): the regions it backs with memory, the queries per input and
// their length (which may still span several regions).
const (
	fuzzMaxRegion  = 1 << 16
	fuzzMaxQueries = 16
	fuzzMaxLen     = 1 << 17
)

// memSeed builds a FuzzMemTable input: a SET_MEM_TABLE body for the regions
// (gpa, size, uaddr, offset), then address queries (addr, len).
func memSeed(regions [][4]uint64, queries ...[2]uint64) []byte {
	b := binary.NativeEndian.AppendUint32(nil, uint32(len(regions)))
	b = binary.NativeEndian.AppendUint32(b, 0)
	for _, r := range regions {
		for _, v := range r {
			b = binary.NativeEndian.AppendUint64(b, v)
		}
	}
	for _, q := range queries {
		b = binary.NativeEndian.AppendUint64(b, q[0])
		b = binary.NativeEndian.AppendUint32(b, uint32(q[1]))
	}
	return b
}

// memSeeds: contiguous and split regions, buffers across the boundary, ends
// of the address space, overlaps, misalignment.
func memSeeds() [][]byte {
	const g = 0x40000000
	top := uint64(math.MaxUint64 - 0xfff)
	return [][]byte{
		memSeed([][4]uint64{{g, 0x10000, 0x7f0000000000, 0}}, [2]uint64{g, 64}, [2]uint64{g + 0xfff0, 0x20}),
		memSeed([][4]uint64{{g, 0x8000, 0x7f0000000000, 0}, {g + 0x8000, 0x8000, 0x7e0000000000, 0x8000}},
			[2]uint64{g + 0x7ff0, 0x20}, [2]uint64{0x7f0000007ff8, 0x10}),
		memSeed([][4]uint64{{top, 0x1000, top, 0}}, [2]uint64{math.MaxUint64 - 8, 16}, [2]uint64{top, 0x1000}),
		memSeed([][4]uint64{{g, 0x4000, g, 0}, {g + 0x2000, 0x4000, g + 0x2000, 0}}, [2]uint64{g + 0x1000, 0x4000}),
		memSeed([][4]uint64{{g + 1, 0x1000, 0, 0}, {0, 0, 0, 0}}),
		memSeed([][4]uint64{{0, 0x1000, 0, math.MaxUint64 - 0x100}}),
	}
}

// FuzzMemTable decodes a SET_MEM_TABLE body, validates its regions as the
// back end does, backs the valid ones with memory and translates arbitrary
// guest addresses through the table. Every answer must agree with a
// separate interval computation: no byte outside the regions is ever
// reachable, and what is reachable reads back what was written.
func FuzzMemTable(f *testing.F) {
	for _, s := range memSeeds() {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) < 8 {
			return
		}
		n := int(min(binary.NativeEndian.Uint32(data), maxRegions+1))
		if len(data) < 8+n*memRegionSize {
			return
		}
		if k, err := memTableRegions(data[:8+n*memRegionSize]); err != nil || k != n {
			if n >= 1 && n <= maxRegions {
				t.Fatalf("%d regions refused: %v", n, err)
			}
			return
		}
		m := &message{body: data[:8+n*memRegionSize]}
		table := &memTable{}
		for _, d := range m.memRegions(nil) {
			if validateRegion(d) != nil || d.size > fuzzMaxRegion {
				continue
			}
			table.regions = append(table.regions, region{gpa: d.gpa, size: d.size, uaddr: d.uaddr,
				data: make([]byte, d.size)})
		}
		q := data[8+n*memRegionSize:]
		for i := 0; i < fuzzMaxQueries && len(q) >= 12; i, q = i+1, q[12:] {
			checkQuery(t, table, binary.NativeEndian.Uint64(q), uint64(binary.NativeEndian.Uint32(q[8:])&(fuzzMaxLen-1)))
		}
	})
}

// checkQuery checks every translation of [a, a+n) against covered.
func checkQuery(t *testing.T, m *memTable, a, n uint64) {
	want := covered(m, a, n, func(r *region) (uint64, uint64) { return r.gpa, r.size })
	if got := m.checkGPA(a, n); got != want {
		t.Fatalf("checkGPA(%#x, %d) = %v, intervals say %v", a, n, got, want)
	}
	buf := bytes.Repeat([]byte{0xa5}, int(n))
	if got := m.write(a, buf); got != want {
		t.Fatalf("write(%#x, %d) = %v, want %v", a, n, got, want)
	}
	back := make([]byte, n)
	if got := m.read(back, a); got != want {
		t.Fatalf("read(%#x, %d) = %v, want %v", a, n, got, want)
	}
	if want && !bytes.Equal(back, buf) {
		t.Fatalf("read(%#x, %d) does not return what was written", a, n)
	}
	if s, ok := m.gpaSlice(a, n); ok && (uint64(len(s)) != n || !want) {
		t.Fatalf("gpaSlice(%#x, %d) = %d bytes, covered %v", a, n, len(s), want)
	}
	if s, ok := m.uaddrSlice(a, n); ok {
		inOne := slices.ContainsFunc(m.regions, func(r region) bool {
			return a >= r.uaddr && a-r.uaddr <= r.size && n <= r.size-(a-r.uaddr)
		})
		if uint64(len(s)) != n || !inOne {
			t.Fatalf("uaddrSlice(%#x, %d) = %d bytes outside every region", a, n, len(s))
		}
	}
}

// covered reports whether the union of the regions' intervals holds all of
// [a, a+n), by merging the sorted intervals (a computation independent of
// the table's own lookups).
func covered(m *memTable, a, n uint64, span func(*region) (uint64, uint64)) bool {
	if n > math.MaxUint64-a {
		return false
	}
	type iv struct{ lo, hi uint64 } // [lo, hi]: inclusive, so the top byte fits
	var ivs []iv
	for i := range m.regions {
		lo, size := span(&m.regions[i])
		ivs = append(ivs, iv{lo, lo + size - 1})
	}
	slices.SortFunc(ivs, func(x, y iv) int {
		if x.lo < y.lo {
			return -1
		}
		if x.lo > y.lo {
			return 1
		}
		return 0
	})
	if n == 0 {
		return true
	}
	need, last := a, a+n-1
	for _, v := range ivs {
		if v.lo > need {
			break
		}
		if v.hi >= need {
			if v.hi >= last {
				return true
			}
			need = v.hi + 1
		}
	}
	return false
}
