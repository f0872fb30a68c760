package topology_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/emu-lab/emu/internal/topology"
	"github.com/emu-lab/emu/nodes"
)

// The reviewer's inputs: each kept yaml.v3 busy for 19 s to minutes before
// its own depth limit fired.
func TestParse_DeepNesting_RefusedOnItsLineInWellUnderASecond(t *testing.T) {
	for _, tc := range []struct {
		name string
		data string
		line int
	}{
		{"520000 flow sequences (1 MB)", "name: x\ntopology: " + strings.Repeat("[", 520000) + strings.Repeat("]", 520000), 2},
		{"60000 flow mappings", "name: x\ntopology: " + strings.Repeat("{a: ", 60000), 2},
		{"flow over lines", "name: x\ntopology:\n" + strings.Repeat("  [\n", 70), 1 + topology.MaxDepth},
		{"block mappings by indentation", "name: x\n" + nestedMaps(200), 2 + topology.MaxDepth},
		{"compact sequences on one line", "name: x\ntopology: \n  " + strings.Repeat("- ", 300000) + "x\n", 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Now()
			_, err := topology.Parse("lab.yaml", []byte(tc.data), nodes.Default())
			took := time.Since(start)
			var e *topology.Error
			if !errors.As(err, &e) || !strings.Contains(e.Msg, "nest more than 64 levels") {
				t.Fatalf("Parse = %v, want the nesting refused", err)
			}
			if e.Line != tc.line {
				t.Errorf("refused on line %d, want %d: %v", e.Line, tc.line, err)
			}
			// Not a timing test of emu's speed: before the pre-scan these
			// took 19 s and more, so a second separates the two by far.
			if took > time.Second {
				t.Errorf("took %s", took)
			}
		})
	}
}

// LabName (destroy, inspect, exec) reads the same files: it must not hand
// them to yaml.v3 either, and still finds the name line.
func TestLabName_DeepNesting_ReadsTheNameLineOnly(t *testing.T) {
	path := filepath.Join(t.TempDir(), "lab.yaml")
	if err := os.WriteFile(path, []byte("name: deep\ntopology: "+strings.Repeat("[", 520000)), 0o644); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	name, err := topology.LabName(path)
	if err != nil || name != "deep" {
		t.Fatalf("LabName = %q, %v; want deep", name, err)
	}
	if took := time.Since(start); took > time.Second {
		t.Errorf("took %s", took)
	}
}

// What nests as deep as MaxDepth, and brackets that are text, still parse
// as far as nesting goes: the pre-scan refuses only what nests too deep.
func TestParse_NestingWithinTheLimit_NotRefused(t *testing.T) {
	for name, data := range map[string]string{
		"64 flow levels":      "name: x\ntopology: " + strings.Repeat("[", 63) + strings.Repeat("]", 63),
		"brackets in quotes":  "name: x\nnote: \"" + strings.Repeat("[", 500) + "\"\nn2: '" + strings.Repeat("{", 500) + "'\ntopology: {}",
		"brackets in comment": "name: x # " + strings.Repeat("[", 500) + "\ntopology: {}",
		"brackets in text":    "name: x\nnote: a" + strings.Repeat("[", 500) + "\ntopology: {}",
		"block scalar":        "name: x\nexec: |\n  " + strings.Repeat("[", 500) + "\n  " + strings.Repeat("- ", 200) + "\ntopology: {}",
	} {
		t.Run(name, func(t *testing.T) {
			_, err := topology.Parse("lab.yaml", []byte(data), nodes.Default())
			if err != nil && strings.Contains(err.Error(), "levels deep") {
				t.Fatalf("refused as too deep: %v", err)
			}
		})
	}
}

func nestedMaps(depth int) string {
	var b strings.Builder
	for i := range depth {
		b.WriteString(strings.Repeat(" ", i) + "k:\n")
	}
	return b.String()
}
