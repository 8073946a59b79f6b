package vhostuser

import (
	"fmt"
	"math"
	"unsafe"

	"golang.org/x/sys/unix"
)

// region is one guest memory region mapped into this process.
type region struct {
	gpa     uint64 // first guest physical address
	size    uint64
	uaddr   uint64 // the front end's virtual address of the first byte
	data    []byte // len(data) == size; the region's bytes in this process
	mapping []byte // what to munmap; nil when the bytes are not ours to unmap (tests)
	sealed  bool   // the front end sealed the file against shrinking (F_SEAL_SHRINK)
}

// memTable is an immutable set of regions. SET_MEM_TABLE builds a new one and swaps it into
// every vring while holding all vring locks, so a worker (which touches guest memory only
// under its vring lock) sees the old table or the new one, never a mixture; the old table
// is unmapped only after the swap, when no worker can still hold a slice of it (after the
// request's reply: session.swapMem).
type memTable struct {
	regions []region
}

// regionAlign is the alignment required of every region field. QEMU sends page-aligned
// regions; demanding 8 keeps a ring's host alignment equal to its guest alignment, which
// the 32-bit atomic accesses of the vring indexes rely on.
const regionAlign = 8

// validateRegion rejects a region whose arithmetic would overflow or whose alignment would
// break the ring accessors; it trusts nothing from the front end.
func validateRegion(d memRegion) error {
	switch {
	case d.size == 0:
		return fmt.Errorf("empty region at gpa %#x", d.gpa)
	case d.size > math.MaxInt/2:
		return fmt.Errorf("region at gpa %#x too large (%#x bytes)", d.gpa, d.size)
	case d.gpa > math.MaxUint64-d.size, d.uaddr > math.MaxUint64-d.size,
		d.mmapOffset > math.MaxInt64-d.size:
		return fmt.Errorf("region at gpa %#x overflows the address space", d.gpa)
	case (d.gpa|d.size|d.uaddr|d.mmapOffset)%regionAlign != 0:
		return fmt.Errorf("region at gpa %#x not %d-byte aligned", d.gpa, regionAlign)
	}
	return nil
}

