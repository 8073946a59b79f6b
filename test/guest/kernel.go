package guest

import (
	"bytes"
	"compress/gzip"
	"debug/elf"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os/exec"
)

// xenElfnotePhys32Entry is the ELF note (owner "Xen") that marks a kernel
// QEMU can start directly in 32-bit protected mode (PVH).
const xenElfnotePhys32Entry = 18

// pvhKernel extracts the ELF vmlinux from a bzImage and checks that it has
// a PVH entry point. QEMU boots such a vmlinux without SeaBIOS's Linux
// loader and without the kernel decompressing itself, which under TCG saves
// seconds per boot.
func pvhKernel(bzImage []byte) ([]byte, error) {
	if len(bzImage) < 0x250 || string(bzImage[0x202:0x206]) != "HdrS" {
		return nil, errors.New("not a bzImage")
	}
	setupSects := int(bzImage[0x1f1])
	if setupSects == 0 {
		setupSects = 4
	}
	off := int(binary.LittleEndian.Uint32(bzImage[0x248:]))
	n := int(binary.LittleEndian.Uint32(bzImage[0x24c:]))
	start := (setupSects+1)*512 + off
	if start < 0 || n <= 0 || start+n > len(bzImage) {
		return nil, errors.New("bzImage payload out of bounds")
	}
	payload := bzImage[start : start+n]
	var vmlinux []byte
	var err error
	switch {
	case bytes.HasPrefix(payload, []byte{0xfd, '7', 'z', 'X', 'Z', 0}):
		vmlinux, err = decompressWith(payload, "xz", "-dc", "--single-stream")
	case bytes.HasPrefix(payload, []byte{0x28, 0xb5, 0x2f, 0xfd}):
		vmlinux, err = decompressWith(payload, "zstd", "-dc")
	case bytes.HasPrefix(payload, []byte{0x1f, 0x8b}):
		var zr *gzip.Reader
		if zr, err = gzip.NewReader(bytes.NewReader(payload)); err == nil {
			zr.Multistream(false)
			vmlinux, err = io.ReadAll(zr)
		}
	default:
		return nil, fmt.Errorf("unknown bzImage compression % x", payload[:4])
	}
	if err != nil {
		return nil, err
	}
	ok, err := hasPVHNote(vmlinux)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, errors.New("vmlinux has no PVH entry note")
	}
	return vmlinux, nil
}

func decompressWith(data []byte, tool string, args ...string) ([]byte, error) {
	cmd := exec.Command(tool, args...)
	cmd.Stdin = bytes.NewReader(data)
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("%s %v: %w", tool, args, err)
	}
	return out, nil
}

// hasPVHNote reports whether an ELF kernel carries XEN_ELFNOTE_PHYS32_ENTRY.
func hasPVHNote(vmlinux []byte) (bool, error) {
	f, err := elf.NewFile(bytes.NewReader(vmlinux))
	if err != nil {
		return false, err
	}
	for _, p := range f.Progs {
		if p.Type != elf.PT_NOTE {
			continue
		}
		notes, err := io.ReadAll(p.Open())
		if err != nil {
			return false, err
		}
		for len(notes) >= 12 {
			nameSz := int(f.ByteOrder.Uint32(notes[0:]))
			descSz := int(f.ByteOrder.Uint32(notes[4:]))
			typ := f.ByteOrder.Uint32(notes[8:])
			align := func(n int) int { return (n + 3) &^ 3 }
			end := 12 + align(nameSz) + align(descSz)
			if nameSz < 0 || descSz < 0 || end > len(notes) {
				break
			}
			name := string(bytes.TrimRight(notes[12:12+nameSz], "\x00"))
			if name == "Xen" && typ == xenElfnotePhys32Entry {
				return true, nil
			}
			notes = notes[end:]
		}
	}
	return false, nil
}
