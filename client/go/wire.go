// SPDX-License-Identifier: MIT

package memguard

// The wire format of docs/protocol.md, version 1: a 16-byte header and a
// typed body, little-endian, one message per SOCK_SEQPACKET datagram.
// Only the messages a service's client sends or receives are here.

import (
	"encoding/binary"
	"fmt"
)

const (
	protoVersion = 1
	headerSize   = 16
	msgMax       = 4096 // bytes in a datagram, header included
	nameMax      = 255
	textMax      = 1024
	throttleMax  = 1000 // ‰

	msgHello     = 0x0001
	msgReport    = 0x0002
	msgReleased  = 0x0003
	msgPong      = 0x0004
	msgBye       = 0x0005
	msgWelcome   = 0x0101
	msgDirective = 0x0102
	msgPing      = 0x0103
	msgError     = 0x0104

	capGCHook      = 0x1
	capReleaseHook = 0x2
	capAdmit       = 0x4

	byeNormal   = 0
	byeShutdown = 1

	errVersion    = 2
	errService    = 3
	errPermission = 4
	errNoService  = 5

	directiveSize = 25
	welcomeFixed  = 20 // client_id, budget, report_interval_ms; service follows
	releaseAll    = ^uint64(0)
)

// message is one decoded datagram from the daemon.
type message struct {
	typ       uint16
	seq       uint32
	welcome   welcome
	directive directive
	cookie    uint64 // PING
	code      uint32 // ERROR
	text      string // ERROR
	reason    uint32 // BYE
}

type welcome struct {
	clientID       uint64
	budget         uint64
	reportInterval uint32 // ms
	service        string
}

// directive is a DIRECTIVE body: the state (level, gcPercent, throttle,
// softLimit) and an event (release bytes by deadline).
type directive struct {
	level      Level
	gcPercent  uint16
	throttle   uint16
	softLimit  uint64
	release    uint64
	deadlineMs uint32
}

// report is a REPORT body.
type report struct {
	heapSys, heapInuse, heapIdle, heapReleased uint64
	external, admitted, rejected               uint64
	releasedTotal                              uint64
	gcPercent                                  uint16
}

// ProtocolError is a datagram from the daemon that does not follow
// docs/protocol.md, or one that is not allowed at that point of the
// session.  The client closes the connection and reconnects.
type ProtocolError struct {
	Reason string
}

// Error describes what was wrong with the daemon's message.
func (e *ProtocolError) Error() string {
	return "malformed message from memguardd: " + e.Reason
}

func malformed(format string, args ...interface{}) error {
	return &ProtocolError{Reason: fmt.Sprintf(format, args...)}
}

// header writes a header for a body of n bytes into b[:16].
func putHeader(b []byte, typ uint16, seq uint32, n int) {
	binary.LittleEndian.PutUint16(b[0:], typ)
	binary.LittleEndian.PutUint16(b[2:], protoVersion)
	binary.LittleEndian.PutUint32(b[4:], uint32(n))
	binary.LittleEndian.PutUint32(b[8:], seq)
	binary.LittleEndian.PutUint32(b[12:], 0)
}

func appendStr(b []byte, s string) []byte {
	b = binary.LittleEndian.AppendUint16(b, uint16(len(s)))
	return append(b, s...)
}

func encode(typ uint16, seq uint32, body []byte) []byte {
	b := make([]byte, headerSize, headerSize+len(body))
	putHeader(b, typ, seq, len(body))
	return append(b, body...)
}

func encodeHello(seq, caps uint32, service, process string) []byte {
	body := binary.LittleEndian.AppendUint32(nil, caps)
	body = appendStr(body, service)
	body = appendStr(body, process)
	return encode(msgHello, seq, body)
}

// encodeReport encodes a REPORT; flags go in the header (flagLocalLimit).
func encodeReport(seq, flags uint32, r *report) []byte {
	body := make([]byte, 0, 66)
	for _, v := range []uint64{r.heapSys, r.heapInuse, r.heapIdle, r.heapReleased,
		r.external, r.admitted, r.rejected, r.releasedTotal} {
		body = binary.LittleEndian.AppendUint64(body, v)
	}
	body = binary.LittleEndian.AppendUint16(body, r.gcPercent)
	b := encode(msgReport, seq, body)
	binary.LittleEndian.PutUint32(b[12:], flags)
	return b
}

func encodeReleased(seq, directiveSeq uint32, bytes, usec uint64) []byte {
	body := binary.LittleEndian.AppendUint32(nil, directiveSeq)
	body = binary.LittleEndian.AppendUint64(body, bytes)
	body = binary.LittleEndian.AppendUint64(body, usec)
	return encode(msgReleased, seq, body)
}

