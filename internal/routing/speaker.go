package routing

import (
	"context"
	"errors"
	"fmt"
	"log"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	api "github.com/osrg/gobgp/v3/api"
	"github.com/osrg/gobgp/v3/pkg/server"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

// Speaker is a running BGP speaker and its FIB sync.
type Speaker struct {
	cfg    Config
	log    *log.Logger
	bgp    *server.BgpServer
	fib    *fib
	cancel context.CancelFunc
	done   chan struct{}
	once   sync.Once
}

var ipv4Unicast = &api.Family{Afi: api.Family_AFI_IP, Safi: api.Family_SAFI_UNICAST}

// Start runs the speaker in the calling process's network namespace until
// ctx ends or Stop is called. It returns once GoBGP has its configuration;
// sessions come up in the background.
func Start(ctx context.Context, cfg Config, logger *log.Logger) (*Speaker, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	opts := []server.ServerOption{server.LoggerOption(gobgpLogger{logger})}
	if cfg.GRPCSocket != "" {
		// A socket left by a killed agent would make GoBGP's listen fail.
		if err := os.Remove(cfg.GRPCSocket); err != nil && !errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("bgp: grpc socket %s: %w", cfg.GRPCSocket, err)
		}
		opts = append(opts, server.GrpcListenAddress("unix://"+cfg.GRPCSocket))
	}
	s := &Speaker{cfg: cfg, log: logger, bgp: server.NewBgpServer(opts...), done: make(chan struct{})}
	go s.bgp.Serve()
	ctx, s.cancel = context.WithCancel(ctx)
	if err := s.configure(ctx); err != nil {
		s.cancel()
		s.bgp.Stop()
		return nil, err
	}
	f, err := newFIB(s, cfg.metric())
	if err != nil {
		s.cancel()
		s.bgp.Stop()
		return nil, err
	}
	s.fib = f
	// Every best-path change only kicks the sync, which then reads the
	// whole RIB: a missed event, a route the kernel flushed with its link,
	// or a nexthop that became reachable later is repaired the same way.
	err = s.bgp.WatchEvent(ctx, &api.WatchEventRequest{Table: &api.WatchEventRequest_Table{
		Filters: []*api.WatchEventRequest_Table_Filter{{Type: api.WatchEventRequest_Table_Filter_BEST, Init: true}},
	}}, func(*api.WatchEventResponse) { f.kick() })
	if err != nil {
		s.cancel()
		s.bgp.Stop()
		f.close()
		return nil, fmt.Errorf("bgp: watch best paths: %w", err)
	}
	go func() {
		defer close(s.done)
		f.run(ctx)
	}()
	go func() {
		<-ctx.Done()
		s.Stop()
	}()
	logger.Printf("bgp: AS %d router-id %s, %d neighbor(s), %d network(s), kernel routes proto %d metric %d",
		cfg.ASN, cfg.RouterID, len(cfg.Neighbors), len(cfg.Networks), RouteProtocol, cfg.metric())
	return s, nil
}

// Stop closes the sessions (a Cease to each neighbor, so they withdraw at
// once instead of waiting for the hold time) and removes every kernel route
// the speaker installed. It may be called more than once.
func (s *Speaker) Stop() {
	s.once.Do(func() {
		// StopBgp ends the sessions and the watch before the FIB is
		// emptied, so nothing is installed again behind the cleanup.
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := s.bgp.StopBgp(ctx, &api.StopBgpRequest{}); err != nil {
			s.log.Printf("bgp: stop: %v", err)
		}
		s.cancel()
		<-s.done
		s.fib.close()
		s.bgp.Stop()
	})
}

func (s *Speaker) configure(ctx context.Context) error {
	port := s.cfg.ListenPort
	if port == 0 {
		port = 179
	}
	g := &api.Global{
		Asn:              s.cfg.ASN,
		RouterId:         s.cfg.RouterID.String(),
		ListenPort:       port,
		UseMultiplePaths: s.cfg.Multipath,
	}
	for _, a := range s.cfg.ListenAddresses {
		g.ListenAddresses = append(g.ListenAddresses, a.String())
	}
	if err := s.bgp.StartBgp(ctx, &api.StartBgpRequest{Global: g}); err != nil {
		return fmt.Errorf("bgp: start AS %d router-id %s port %d: %w", s.cfg.ASN, s.cfg.RouterID, port, err)
	}
	// Policies before peers: a session must never come up without them.
	if err := s.addPolicies(ctx); err != nil {
		return err
	}
	for _, n := range s.cfg.Neighbors {
		if err := s.bgp.AddPeer(ctx, &api.AddPeerRequest{Peer: apiPeer(n)}); err != nil {
			return fmt.Errorf("bgp: neighbor %s: %w", n.Address, err)
		}
	}
	for _, p := range s.cfg.Networks {
		if _, err := s.addPath(ctx, p); err != nil {
			return fmt.Errorf("bgp: network %s: %w", p, err)
		}
	}
	return nil
}

