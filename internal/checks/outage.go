package checks

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/emu-lab/emu/internal/capture"
	"github.com/emu-lab/emu/internal/probe"
	"github.com/emu-lab/emu/internal/topology"
)

// outageUDP and outagePings are what observeOutage sends: enough to count,
// few enough to take about a second.
const (
	outageUDP     = 5
	outagePings   = 3
	outageUDPPort = 40124
)

// outageWire is what the wire carried, measured, while a broken tunnel
// stopped round trips: "traffic stops" may hold while one direction still
// gets through in clear (method 1 with the on-premises gateway's DPD: its
// tunnel route is gone, the VPC's route to the VPN gateway is not).
type outageWire struct {
	udpSent, udpArrived int // datagrams from the data center's host, and how many its peer received
	pings               int // echo requests sent, to draw replies
	// Requests (dc → cloud host) and replies (cloud host → dc) in clear on
	// the private path, where they were seen, and with the marker.
	reqPrivate, repPrivate int
	reqWhere               []string
	markerPrivate          int
	// Replies arriving at the tunnel's cloud end (the VPN gateway), and how
	// many distinct packets they were: more frames than packets is a loop.
	repGateway, repGatewayDistinct int
	incomplete                     error
}

// observeOutage sends outageUDP datagrams carrying a marker and outagePings
// echo requests from dc to cloud, capturing on the private path, on cloud's
// interfaces and on gateway's (the connection's cloud end), and counts what
// crossed where. It changes nothing in the lab.
func observeOutage(ctx context.Context, l Lab, dc, cloud host, gateway *topology.Node) (outageWire, error) {
	var w outageWire
	var eps []capture.Endpoint
	for _, n := range l.Topology.Nodes {
		if !n.Roles.PrivatePath && n != cloud.node && n != gateway {
			continue
		}
		for _, ifc := range n.Interfaces {
			if ifc.Name != topology.Loopback {
				eps = append(eps, capture.Endpoint{NS: l.NS(n.Name), Interface: ifc.Name})
			}
		}
	}
	g, err := capture.StartMany(ctx, eps, capture.Options{})
	if err != nil {
		return w, fmt.Errorf("start captures: %w", err)
	}
	marker := probe.Marker()
	w.udpSent = outageUDP
	w.udpArrived, err = probe.UDPFlows(l.NS(dc.node.Name), l.NS(cloud.node.Name), netip.AddrPortFrom(cloud.addr, outageUDPPort), outageUDP, outageUDPPort, 64, marker)
	for range outagePings {
		if _, perr := probe.Ping(l.NS(dc.node.Name), cloud.addr, 200*time.Millisecond); perr == nil {
			break // a round trip: the outage is over, nothing to explain
		}
		w.pings++
	}
	if serr := g.Stop(); err == nil {
		err = serr
	}
	if err != nil {
		return w, err
	}
	nodeOf := map[string]*topology.Node{}
	for _, n := range l.Topology.Nodes {
		nodeOf[l.NS(n.Name)] = n
	}
	w.count(g.Packets(), nodeOf, dc.addr, cloud.addr, gateway, []byte(marker))
	w.incomplete = g.Incomplete()
	return w, nil
}

// count sorts the captured frames: clear requests and replies on the
// private path, replies arriving at the gateway (each distinct packet once
// by its bytes after the IP header, which a loop does not change).
func (w *outageWire) count(pkts []capture.Packet, nodeOf map[string]*topology.Node, dc, cloud netip.Addr, gateway *topology.Node, marker []byte) {
	distinct := map[string]bool{}
	for _, p := range pkts {
		n := nodeOf[p.NS]
		h, err := p.Decode()
		if n == nil || err != nil || h.ESP {
			continue
		}
		switch {
		case n.Roles.PrivatePath && h.Src == dc && h.Dst == cloud:
			w.reqPrivate++
			if where := n.Name + ":" + p.Interface; !slices.Contains(w.reqWhere, where) {
				w.reqWhere = append(w.reqWhere, where)
			}
			if p.ContainsBytes(marker) {
				w.markerPrivate++
			}
		case n.Roles.PrivatePath && h.Src == cloud && h.Dst == dc:
			w.repPrivate++
		case n == gateway && !p.Outgoing && h.Src == cloud && h.Dst == dc:
			w.repGateway++
			if key, ok := ipPayload(p.Data); ok && !distinct[string(key)] {
				distinct[string(key)] = true
				w.repGatewayDistinct++
			}
		}
	}
}

// ipPayload returns what follows the IP header of an Ethernet frame (IPv4
// with its options, or IPv6's fixed header), cut to the IP length; ok is
// false for a frame too short for the header it announces.
func ipPayload(frame []byte) ([]byte, bool) {
	const eth = 14
	if len(frame) < eth+1 {
		return nil, false
	}
	ip := frame[eth:]
	switch ip[0] >> 4 {
	case 4:
		if len(ip) < 20 {
			return nil, false
		}
		ihl, total := int(ip[0]&0x0f)*4, int(ip[2])<<8|int(ip[3])
		if ihl < 20 || total < ihl || total > len(ip) {
			return nil, false
		}
		return ip[ihl:total], true
	case 6:
		if len(ip) < 40 {
			return nil, false
		}
		total := 40 + (int(ip[4])<<8 | int(ip[5]))
		if total > len(ip) {
			return nil, false
		}
		return ip[40:total], true
	}
	return nil, false
}

// describe says in words what the counts show, for the failover row.
func (w outageWire) describe(dc, cloud, gateway string) string {
	var s string
	switch {
	case w.udpArrived > 0 && w.reqPrivate > 0:
		s = fmt.Sprintf("one-way traffic still arrives, in clear: requests reach %s over Express Connect + CEN (%d of %d UDP datagrams from %s arrived; %d frames %s → %s in clear on %s, marker in %d)",
			cloud, w.udpArrived, w.udpSent, dc, w.reqPrivate, dc, cloud, strings.Join(w.reqWhere, ", "), w.markerPrivate)
	case w.udpArrived > 0:
		s = fmt.Sprintf("requests reach %s, not in clear on the private path (%d of %d UDP datagrams from %s arrived)", cloud, w.udpArrived, w.udpSent, dc)
	case w.reqPrivate > 0:
		s = fmt.Sprintf("requests cross the private path in clear (%d frames on %s) but none of %d UDP datagrams reached %s", w.reqPrivate, strings.Join(w.reqWhere, ", "), w.udpSent, cloud)
	default:
		s = fmt.Sprintf("requests do not reach %s (0 of %d UDP datagrams arrived, none in clear on the private path)", cloud, w.udpSent)
	}
	if w.udpArrived > 0 || w.reqPrivate > 0 {
		switch {
		case w.repPrivate > 0:
			s += fmt.Sprintf("; replies cross the private path in clear (%d frames)", w.repPrivate)
		case w.repGateway > 0:
			loop := ""
			if w.repGateway > w.repGatewayDistinct {
				loop = fmt.Sprintf(", each %.0f times on average: looping until their TTL ran out", float64(w.repGateway)/float64(max(w.repGatewayDistinct, 1)))
			}
			s += fmt.Sprintf("; replies are routed to the VPN gateway %s and lost (%d replies arrived there as %d frames%s; none on the private path), until the operator withdraws its route",
				gateway, w.repGatewayDistinct, w.repGateway, loop)
		case w.pings > 0:
			s += fmt.Sprintf("; replies to %d pings: none on the private path or at the VPN gateway %s", w.pings, gateway)
		}
	}
	if w.incomplete != nil {
		s += fmt.Sprintf(" (capture incomplete: %v)", w.incomplete)
	}
	return s
}
