package queue

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"io"
)

// Record framing, little endian:
//
//	offset 0  u32  payload length
//	offset 4  u32  CRC-32C (Castagnoli) over bytes 0..3, 8..15 and the payload
//	offset 8  u64  sequence number
//	offset 16      payload
const headerLen = 16

// MaxRecord is the largest accepted payload in bytes.
const MaxRecord = 1 << 20

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

func checksum(h []byte, payload []byte) uint32 {
	c := crc32.Update(0, castagnoli, h[0:4])
	c = crc32.Update(c, castagnoli, h[8:16])
	return crc32.Update(c, castagnoli, payload)
}

// encode frames one record.
func encode(seq uint64, payload []byte) []byte { return encodeInto(nil, seq, payload) }

// encodeInto frames one record into dst's storage (grown as needed) and
// returns the frame.
func encodeInto(dst []byte, seq uint64, payload []byte) []byte {
	n := headerLen + len(payload)
	if cap(dst) < n {
		dst = make([]byte, n)
	}
	b := dst[:n]
	binary.LittleEndian.PutUint32(b[0:4], uint32(len(payload)))
	binary.LittleEndian.PutUint64(b[8:16], seq)
	copy(b[headerLen:], payload)
	binary.LittleEndian.PutUint32(b[4:8], checksum(b[:headerLen], payload))
	return b
}

// readRecord reads and verifies one record from r. It returns io.EOF at a
// clean end (no byte read), an error wrapping ErrCorrupt for a short or
// invalid record. The payload is stored in *dst when dst is non-nil; a
// record is returned only when its CRC verified.
func readRecord(r io.Reader, dst *[]byte) (seq uint64, payloadLen int, err error) {
	var h [headerLen]byte
	if n, err := io.ReadFull(r, h[:]); err != nil {
		if n == 0 && err == io.EOF {
			return 0, 0, io.EOF
		}
		if err == io.ErrUnexpectedEOF {
			return 0, 0, fmt.Errorf("%w: short header (%d of %d bytes)", ErrCorrupt, n, headerLen)
		}
		return 0, 0, err
	}
	n := binary.LittleEndian.Uint32(h[0:4])
	sum := binary.LittleEndian.Uint32(h[4:8])
	seq = binary.LittleEndian.Uint64(h[8:16])
	if n > MaxRecord {
		return 0, 0, fmt.Errorf("%w: length %d exceeds %d", ErrCorrupt, n, MaxRecord)
	}
	p := make([]byte, n)
	if got, err := io.ReadFull(r, p); err != nil {
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			return 0, 0, fmt.Errorf("%w: short payload (%d of %d bytes)", ErrCorrupt, got, n)
		}
		return 0, 0, err
	}
	if c := checksum(h[:], p); c != sum {
		return 0, 0, fmt.Errorf("%w: checksum mismatch at seq %d", ErrCorrupt, seq)
	}
	if dst != nil {
		*dst = p
	}
	return seq, int(n), nil
}
