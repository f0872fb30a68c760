package topology

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
)

// checkExternalTunnel checks an IPsec end that software in the node runs
// (strongSwan, say) against its emu peer pt. emu cannot read that
// software's configuration, so the end declares what the peer needs to
// know, and it must be what the peer is configured with: the IKE proposals,
// identities and subnets mirrored, and the same PSK, given (a generated key
// would reach only emu's end).
func (r *resolver) checkExternalTunnel(n *Node, t, pt *Tunnel, peer *Node) {
	where := fmt.Sprintf("node %q connection %s (run by %s)", n.Name, t.Name, t.Speaker)
	if pt.External() {
		r.at(t.Line, "%s: the other end on %q (line %d) is run by %s: emu must run one end of a connection to emulate the cloud's; remove `speaker:` from one of them", where, peer.Name, pt.Line, pt.Speaker)
		return
	}
	if !n.Software.Runs() && n.Runtime == RuntimeNamespace {
		r.at(t.Line, "%s runs in the node, but the node runs no program: add `daemons:` that start it (e.g. {name: charon, command: /usr/lib/ipsec/charon}), or remove `speaker:` to let emu run this end", where)
	}
	if t.Address.IsValid() {
		r.at(t.Line, "%s: emu does not make the tunnel interface of an end it does not run, so it cannot give it `address: %s`: remove it here and on %q (line %d), or let %s address its own interface", where, t.Address, peer.Name, pt.Line, t.Speaker)
	}
	for _, rt := range n.Routes {
		if rt.Dev == t.Interface {
			r.at(rt.Line, "node %q route %s dev %s: %s makes that interface after emu installs the node's routes: let %s route into it (strongSwan: install_routes, its default), or route via an address", n.Name, rt.Dst, rt.Dev, t.Speaker, t.Speaker)
		}
	}
	// The agent's probe cannot run where emu runs no agent for the tunnel.
	t.DPD = nil
	if t.IKE == nil || pt.IKE == nil {
		if t.IKE == nil && pt.IKE == nil {
			r.at(t.Line, "%s: an end run by software is keyed by IKE: give both ends an `ike:` block (ike-version: ikev2, the proposals and the psk of %s's configuration)", where, t.Speaker)
		}
		return // one block missing: checkIKE said so
	}
	k, pk := t.IKE, pt.IKE
	switch {
	case k.PSK == KeyGenerate:
		r.at(k.Line, "%s ike: psk %q would make a key only emu's end knows: write the PSK of %s's configuration (e.g. the secret in swanctl.conf), and the same on %q (line %d)", where, KeyGenerate, t.Speaker, peer.Name, pk.Line)
	case pk.PSK == KeyGenerate:
		r.at(pk.Line, "node %q connection %s ike: psk %q would make a key %s on %q never gets: write the one %s's configuration holds (given at line %d)", peer.Name, pt.Name, KeyGenerate, t.Speaker, n.Name, t.Speaker, k.Line)
	case k.PSK != pk.PSK:
		r.at(k.Line, "%s ike: psk differs from the one on %q (line %d): give the VPN gateway's end the PSK of %s's configuration", where, peer.Name, pk.Line, t.Speaker)
	}
	var diff []string
	for _, f := range []struct{ name, here, there string }{
		{"ike-enc-alg", k.IKEEncAlg, pk.IKEEncAlg},
		{"ike-auth-alg", k.IKEAuthAlg, pk.IKEAuthAlg},
		{"ike-pfs", k.IKEPFS, pk.IKEPFS},
		{"ipsec-enc-alg", k.IPsecEncAlg, pk.IPsecEncAlg},
		{"ipsec-auth-alg", k.IPsecAuthAlg, pk.IPsecAuthAlg},
		{"ipsec-pfs", k.IPsecPFS, pk.IPsecPFS},
		{"local-id", identity(k.LocalID, t.Local.String()), identity(pk.RemoteID, pt.Remote.String())},
		{"remote-id", identity(k.RemoteID, t.Remote.String()), identity(pk.LocalID, pt.Local.String())},
		{"local-subnets", subnets(k.LocalSubnets), subnets(pk.RemoteSubnets)},
		{"remote-subnets", subnets(k.RemoteSubnets), subnets(pk.LocalSubnets)},
	} {
		if f.here != f.there {
			diff = append(diff, fmt.Sprintf("%s %s here, %s on %q", f.name, f.here, f.there, peer.Name))
		}
	}
	if len(diff) > 0 {
		r.at(k.Line, "%s ike: %s: this block says what %s is configured with, and the VPN gateway's end (line %d) must mirror it (its local-id and local-subnets are this end's remote ones): make them agree", where, strings.Join(diff, "; "), t.Speaker, pk.Line)
	}
}

// identity is an IKE identity as configured, or the endpoint it defaults to.
func identity(id, endpoint string) string {
	if id == "" {
		return endpoint
	}
	return id
}

// subnets spells a list of traffic selectors; none means 0.0.0.0/0.
func subnets(ps []netip.Prefix) string {
	if len(ps) == 0 {
		return "[0.0.0.0/0]"
	}
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = p.String()
	}
	slices.Sort(s)
	return "[" + strings.Join(s, ",") + "]"
}