func encodePong(seq uint32, cookie uint64) []byte {
	return encode(msgPong, seq, binary.LittleEndian.AppendUint64(nil, cookie))
}

func encodeBye(seq, reason uint32) []byte {
	return encode(msgBye, seq, binary.LittleEndian.AppendUint32(nil, reason))
}

// validName says whether s may travel as a name: printable ASCII, at most
// 255 bytes.
func validName(s string) bool {
	if len(s) > nameMax {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] > 0x7e {
			return false
		}
	}
	return true
}

// readStr reads a string at b[off:]: its bytes and the offset after it.
func readStr(b []byte, off, max int, name bool) (string, int, error) {
	if off+2 > len(b) {
		return "", 0, malformed("body ends inside a string's length")
	}
	n := int(binary.LittleEndian.Uint16(b[off:]))
	off += 2
	if n > max {
		return "", 0, malformed("string of %d bytes, over its maximum of %d", n, max)
	}
	if off+n > len(b) {
		return "", 0, malformed("string of %d bytes runs past the body", n)
	}
	s := b[off : off+n]
	for _, c := range s {
		if c == 0 || (name && (c < 0x20 || c > 0x7e)) {
			return "", 0, malformed("string holds the byte 0x%02x", c)
		}
	}
	return string(s), off + n, nil
}

func decodeDirective(b []byte) (directive, error) {
	var d directive

	if len(b) < directiveSize {
		return d, malformed("DIRECTIVE body of %d bytes, under %d", len(b), directiveSize)
	}
	d.level = Level(b[0])
	d.gcPercent = binary.LittleEndian.Uint16(b[1:])
	d.throttle = binary.LittleEndian.Uint16(b[3:])
	d.softLimit = binary.LittleEndian.Uint64(b[5:])
	d.release = binary.LittleEndian.Uint64(b[13:])
	d.deadlineMs = binary.LittleEndian.Uint32(b[21:])
	if d.level > Emergency {
		return d, malformed("level %d out of range", d.level)
	}
	if d.throttle > throttleMax {
		return d, malformed("throttle %d out of range", d.throttle)
	}
	return d, nil
}

// decode checks a datagram as §6 of docs/protocol.md says (header, then
// version, then type, then body) and decodes what a client receives.
// Bytes after the fields it knows are ignored.
func decode(b []byte) (*message, error) {
	var err error

	if len(b) < headerSize {
		return nil, malformed("datagram of %d bytes, shorter than a header", len(b))
	}
	m := &message{typ: binary.LittleEndian.Uint16(b[0:]), seq: binary.LittleEndian.Uint32(b[8:])}
	if n := binary.LittleEndian.Uint32(b[4:]); int64(n) != int64(len(b)-headerSize) {
		return nil, malformed("header length %d for a body of %d bytes", n, len(b)-headerSize)
	}
	if v := binary.LittleEndian.Uint16(b[2:]); v != protoVersion {
		return nil, malformed("protocol version %d", v)
	}
	body := b[headerSize:]
	short := func(min int) error {
		if len(body) < min {
			return malformed("body of type 0x%04x is %d bytes, under %d", m.typ, len(body), min)
		}
		return nil
	}
	switch m.typ {
	case msgWelcome:
		if err = short(welcomeFixed); err != nil {
			return nil, err
		}
		m.welcome.clientID = binary.LittleEndian.Uint64(body[0:])
		m.welcome.budget = binary.LittleEndian.Uint64(body[8:])
		m.welcome.reportInterval = binary.LittleEndian.Uint32(body[16:])
		m.welcome.service, _, err = readStr(body, welcomeFixed, nameMax, true)
	case msgDirective:
		m.directive, err = decodeDirective(body)
	case msgPing:
		if err = short(8); err == nil {
			m.cookie = binary.LittleEndian.Uint64(body)
		}
	case msgError:
		if err = short(4); err == nil {
			m.code = binary.LittleEndian.Uint32(body)
			m.text, _, err = readStr(body, 4, textMax, false)
		}
	case msgBye:
		if err = short(4); err == nil {
			m.reason = binary.LittleEndian.Uint32(body)
		}
	case msgHello, msgReport, msgReleased, msgPong,
		0x0201, 0x0202, 0x0203, 0x0204, 0x0205, 0x0301, 0x0302, 0x0303, 0x0304:
		// Known types, but none a daemon sends to a client: the caller
		// refuses them as unexpected.
	default:
		return nil, malformed("unknown message type 0x%04x", m.typ)
	}
	if err != nil {
		return nil, err
	}
	return m, nil
}
