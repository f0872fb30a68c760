package agent

import (
	"fmt"
	"log"
	"log/slog"
	"net/netip"
	"time"

	"github.com/emu-lab/emu/internal/ipsec"
	"github.com/emu-lab/emu/internal/ipsec/ike"
	"github.com/emu-lab/emu/internal/ipsec/userspace"
)

// startIKE runs one IKE endpoint per local address of the IKE-keyed
// tunnels, keying the dataplane's tunnels with what it negotiates. It
// returns the endpoints started so far also on error, for the caller to
// close.
func startIKE(dp *userspace.Dataplane, tunnels []ipsec.Conn, logger *log.Logger) ([]*ike.Endpoint, error) {
	byAddr := map[netip.Addr]*ike.Endpoint{}
	var out []*ike.Endpoint
	for _, t := range tunnels {
		if t.IKE == nil {
			continue
		}
		e := byAddr[t.Local]
		if e == nil {
			var err error
			e, err = dp.ListenIKE(ike.Options{
				Addr: t.Local,
				Log:  slog.New(slog.NewTextHandler(logger.Writer(), nil)).With("node", logger.Prefix()),
				// A dead peer is declared after 0.3+0.6+1.2+2.4 s of silence.
				RetransmitBase: 300 * time.Millisecond, RetransmitTries: 4, RetryAfter: 2 * time.Second,
			})
			if err != nil {
				return out, fmt.Errorf("connection %s: %w", t.Name, err)
			}
			byAddr[t.Local] = e
			out = append(out, e)
		}
		if err := e.Add(*t.IKE); err != nil {
			return out, err
		}
		logger.Printf("tunnel %s: %s %s → %s keyed by IKEv2 (%s)", t.Name, t.Interface, t.Local, t.Remote, map[bool]string{true: "initiator", false: "responder"}[t.IKE.Initiate])
	}
	return out, nil
}

// ikeState gathers what the endpoints publish.
func ikeState(endpoints []*ike.Endpoint) ([]ike.Status, *ike.Counters) {
	var st []ike.Status
	var sum ike.Counters
	for _, e := range endpoints {
		st = append(st, e.Status()...)
		c := e.Counters()
		sum.Received += c.Received
		sum.Malformed += c.Malformed
		sum.UnknownSA += c.UnknownSA
		sum.BadIntegrity += c.BadIntegrity
		sum.Retransmitted += c.Retransmitted
	}
	return st, &sum
}
