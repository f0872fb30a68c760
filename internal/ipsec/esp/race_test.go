//go:build race

package esp

// raceEnabled skips allocation counts: under the race detector sync.Pool
// drops items on purpose, so pooled scratch space is reallocated.
const raceEnabled = true
