package ike

import (
	"bytes"
	"errors"
	"reflect"
	"testing"
)

func sampleInit() (Header, []Payload) {
	s := Suite{Encr: EncrAESCBC, KeyBits: 128, Integ: IntegHMACSHA196, PRF: PRFHMACSHA1, DH: 2}
	h := Header{SPIi: 0x0102030405060708, Exchange: IKESAInit, Flags: FlagInitiator}
	return h, []Payload{
		&SA{Proposals: []Proposal{s.proposal(ProtoIKE, nil, true)}},
		&KE{Group: 2, Data: bytes.Repeat([]byte{1}, 128)},
		&Nonce{Data: bytes.Repeat([]byte{2}, 32)},
		&Notify{Kind: NATDetectionSourceIP, Data: bytes.Repeat([]byte{3}, 20)},
		&ID{IDType: IDIPv4, Data: []byte{10, 0, 0, 1}},
		&TS{Selectors: []Selector{{Type: TSIPv4, EndPort: 65535, Start: []byte{0, 0, 0, 0}, End: []byte{255, 255, 255, 255}}}},
		&Delete{Protocol: ProtoESP, SPISize: 4, SPIs: [][]byte{{1, 2, 3, 4}, {5, 6, 7, 8}}},
		&Unknown{Kind: PayloadVendor, Data: []byte("emu")},
	}
}

func TestMessage_MarshalParse_RoundTrip(t *testing.T) {
	h, ps := sampleInit()
	b := Marshal(h, ps)
	gh, gps, err := Parse(b)
	if err != nil {
		t.Fatal(err)
	}
	if gh.SPIi != h.SPIi || gh.Exchange != IKESAInit || int(gh.Length) != len(b) {
		t.Fatalf("header %+v", gh)
	}
	if !reflect.DeepEqual(gps, ps) {
		t.Fatalf("payloads differ:\n got %#v\nwant %#v", gps, ps)
	}
}

func TestParse_RefusesWhatIsMalformed(t *testing.T) {
	h, ps := sampleInit()
	good := Marshal(h, ps)
	cases := map[string]struct {
		b    []byte
		want error
	}{
		"short":           {good[:20], ErrTruncated},
		"length mismatch": {good[:len(good)-1], ErrLength},
		"version 1":       {func() []byte { b := bytes.Clone(good); b[17] = 0x10; return b }(), ErrVersion},
		"payload overruns": {func() []byte {
			b := bytes.Clone(good)
			b[HeaderLen+2], b[HeaderLen+3] = 0xff, 0xff
			return b
		}(), ErrSyntax},
		"critical unknown": {Marshal(Header{}, []Payload{&Unknown{Kind: 200}}), nil},
	}
	for name, c := range cases {
		_, _, err := Parse(c.b)
		if name == "critical unknown" {
			// Marshal never sets the critical bit; set it by hand.
			b := bytes.Clone(c.b)
			b[HeaderLen+1] = 0x80
			_, _, err = Parse(b)
			c.want = ErrCritical
		}
		if !errors.Is(err, c.want) {
			t.Errorf("%s: err %v, want %v", name, err, c.want)
		}
	}
}

// collect finds each kind of payload of a decoded message wherever it
// stands: IDi from IDr and TSi from TSr by their type, the last of a
// repeated kind, every Notify and Delete in order; payloads no exchange
// reads are passed over.
func TestCollect_SortsPayloadsByKind(t *testing.T) {
	sa1, sa2 := &SA{}, &SA{Proposals: []Proposal{{Num: 1}}}
	ke, nonce, auth := &KE{Group: 14}, &Nonce{Data: []byte{1}}, &Auth{Method: AuthSharedKey}
	idi, idr := &ID{IDType: IDFQDN, Data: []byte("i")}, &ID{Responder: true, IDType: IDFQDN, Data: []byte("r")}
	tsi, tsr := &TS{}, &TS{Responder: true}
	n1, n2 := &Notify{Kind: NATDetectionSourceIP}, &Notify{Kind: NoProposalChosen}
	d1, d2 := &Delete{Protocol: ProtoESP}, &Delete{Protocol: ProtoIKE}
	got := collect([]Payload{n1, tsr, sa1, idr, d1, &Unknown{Kind: PayloadVendor}, ke, auth, tsi, sa2, n2, idi, nonce, d2})
	want := payloads{sa: sa2, ke: ke, nonce: nonce, idi: idi, idr: idr, auth: auth, tsi: tsi, tsr: tsr,
		notifies: []*Notify{n1, n2}, deletes: []*Delete{d1, d2}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("collect = %+v\nwant %+v", got, want)
	}
	if got.sa != sa2 || got.idi != idi || got.tsr != tsr {
		t.Fatalf("collect did not keep the message's own payloads: %+v", got)
	}
}