// mapRegions mmaps every region from its fd (MAP_SHARED, at its mmap offset) after checking
// the fd is a regular file long enough to back it, so touching the mapping cannot SIGBUS
// unless the front end later shrinks the file (fault.go); it notes whether the file is
// sealed against that (F_SEAL_SHRINK, memfds only). The fds stay owned by the caller.
func mapRegions(descs []memRegion, fds []int) (*memTable, error) {
	t := &memTable{regions: make([]region, 0, len(descs))}
	for i, d := range descs {
		if err := validateRegion(d); err != nil {
			t.unmap()
			return nil, err
		}
		var st unix.Stat_t
		if err := unix.Fstat(fds[i], &st); err != nil {
			t.unmap()
			return nil, fmt.Errorf("region %d: fstat: %w", i, err)
		}
		if st.Mode&unix.S_IFMT != unix.S_IFREG || uint64(st.Size) < d.mmapOffset+d.size {
			t.unmap()
			return nil, fmt.Errorf("region %d: fd is not a file of at least %#x bytes", i, d.mmapOffset+d.size)
		}
		seals, err := unix.FcntlInt(uintptr(fds[i]), unix.F_GET_SEALS, 0)
		sealed := err == nil && seals&unix.F_SEAL_SHRINK != 0 // EINVAL: not a memfd, cannot be sealed
		page := uint64(unix.Getpagesize())
		off := d.mmapOffset &^ (page - 1)
		delta := d.mmapOffset - off
		m, err := unix.Mmap(fds[i], int64(off), int(delta+d.size), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
		if err != nil {
			t.unmap()
			return nil, fmt.Errorf("region %d: mmap %#x bytes: %w", i, delta+d.size, err)
		}
		t.regions = append(t.regions, region{
			gpa: d.gpa, size: d.size, uaddr: d.uaddr,
			data: m[delta : delta+d.size : delta+d.size], mapping: m, sealed: sealed,
		})
	}
	return t, nil
}

// unmap releases every mapping; the caller guarantees no worker still uses the table.
func (t *memTable) unmap() { t.unmapExcept(nil) }

// unmapExcept releases the mappings of t that keep (a table sharing some of them after
// ADD_MEM_REG or REM_MEM_REG) does not hold; the caller guarantees no worker uses t.
func (t *memTable) unmapExcept(keep *memTable) {
	if t == nil {
		return
	}
	for i := range t.regions {
		r := &t.regions[i]
		if r.mapping != nil && !keep.holds(r.mapping) {
			unix.Munmap(r.mapping)
		}
		r.mapping, r.data = nil, nil
	}
}

// holds reports whether one of t's regions is the mapping m.
func (t *memTable) holds(m []byte) bool {
	if t == nil {
		return false
	}
	for i := range t.regions {
		if len(t.regions[i].mapping) > 0 && &t.regions[i].mapping[0] == &m[0] {
			return true
		}
	}
	return false
}

// sealedRegions counts the regions whose file cannot shrink, so cannot fault.
func (t *memTable) sealedRegions() int {
	n := 0
	for i := range t.regions {
		if t.regions[i].sealed {
			n++
		}
	}
	return n
}

// mapsAddr reports whether addr, an address in this process, lies in one of t's regions:
// where a guest-memory fault may happen.
func (t *memTable) mapsAddr(addr uintptr) bool {
	if t == nil {
		return false
	}
	for i := range t.regions {
		d := t.regions[i].data
		if len(d) > 0 && addr-uintptr(unsafe.Pointer(&d[0])) < uintptr(len(d)) {
			return true
		}
	}
	return false
}

// findGPA returns the region holding guest physical address a, or nil.
func (t *memTable) findGPA(a uint64) *region {
	for i := range t.regions {
		r := &t.regions[i]
		if a >= r.gpa && a-r.gpa < r.size {
			return r
		}
	}
	return nil
}

// gpaSlice returns the n bytes at guest physical address a when they lie inside one region.
func (t *memTable) gpaSlice(a, n uint64) ([]byte, bool) {
	r := t.findGPA(a)
	if r == nil {
		return nil, false
	}
	off := a - r.gpa
	if n > r.size-off {
		return nil, false
	}
	return r.data[off : off+n : off+n], true
}

// uaddrSlice returns the n bytes at front-end virtual address a when they lie inside one
// region; vring addresses arrive in that address space.
func (t *memTable) uaddrSlice(a, n uint64) ([]byte, bool) {
	for i := range t.regions {
		r := &t.regions[i]
		if a >= r.uaddr && a-r.uaddr < r.size {
			off := a - r.uaddr
			if n > r.size-off {
				return nil, false
			}
			return r.data[off : off+n : off+n], true
		}
	}
	return nil, false
}

// uaddrToGPA translates front-end virtual address a into guest-physical terms; 0 when no
// region holds it (translate has already refused such a ring).
func (t *memTable) uaddrToGPA(a uint64) uint64 {
	for i := range t.regions {
		r := &t.regions[i]
		if a >= r.uaddr && a-r.uaddr < r.size {
			return r.gpa + (a - r.uaddr)
		}
	}
	return 0
}

// checkGPA reports whether [a, a+n) is guest memory, possibly spread over regions that are
// contiguous in guest physical space.
func (t *memTable) checkGPA(a, n uint64) bool {
	if n > math.MaxUint64-a {
		return false
	}
	for n > 0 {
		r := t.findGPA(a)
		if r == nil {
			return false
		}
		k := min(n, r.size-(a-r.gpa))
		a += k
		n -= k
	}
	return true
}

// read copies guest memory at a into dst, crossing region boundaries, and reports false if
// any byte lies outside the table (dst may then be partly written).
func (t *memTable) read(dst []byte, a uint64) bool {
	for len(dst) > 0 {
		r := t.findGPA(a)
		if r == nil {
			return false
		}
		k := copy(dst, r.data[a-r.gpa:])
		dst = dst[k:]
		a += uint64(k)
	}
	return true
}

// write copies src into guest memory at a, crossing region boundaries, and reports false if
// any byte lies outside the table.
func (t *memTable) write(a uint64, src []byte) bool {
	for len(src) > 0 {
		r := t.findGPA(a)
		if r == nil {
			return false
		}
		k := copy(r.data[a-r.gpa:], src)
		src = src[k:]
		a += uint64(k)
	}
	return true
}