func apiPeer(n Neighbor) *api.Peer {
	hold, keepalive := n.hold()
	p := &api.Peer{
		Conf: &api.PeerConf{NeighborAddress: n.Address.String(), PeerAsn: n.PeerASN},
		Timers: &api.Timers{Config: &api.TimersConfig{
			ConnectRetry:      uint64(n.connectRetry()),
			HoldTime:          uint64(hold / time.Second),
			KeepaliveInterval: uint64(keepalive / time.Second),
		}},
		Transport: &api.Transport{PassiveMode: n.Passive, BindInterface: n.Interface},
		AfiSafis:  []*api.AfiSafi{{Config: &api.AfiSafiConfig{Family: ipv4Unicast, Enabled: true}}},
	}
	if n.LocalAddress.IsValid() {
		p.Transport.LocalAddress = n.LocalAddress.String()
	}
	if n.EBGPMultihop > 0 {
		p.EbgpMultihop = &api.EbgpMultihop{Enabled: true, MultihopTtl: n.EBGPMultihop}
	}
	return p
}

// addPolicies turns the per-neighbor knobs into GoBGP's global import and
// export policies, one statement per neighbor matched by a neighbor set:
// GoBGP only allows per-peer policy assignments on route-server clients.
// On export a neighbor condition matches the peer the route is sent to.
func (s *Speaker) addPolicies(ctx context.Context) error {
	var imports, exports []*api.Statement
	for _, n := range s.cfg.Neighbors {
		set := "n-" + n.Address.String()
		match := &api.Conditions{NeighborSet: &api.MatchSet{Type: api.MatchSet_ANY, Name: set}}
		var in, out api.Actions
		if n.LocalPref > 0 {
			in.LocalPref = &api.LocalPrefAction{Value: n.LocalPref}
		}
		if n.MED > 0 {
			out.Med = &api.MedAction{Type: api.MedAction_REPLACE, Value: int64(n.MED)}
		}
		if n.Prepend > 0 {
			out.AsPrepend = &api.AsPrependAction{Asn: s.cfg.ASN, Repeat: n.Prepend}
		}
		if in.LocalPref == nil && out.Med == nil && out.AsPrepend == nil {
			continue
		}
		err := s.bgp.AddDefinedSet(ctx, &api.AddDefinedSetRequest{DefinedSet: &api.DefinedSet{
			DefinedType: api.DefinedType_NEIGHBOR, Name: set, List: []string{n.Address.String() + "/32"},
		}})
		if err != nil {
			return fmt.Errorf("bgp: neighbor %s: policy: %w", n.Address, err)
		}
		if in.LocalPref != nil {
			in.RouteAction = api.RouteAction_ACCEPT
			imports = append(imports, &api.Statement{Name: "in-" + n.Address.String(), Conditions: match, Actions: &in})
		}
		if out.Med != nil || out.AsPrepend != nil {
			out.RouteAction = api.RouteAction_ACCEPT
			exports = append(exports, &api.Statement{Name: "out-" + n.Address.String(), Conditions: match, Actions: &out})
		}
	}
	for _, p := range []struct {
		name  string
		dir   api.PolicyDirection
		stmts []*api.Statement
	}{{"emu-import", api.PolicyDirection_IMPORT, imports}, {"emu-export", api.PolicyDirection_EXPORT, exports}} {
		if len(p.stmts) == 0 {
			continue
		}
		if err := s.bgp.AddPolicy(ctx, &api.AddPolicyRequest{Policy: &api.Policy{Name: p.name, Statements: p.stmts}}); err != nil {
			return fmt.Errorf("bgp: policy %s: %w", p.name, err)
		}
		err := s.bgp.AddPolicyAssignment(ctx, &api.AddPolicyAssignmentRequest{Assignment: &api.PolicyAssignment{
			Name: "global", Direction: p.dir, Policies: []*api.Policy{{Name: p.name}}, DefaultAction: api.RouteAction_ACCEPT,
		}})
		if err != nil {
			return fmt.Errorf("bgp: assign policy %s: %w", p.name, err)
		}
	}
	return nil
}

