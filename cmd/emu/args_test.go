package main

import (
	"slices"
	"testing"
)

func TestInterspersed_FlagsAfterPositionalsAreMovedAhead(t *testing.T) {
	for _, tc := range []struct{ in, want []string }{
		{[]string{"emu", "capture", "vbr:eth1", "-c", "5", "-t", "x.yaml"}, []string{"emu", "capture", "-c", "5", "-t", "x.yaml", "vbr:eth1"}},
		{[]string{"emu", "capture", "-t", "x.yaml", "vbr:eth1", "-w", "-"}, []string{"emu", "capture", "-t", "x.yaml", "-w", "-", "vbr:eth1"}},
		{[]string{"emu", "exec", "-t", "x.yaml", "client", "--", "ping", "-c", "1"}, []string{"emu", "exec", "-t", "x.yaml", "client", "--", "ping", "-c", "1"}},
		{[]string{"emu", "deploy", "--dry-run", "-t", "x.yaml"}, []string{"emu", "deploy", "--dry-run", "-t", "x.yaml"}},
		{[]string{"emu", "--help"}, []string{"emu", "--help"}},
		{[]string{"emu", "fault", "tunnel", "down", "to-vpc", "-t", "x.yaml"}, []string{"emu", "fault", "tunnel", "down", "-t", "x.yaml", "to-vpc"}},
	} {
		if got := interspersed(newApp(), tc.in); !slices.Equal(got, tc.want) {
			t.Errorf("interspersed(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}
