package ike

import (
	"crypto/hmac"
	"encoding/binary"
)

// ikeKeys is the key schedule of one IKE SA (RFC 7296 §2.14).
type ikeKeys struct {
	prf                       prf
	cs                        cipherSuite
	d, ai, ar, ei, er, pi, pr []byte
}

// deriveIKEKeys computes SKEYSEED and its seven keys. For a new IKE SA
// skeyseedKey is Ni | Nr (SKEYSEED = prf(Ni | Nr, g^ir)); for a rekeyed one
// (RFC 7296 §2.18) it is the old SK_d and the input is g^ir(new) | Ni | Nr.
func deriveIKEKeys(f prf, cs cipherSuite, skeyseed, ni, nr []byte, spii, spir uint64) *ikeKeys {
	seed := append(append([]byte{}, ni...), nr...)
	seed = binary.BigEndian.AppendUint64(seed, spii)
	seed = binary.BigEndian.AppendUint64(seed, spir)
	prfLen := len(f(nil, nil))
	il, el := cs.integKeyLen(), cs.keyLen
	km := f.plus(skeyseed, seed, 3*prfLen+2*il+2*el)
	k := &ikeKeys{prf: f, cs: cs}
	take := func(n int) []byte { v := km[:n:n]; km = km[n:]; return v }
	k.d, k.ai, k.ar, k.ei, k.er, k.pi, k.pr = take(prfLen), take(il), take(il), take(el), take(el), take(prfLen), take(prfLen)
	return k
}

// newSKEYSEED is prf(Ni | Nr, g^ir) of RFC 7296 §2.14.
func newSKEYSEED(f prf, ni, nr, gir []byte) []byte {
	return f(append(append([]byte{}, ni...), nr...), gir)
}

// rekeySKEYSEED is prf(SK_d (old), g^ir (new) | Ni | Nr) of RFC 7296 §2.18.
func rekeySKEYSEED(f prf, oldD, gir, ni, nr []byte) []byte {
	return f(oldD, append(append(append([]byte{}, gir...), ni...), nr...))
}

// childKeys is KEYMAT of RFC 7296 §2.17 split the way it is taken: the
// initiator-to-responder SA's encryption then integrity key, then the other
// direction's.
type childKeys struct{ encI, integI, encR, integR []byte }

// deriveChildKeys computes KEYMAT = prf+(SK_d, [g^ir (new) |] Ni | Nr).
// encLen counts the 4-byte salt for AES-GCM (RFC 4106 §8.1).
func deriveChildKeys(f prf, skd, gir, ni, nr []byte, encLen, integLen int) childKeys {
	seed := append(append(append([]byte{}, gir...), ni...), nr...)
	km := f.plus(skd, seed, 2*(encLen+integLen))
	return childKeys{
		encI: km[:encLen], integI: km[encLen : encLen+integLen],
		encR: km[encLen+integLen : 2*encLen+integLen], integR: km[2*encLen+integLen:],
	}
}

// keyPad is the fixed string of the shared-key AUTH (RFC 7296 §2.15).
const keyPad = "Key Pad for IKEv2"

// pskAuth computes the AUTH payload data of one side:
// prf(prf(PSK, "Key Pad for IKEv2"), <SignedOctets>), where SignedOctets is
// that side's IKE_SA_INIT message | the peer's nonce | prf(SK_px, ID'),
// and ID' the ID payload without its generic header (RFC 7296 §2.15).
func pskAuth(f prf, psk []byte, ownInit, peerNonce, skp []byte, id *ID) []byte {
	idBody := id.body(nil)
	signed := append(append(append([]byte{}, ownInit...), peerNonce...), f(skp, idBody)...)
	return f(f(psk, []byte(keyPad)), signed)
}

// authEqual compares AUTH data in constant time.
func authEqual(a, b []byte) bool { return hmac.Equal(a, b) }