// addPath originates a prefix with nexthop 0.0.0.0, which GoBGP replaces
// by the session's local address when it sends the route.
func (s *Speaker) addPath(ctx context.Context, p netip.Prefix) ([]byte, error) {
	nlri, _ := anypb.New(&api.IPAddressPrefix{Prefix: p.Addr().String(), PrefixLen: uint32(p.Bits())})
	origin, _ := anypb.New(&api.OriginAttribute{Origin: 0}) // IGP
	nh, _ := anypb.New(&api.NextHopAttribute{NextHop: "0.0.0.0"})
	r, err := s.bgp.AddPath(ctx, &api.AddPathRequest{Path: &api.Path{Family: ipv4Unicast, Nlri: nlri, Pattrs: []*anypb.Any{origin, nh}}})
	if err != nil {
		return nil, err
	}
	return r.Uuid, nil
}

func (s *Speaker) deletePath(ctx context.Context, uuid []byte) error {
	return s.bgp.DeletePath(ctx, &api.DeletePathRequest{Family: ipv4Unicast, Uuid: uuid})
}

// NeighborState is one session as `emu` shows it.
type NeighborState struct {
	Address netip.Addr `json:"address"`
	PeerASN uint32     `json:"peer_asn"`
	// State is GoBGP's FSM state in lower case: idle, connect, active,
	// opensent, openconfirm, established.
	State       string `json:"state"`
	Established bool   `json:"established"`
	// Since is when the session last came up or went down.
	Since      time.Time `json:"since,omitzero"`
	Received   uint64    `json:"received"`
	Accepted   uint64    `json:"accepted"`
	Advertised uint64    `json:"advertised"`
	// Messages counts the BGP messages received from the peer (OPEN,
	// UPDATE, KEEPALIVE, ...; GoBGP's total): one received after a repair
	// reset the session's hold timer with the path working again.
	Messages uint64 `json:"messages_received"`
}

// Neighbors reports every configured session.
func (s *Speaker) Neighbors(ctx context.Context) ([]NeighborState, error) {
	var out []NeighborState
	err := s.bgp.ListPeer(ctx, &api.ListPeerRequest{EnableAdvertised: true}, func(p *api.Peer) {
		n := NeighborState{PeerASN: p.GetConf().GetPeerAsn()}
		n.Address, _ = netip.ParseAddr(p.GetConf().GetNeighborAddress())
		st := p.GetState().GetSessionState()
		n.State = strings.ToLower(st.String())
		n.Established = st == api.PeerState_ESTABLISHED
		n.Messages = p.GetState().GetMessages().GetReceived().GetTotal()
		if t := p.GetTimers().GetState(); t != nil {
			ts := t.GetDowntime()
			if n.Established {
				ts = t.GetUptime()
			}
			if ts != nil && ts.GetSeconds() > 0 {
				n.Since = ts.AsTime()
			}
		}
		for _, af := range p.GetAfiSafis() {
			if a := af.GetState(); a != nil && proto.Equal(a.GetFamily(), ipv4Unicast) {
				n.Received, n.Accepted, n.Advertised = a.GetReceived(), a.GetAccepted(), a.GetAdvertised()
			}
		}
		out = append(out, n)
	})
	slices.SortFunc(out, func(a, b NeighborState) int { return a.Address.Compare(b.Address) })
	return out, err
}

// Route is one best path of the RIB (several per prefix with Multipath).
type Route struct {
	Prefix netip.Prefix `json:"prefix"`
	// NextHop is zero for a route the speaker originates itself.
	NextHop   netip.Addr `json:"nexthop,omitzero"`
	ASPath    []uint32   `json:"as_path,omitempty"`
	LocalPref uint32     `json:"local_pref,omitempty"`
	MED       uint32     `json:"med,omitempty"`
	// From is the neighbor that sent it, zero if local.
	From netip.Addr `json:"from,omitzero"`
	// Installed tells whether the FIB sync put it into the kernel (false
	// for local routes and for nexthops that are not directly connected).
	Installed bool `json:"installed"`
}

