package agent

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log"
	"log/slog"
	"net/netip"
	"os"
	"syscall"
	"time"

	"github.com/vishvananda/netns"

	"github.com/emu-lab/emu/internal/ipsec"
	"github.com/emu-lab/emu/internal/ipsec/ike"
	"github.com/emu-lab/emu/internal/ipsec/kernel"
)

// ikeKeyer is a dataplane the SAs of IKE endpoints key: the userspace
// engine (userspace.Dataplane) or the kernel's XFRM (kernel.IKE).
type ikeKeyer interface {
	ListenIKE(ike.Options) (*ike.Endpoint, error)
}

// openXFRM returns the keyer of the node's IKE-keyed kernel tunnels, in
// the namespace the agent runs in.
func openXFRM(tunnels []kernel.Tunnel, logger *log.Logger) (*kernel.IKE, error) {
	ns, err := netns.Get()
	if err != nil {
		return nil, fmt.Errorf("xfrm: own network namespace: %w", err)
	}
	defer ns.Close()
	d, err := kernel.Open(ns)
	if err != nil {
		return nil, fmt.Errorf("xfrm: %w", err)
	}
	// d lives as long as the worker: the endpoints use it until they close.
	k, err := kernel.NewIKE(d, tunnels, logger)
	if err != nil {
		d.Close()
	}
	return k, err
}

// startIKE runs one IKE endpoint per local address of the IKE-keyed
// tunnels, keying the dataplane's tunnels with what it negotiates. It
// returns the endpoints started so far also on error, for the caller to
// close.
// A restarted worker negotiates its responder connections too, once: the
// peer still holds the IKE SA the old worker had and would otherwise notice
// only when its DPD gives up.
func startIKE(dp ikeKeyer, tunnels []ipsec.Conn, cfg Config, logger *log.Logger, restarted bool) ([]*ike.Endpoint, error) {
	ikeLog := slog.New(slog.NewTextHandler(logger.Writer(), nil)).With("lab", cfg.Lab, "node", cfg.Node)
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
				Log:  ikeLog,
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
		if restarted && !t.IKE.Initiate {
			e.Connect(t.Name)
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

// SAsPath is where the agent with that config file stores the keys of the
// CHILD SAs its IKE endpoints negotiated (0600), for `emu trace`, the path
// check and Wireshark to decrypt captures as they do for static keys.
func SAsPath(configPath string) string { return sibling(configPath, ".sas.json") }

// saveSAs writes the negotiated SAs as connections with their keys filled
// in, when they changed since last; last is the previous file content.
func saveSAs(configPath string, tunnels []ipsec.Conn, endpoints []*ike.Endpoint, last []byte) []byte {
	byName := map[string]ike.ChildSA{}
	for _, e := range endpoints {
		for _, c := range e.ChildSAs() {
			byName[c.Conn] = c
		}
	}
	var conns []ipsec.Conn
	for _, t := range tunnels {
		c, ok := byName[t.Name]
		if t.IKE == nil || !ok {
			continue
		}
		t.IKE = nil // the PSK stays in the agent's config only
		t.Out = ipsec.SA{SPI: c.Out.SPI, EncKey: c.Out.EncKey, AuthKey: c.Out.AuthKey}
		t.In = ipsec.SA{SPI: c.In.SPI, EncKey: c.In.EncKey, AuthKey: c.In.AuthKey}
		conns = append(conns, t)
	}
	data, err := json.Marshal(conns)
	if err != nil || bytes.Equal(data, last) {
		return last
	}
	path := SAsPath(configPath)
	tmp := tmpPath(path)
	os.Remove(tmp)
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL|syscall.O_NOFOLLOW, 0o600)
	if err != nil {
		return last
	}
	_, werr := f.Write(data)
	if cerr := f.Close(); werr != nil || cerr != nil || os.Rename(tmp, path) != nil {
		os.Remove(tmp)
		return last
	}
	return data
}
