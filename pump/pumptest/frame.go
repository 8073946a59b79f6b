package pumptest

import (
	"bytes"
	"encoding/binary"
)

// FrameN builds a recognisable frame of size n (at least 4) carrying the
// number i in its first four bytes.
func FrameN(i, n int) []byte {
	f := make([]byte, n)
	for j := range f {
		f[j] = byte(j)
	}
	binary.BigEndian.PutUint32(f[0:], uint32(i))
	return f
}

// EncodeStream renders frames in QEMU's -netdev stream framing: each one
// behind its length as 4 bytes, big-endian.
func EncodeStream(frames ...[]byte) []byte {
	var b bytes.Buffer
	for _, f := range frames {
		binary.Write(&b, binary.BigEndian, uint32(len(f)))
		b.Write(f)
	}
	return b.Bytes()
}
