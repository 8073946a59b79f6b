package vhostuser

import (
	"encoding/binary"
	"math/bits"
)

// sumBytes adds b, read as big-endian 16-bit words (an odd last byte is the high half of a
// word), to the ones'-complement accumulator acc (RFC 1071). It works 64 bits at a time
// with the carries added back, so it costs about one add per 8 bytes; fold16 finishes it.
func sumBytes(b []byte, acc uint64) uint64 {
	var c uint64
	for len(b) >= 32 {
		acc, c = bits.Add64(acc, binary.BigEndian.Uint64(b[0:]), c)
		acc, c = bits.Add64(acc, binary.BigEndian.Uint64(b[8:]), c)
		acc, c = bits.Add64(acc, binary.BigEndian.Uint64(b[16:]), c)
		acc, c = bits.Add64(acc, binary.BigEndian.Uint64(b[24:]), c)
		b = b[32:]
	}
	for len(b) >= 8 {
		acc, c = bits.Add64(acc, binary.BigEndian.Uint64(b), c)
		b = b[8:]
	}
	if len(b) >= 4 {
		acc, c = bits.Add64(acc, uint64(binary.BigEndian.Uint32(b)), c)
		b = b[4:]
	}
	if len(b) >= 2 {
		acc, c = bits.Add64(acc, uint64(binary.BigEndian.Uint16(b)), c)
		b = b[2:]
	}
	if len(b) == 1 {
		acc, c = bits.Add64(acc, uint64(b[0])<<8, c)
	}
	acc, c = bits.Add64(acc, c, 0)
	return acc + c
}

// fold16 folds a 64-bit ones'-complement accumulator to 16 bits with end-around carries.
func fold16(acc uint64) uint16 {
	acc = (acc >> 32) + (acc & 0xffffffff)
	acc = (acc >> 32) + (acc & 0xffffffff)
	acc = (acc >> 16) + (acc & 0xffff)
	acc = (acc >> 16) + (acc & 0xffff)
	return uint16(acc)
}

// checksumField is the value stored in a checksum field for accumulator acc: the complement
// of the folded sum, with 0 sent as 0xffff (the same number in ones' complement) as Linux's
// skb_checksum_help does, because 0 means "no checksum" in a UDP header.
func checksumField(acc uint64) uint16 {
	if s := ^fold16(acc); s != 0 {
		return s
	}
	return 0xffff
}
