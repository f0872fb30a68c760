package userspace

import (
	"encoding/binary"
	"math/bits"
)

// checksumAdd adds b to the running one's-complement sum (RFC 1071), eight
// bytes at a time: segmenting a 64 KiB packet checksums every byte of it.
func checksumAdd(sum uint64, b []byte) uint64 {
	for len(b) >= 8 {
		sum = add64(sum, binary.BigEndian.Uint64(b))
		b = b[8:]
	}
	for len(b) >= 2 {
		sum = add64(sum, uint64(binary.BigEndian.Uint16(b)))
		b = b[2:]
	}
	if len(b) == 1 {
		sum = add64(sum, uint64(b[0])<<8)
	}
	return sum
}

// add64 adds with the end-around carry of one's-complement arithmetic.
func add64(a, b uint64) uint64 {
	s, carry := bits.Add64(a, b, 0)
	return s + carry
}

// checksumFold folds a running sum to 16 bits, not yet complemented.
func checksumFold(sum uint64) uint16 {
	sum = sum&0xffffffff + sum>>32
	sum = sum&0xffffffff + sum>>32
	sum = sum&0xffff + sum>>16
	sum = sum&0xffff + sum>>16
	return uint16(sum)
}

// pseudoHeaderSum is the sum over the TCP/UDP pseudo-header of a packet whose
// transport part is length bytes long.
func pseudoHeaderSum(src, dst []byte, proto byte, length int) uint64 {
	sum := checksumAdd(0, src)
	sum = checksumAdd(sum, dst)
	return add64(sum, uint64(proto)+uint64(length))
}
