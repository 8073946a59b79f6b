package vhostuser

import "fmt"

// maxMemSlots is how many regions this back end accepts with CONFIGURE_MEM_SLOTS.
const maxMemSlots = 32

// getMaxMemSlots answers how many regions ADD_MEM_REG may build up.
func (s *session) getMaxMemSlots(*message) ([]byte, error) {
	return s.u64Reply(maxMemSlots), nil
}

// addMemReg maps one more region and installs a copy of the table that holds it; the
// table is never changed in place, so workers keep seeing a consistent one.
func (s *session) addMemReg(m *message) ([]byte, error) {
	d := m.memReg()
	var n int
	if s.mem != nil {
		n = len(s.mem.regions)
	}
	if n >= maxMemSlots {
		return nil, protoErr(reqAddMemReg, "more than %d regions", maxMemSlots)
	}
	added, err := mapRegions([]memRegion{d}, m.fds)
	if err != nil {
		return nil, fmt.Errorf("vhostuser: ADD_MEM_REG: %w", err)
	}
	t := &memTable{regions: make([]region, 0, n+1)}
	if s.mem != nil {
		t.regions = append(t.regions, s.mem.regions...)
	}
	t.regions = append(t.regions, added.regions[0])
	s.swapMem(t)
	s.log.Debug("vhostuser: region added", "gpa", fmt.Sprintf("%#x", d.gpa), "size", d.size,
		"sealed_against_shrinking", added.regions[0].sealed)
	return nil, nil
}

// remMemReg installs a copy of the table without the region matching guest address, size
// and user address, then unmaps that region.
func (s *session) remMemReg(m *message) ([]byte, error) {
	d := m.memReg()
	if s.mem == nil {
		return nil, protoErr(reqRemMemReg, "no memory table")
	}
	t := &memTable{regions: make([]region, 0, len(s.mem.regions))}
	for _, r := range s.mem.regions {
		if r.gpa != d.gpa || r.size != d.size || r.uaddr != d.uaddr {
			t.regions = append(t.regions, r)
		}
	}
	if len(t.regions) == len(s.mem.regions) {
		return nil, protoErr(reqRemMemReg, "no region at gpa %#x size %#x", d.gpa, d.size)
	}
	s.swapMem(t)
	s.log.Debug("vhostuser: region removed", "gpa", fmt.Sprintf("%#x", d.gpa), "size", d.size)
	return nil, nil
}