// Routes reports the best paths of the IPv4 unicast RIB, sorted by prefix.
func (s *Speaker) Routes(ctx context.Context) ([]Route, error) {
	best, err := s.bestPaths(ctx)
	if err != nil {
		return nil, err
	}
	installed := s.fib.snapshot()
	var out []Route
	for _, p := range best {
		r := p.Route
		r.Installed = slices.Contains(installed[r.Prefix], r.NextHop)
		out = append(out, r)
	}
	return out, nil
}

// bestPaths reads the RIB's best paths, and with Multipath the paths as
// good as the best. The second part is computed here because GoBGP's
// ListPath marks further paths best only when Path.Equal, which compares
// the source too, so paths from two neighbors never are; the equal-cost
// rule copies GoBGP's own (table.Path.Compare, used for its multipath).
func (s *Speaker) bestPaths(ctx context.Context) ([]ribPath, error) {
	var out []ribPath
	err := s.bgp.ListPath(ctx, &api.ListPathRequest{TableType: api.TableType_GLOBAL, Family: ipv4Unicast}, func(d *api.Destination) {
		prefix, err := netip.ParsePrefix(d.GetPrefix())
		paths := d.GetPaths()
		if err != nil || len(paths) == 0 || !paths[0].GetBest() || paths[0].GetIsWithdraw() {
			return
		}
		best := decodePath(prefix, paths[0], s.cfg.ASN)
		out = append(out, best)
		if !s.cfg.Multipath {
			return
		}
		for _, p := range paths[1:] {
			if r := decodePath(prefix, p, s.cfg.ASN); !p.GetIsWithdraw() && !p.GetIsNexthopInvalid() && r.cost == best.cost {
				out = append(out, r)
			}
		}
	})
	slices.SortStableFunc(out, func(a, b ribPath) int {
		if c := a.Prefix.Addr().Compare(b.Prefix.Addr()); c != 0 {
			return c
		}
		return a.Prefix.Bits() - b.Prefix.Bits()
	})
	return out, err
}

type ribPath struct {
	Route
	local bool
	cost  cost
}

// cost is what makes two paths equally good for multipath.
type cost struct {
	local, ibgp              bool
	localPref, asLen, origin uint32
	med                      uint32
}

func decodePath(prefix netip.Prefix, p *api.Path, asn uint32) ribPath {
	r := ribPath{Route: Route{Prefix: prefix}}
	r.cost.localPref = 100 // GoBGP's value for a path without one
	// A local path's source address is nil, which GoBGP prints as "<nil>".
	from, err := netip.ParseAddr(p.GetNeighborIp())
	r.local = err != nil || from.IsUnspecified()
	if !r.local {
		r.From = from
	}
	r.cost.local, r.cost.ibgp = r.local, !r.local && p.GetSourceAsn() == asn
	for _, a := range p.GetPattrs() {
		m, err := a.UnmarshalNew()
		if err != nil {
			continue
		}
		switch v := m.(type) {
		case *api.NextHopAttribute:
			r.NextHop, _ = netip.ParseAddr(v.GetNextHop())
		case *api.AsPathAttribute:
			for _, seg := range v.GetSegments() {
				r.ASPath = append(r.ASPath, seg.GetNumbers()...)
				r.cost.asLen += asPathLen(seg)
			}
		case *api.LocalPrefAttribute:
			r.LocalPref, r.cost.localPref = v.GetLocalPref(), v.GetLocalPref()
		case *api.MultiExitDiscAttribute:
			r.MED, r.cost.med = v.GetMed(), v.GetMed()
		case *api.OriginAttribute:
			r.cost.origin = v.GetOrigin()
		}
	}
	if r.local || r.NextHop.IsUnspecified() {
		r.NextHop = netip.Addr{}
	}
	return r
}

// asPathLen counts a segment as BGP's best-path rule does: a set is one hop,
// confederation segments none.
func asPathLen(seg *api.AsSegment) uint32 {
	switch seg.GetType() {
	case api.AsSegment_AS_SEQUENCE:
		return uint32(len(seg.GetNumbers()))
	case api.AsSegment_AS_SET:
		return 1
	}
	return 0
}
