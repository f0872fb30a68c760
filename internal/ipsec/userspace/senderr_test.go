package userspace

import (
	"bytes"
	"errors"
	"log"
	"net"
	"strings"
	"syscall"
	"testing"
)

// A fresh agent's tunnel sends before its routes exist: the reviewer saw
// "sendmmsg: network is unreachable" per batch. It is logged once per
// tunnel until a send succeeds, which is logged with the count.
func TestSendErrors_LoggedOncePerTunnelUntilASendSucceeds(t *testing.T) {
	var out bytes.Buffer
	s := sendErrors{log: log.New(&out, "", 0), tunnel: "to-vpc"}
	dst := &net.UDPAddr{IP: net.IPv4(10, 0, 0, 2)}
	unreachable := &net.OpError{Op: "sendmmsg", Err: syscall.ENETUNREACH}
	for range 1000 {
		s.report(dst, unreachable)
	}
	s.report(dst, nil)
	s.report(dst, nil)
	s.report(dst, unreachable)
	s.report(dst, errors.New("message too long"))
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	want := []string{
		"to-vpc: send to 10.0.0.2:0: sendmmsg: network is unreachable (logged once until a send succeeds)",
		"to-vpc: send to 10.0.0.2:0 works again, after 1000 failed batches",
		"to-vpc: send to 10.0.0.2:0: sendmmsg: network is unreachable (logged once until a send succeeds)",
		"to-vpc: send to 10.0.0.2:0: message too long (logged once until a send succeeds)",
	}
	if strings.Join(lines, "\n") != strings.Join(want, "\n") {
		t.Fatalf("logged:\n%s\nwant:\n%s", out.String(), strings.Join(want, "\n"))
	}
}
