package ike

import "fmt"

// NotifyType is a Notify Message Type (RFC 7296 §3.10.1, IANA "IKEv2 Notify
// Message Types"). Below 16384 they are errors, above status.
type NotifyType uint16

const (
	UnsupportedCriticalPayload NotifyType = 1
	InvalidIKESPI              NotifyType = 4
	InvalidSyntax              NotifyType = 7
	InvalidSPI                 NotifyType = 11
	NoProposalChosen           NotifyType = 14
	InvalidKEPayload           NotifyType = 17
	AuthenticationFailed       NotifyType = 24
	SinglePairRequired         NotifyType = 34
	TSUnacceptable             NotifyType = 38
	TemporaryFailure           NotifyType = 43
	ChildSANotFound            NotifyType = 44
	InitialContact             NotifyType = 16384
	NATDetectionSourceIP       NotifyType = 16388
	NATDetectionDestinationIP  NotifyType = 16389
	Cookie                     NotifyType = 16390
	UseTransportMode           NotifyType = 16391
	RekeySA                    NotifyType = 16393
)

var notifyNames = map[NotifyType]string{
	UnsupportedCriticalPayload: "UNSUPPORTED_CRITICAL_PAYLOAD",
	InvalidIKESPI:              "INVALID_IKE_SPI",
	InvalidSyntax:              "INVALID_SYNTAX",
	InvalidSPI:                 "INVALID_SPI",
	NoProposalChosen:           "NO_PROPOSAL_CHOSEN",
	InvalidKEPayload:           "INVALID_KE_PAYLOAD",
	AuthenticationFailed:       "AUTHENTICATION_FAILED",
	SinglePairRequired:         "SINGLE_PAIR_REQUIRED",
	TSUnacceptable:             "TS_UNACCEPTABLE",
	TemporaryFailure:           "TEMPORARY_FAILURE",
	ChildSANotFound:            "CHILD_SA_NOT_FOUND",
	InitialContact:             "INITIAL_CONTACT",
	NATDetectionSourceIP:       "NAT_DETECTION_SOURCE_IP",
	NATDetectionDestinationIP:  "NAT_DETECTION_DESTINATION_IP",
	Cookie:                     "COOKIE",
	UseTransportMode:           "USE_TRANSPORT_MODE",
	RekeySA:                    "REKEY_SA",
}

func (n NotifyType) String() string {
	if s, ok := notifyNames[n]; ok {
		return s
	}
	return fmt.Sprintf("NOTIFY(%d)", uint16(n))
}

// IsError tells error notifications (types below 16384) from status ones.
func (n NotifyType) IsError() bool { return n < 16384 }
