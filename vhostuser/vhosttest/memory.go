// Package vhosttest is an in-process vhost-user front end for tests: guest memory in a
// memfd, a control connection over a socketpair or a unix socket, and a driver-side split
// virtqueue. It does not import vhostuser, so it checks the back end against an
// independent reading of the protocol. Everything on the ring path allocates nothing, so
// benchmarks through it measure the back end.
package vhosttest

import (
	"fmt"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Region is one guest memory region as the front end describes it in SET_MEM_TABLE.
type Region struct {
	GPA      uint64 // guest physical address
	Size     uint64
	UserAddr uint64 // the front end's (made-up) virtual address of the region
	Offset   uint64 // offset in the memfd
}

// Memory is guest RAM: one memfd mapped here, described to the back end as one or two
// regions. Two regions are contiguous in guest-physical space but not in user address
// space, so a buffer may straddle them and a ring address must go through UserAddr.
type Memory struct {
	FD      int
	Bytes   []byte // the whole memfd; guest physical address GPA(i) is Bytes[i]
	Regions []Region
	Base    uint64 // guest physical address of Bytes[0]
	next    uint64
}

// NewMemory creates size bytes of guest memory (a multiple of 8 KiB), split into two
// regions when split is set.
func NewMemory(size int, split bool) (*Memory, error) {
	return newMemory(size, split, false)
}

// NewSealedMemory is NewMemory with the memfd sealed against shrinking and growing
// (F_SEAL_SHRINK|F_SEAL_GROW), as QEMU's memory-backend-memfd seals it by default.
func NewSealedMemory(size int, split bool) (*Memory, error) {
	return newMemory(size, split, true)
}

// newMemory creates the memfd, sized and sealed if asked, and maps it.
func newMemory(size int, split, sealed bool) (*Memory, error) {
	flags := unix.MFD_CLOEXEC
	if sealed {
		flags |= unix.MFD_ALLOW_SEALING
	}
	fd, err := unix.MemfdCreate("vhosttest-guest", flags)
	if err != nil {
		return nil, err
	}
	if err := unix.Ftruncate(fd, int64(size)); err != nil {
		unix.Close(fd)
		return nil, err
	}
	if sealed {
		if _, err := unix.FcntlInt(uintptr(fd), unix.F_ADD_SEALS, unix.F_SEAL_SHRINK|unix.F_SEAL_GROW); err != nil {
			unix.Close(fd)
			return nil, err
		}
	}
	b, err := unix.Mmap(fd, 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		unix.Close(fd)
		return nil, err
	}
	m := &Memory{FD: fd, Bytes: b, Base: 0x40000000, next: 4096}
	if split {
		h := uint64(size / 2)
		m.Regions = []Region{
			{GPA: m.Base, Size: h, UserAddr: 0x7f0000000000, Offset: 0},
			{GPA: m.Base + h, Size: h, UserAddr: 0x7e0000000000, Offset: h},
		}
	} else {
		m.Regions = []Region{{GPA: m.Base, Size: uint64(size), UserAddr: 0x7f0000000000}}
	}
	return m, nil
}

// Close unmaps the memory and closes the memfd.
func (m *Memory) Close() {
	unix.Munmap(m.Bytes)
	unix.Close(m.FD)
}

// Alloc reserves n bytes aligned to align and returns their guest physical address.
func (m *Memory) Alloc(n, align uint64) uint64 {
	off := (m.next + align - 1) &^ (align - 1)
	if off+n > uint64(len(m.Bytes)) {
		panic(fmt.Sprintf("vhosttest: guest memory exhausted (%d + %d)", off, n))
	}
	m.next = off + n
	return m.Base + off
}

// AllocAt reserves n bytes at the guest physical address gpa, for tests that need a
// buffer at a particular place (e.g. across the region boundary); it does not check overlap.
func (m *Memory) AllocAt(gpa, n uint64) uint64 {
	if end := gpa - m.Base + n; end > m.next {
		m.next = end
	}
	return gpa
}

// At returns the n bytes at guest physical address gpa.
func (m *Memory) At(gpa, n uint64) []byte {
	off := gpa - m.Base
	return m.Bytes[off : off+n : off+n]
}

// UserAddr translates a guest physical address into the front end's virtual address, as
// QEMU does for SET_VRING_ADDR.
func (m *Memory) UserAddr(gpa uint64) uint64 {
	for _, r := range m.Regions {
		if gpa >= r.GPA && gpa-r.GPA < r.Size {
			return r.UserAddr + gpa - r.GPA
		}
	}
	panic(fmt.Sprintf("vhosttest: gpa %#x outside guest memory", gpa))
}

// word returns the aligned 32-bit word holding the u16 at gpa and the shift of that u16.
func (m *Memory) word(gpa uint64) (*uint32, uint) {
	off := gpa - m.Base
	w := off &^ 3
	return (*uint32)(unsafe.Pointer(&m.Bytes[w])), uint(off-w) * 8
}

// Load16 atomically reads the little-endian u16 at gpa.
func (m *Memory) Load16(gpa uint64) uint16 {
	p, sh := m.word(gpa)
	return uint16(atomic.LoadUint32(p) >> sh)
}

// Store16 atomically replaces the little-endian u16 at gpa, keeping the other half of its
// word, with the full ordering of a Go atomic.
func (m *Memory) Store16(gpa uint64, v uint16) {
	p, sh := m.word(gpa)
	for {
		old := atomic.LoadUint32(p)
		nw := old&^(0xffff<<sh) | uint32(v)<<sh
		if atomic.CompareAndSwapUint32(p, old, nw) {
			return
		}
	}
}
