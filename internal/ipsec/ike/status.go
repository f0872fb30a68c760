package ike

import "time"

// Phase states, as the provider's console shows a connection.
const (
	StateDown        = "down"
	StateConnecting  = "connecting"
	StateEstablished = "established"
	StateFailed      = "failed"
)

// Status is one connection's negotiation state: phase 1 (the IKE SA) and
// phase 2 (the CHILD SA), each with the reason of its last failure.
type Status struct {
	Name         string    `json:"name"`
	Local        string    `json:"local"`
	Remote       string    `json:"remote"`
	Phase1       string    `json:"phase1"`
	Phase1Reason string    `json:"phase1_reason,omitempty"`
	Phase2       string    `json:"phase2"`
	Phase2Reason string    `json:"phase2_reason,omitempty"`
	IKEProposal  string    `json:"ike_proposal,omitempty"`
	ESPProposal  string    `json:"esp_proposal,omitempty"`
	LocalTS      []string  `json:"local_ts,omitempty"`
	RemoteTS     []string  `json:"remote_ts,omitempty"`
	Encap        bool      `json:"udp_encap"`
	InSPI        uint32    `json:"in_spi,omitempty"`
	OutSPI       uint32    `json:"out_spi,omitempty"`
	Established  time.Time `json:"established,omitzero"`
	IKERekeys    int       `json:"ike_rekeys"`
	ChildRekeys  int       `json:"child_rekeys"`
	// Refused counts the exchanges refused before the peer authenticated
	// (a malformed or unacceptable IKE_SA_INIT, a half-open SA's failed
	// IKE_AUTH), with or without an IKE SA established: anyone who can
	// spoof the peer's address can send them, so they never take an SA
	// down or delay the initiator's next attempt.
	// LastRefused is the last one's reason.
	Refused     uint64 `json:"refused_unauthenticated,omitempty"`
	LastRefused string `json:"last_refused,omitempty"`
}

// Counters are the endpoint's packet counters; every packet that is not a
// valid message of a known SA is counted here and dropped.
type Counters struct {
	Received      uint64 `json:"received"`
	Malformed     uint64 `json:"malformed"`
	UnknownSA     uint64 `json:"unknown_sa"`
	BadIntegrity  uint64 `json:"bad_integrity"`
	Retransmitted uint64 `json:"retransmitted"`
	// CookiesSent counts IKE_SA_INIT requests answered with a COOKIE
	// instead of state (RFC 7296 §2.6); HalfOpenRefused those dropped
	// with MaxHalfOpen SAs already half-open.
	CookiesSent     uint64 `json:"cookies_sent,omitempty"`
	HalfOpenRefused uint64 `json:"half_open_refused,omitempty"`
	// GROReceived counts the NAT-T reads the kernel coalesced (UDP GRO,
	// more than one ESP-in-UDP packet), GROSegments the packets in them.
	GROReceived uint64 `json:"gro_received,omitempty"`
	GROSegments uint64 `json:"gro_segments,omitempty"`
}
