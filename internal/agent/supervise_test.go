package agent

import (
	"slices"
	"strings"
	"testing"
)

// The worker gets one scheduler thread unless the user's environment asks
// for another count (GOMAXPROCS=N emu deploy ...).
func TestWorkerEnviron_GOMAXPROCSOneUnlessTheUserSetsIt(t *testing.T) {
	for _, tc := range []struct {
		environ []string
		want    string
	}{
		{[]string{"PATH=/bin"}, "GOMAXPROCS=1"},
		{[]string{"PATH=/bin", "GOMAXPROCS="}, "GOMAXPROCS=1"},
		{[]string{"GOMAXPROCS=4", "PATH=/bin"}, "GOMAXPROCS=4"},
	} {
		env := workerEnviron(tc.environ)
		var got []string
		for _, kv := range env {
			if strings.HasPrefix(kv, "GOMAXPROCS=") {
				got = append(got, kv)
			}
		}
		// The last value of a key is the one a Go exec.Cmd keeps.
		if len(got) == 0 || got[len(got)-1] != tc.want {
			t.Errorf("workerEnviron(%q) sets %q, want %s last", tc.environ, got, tc.want)
		}
		if !slices.Contains(env, workerEnv+"=1") {
			t.Errorf("workerEnviron(%q) = %q: not marked as the worker's", tc.environ, env)
		}
	}
}
