package pumptest

import "encoding/binary"

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
