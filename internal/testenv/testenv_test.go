package testenv_test

import (
	"errors"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/emu-lab/emu/internal/testenv"
)

const helperEnv = "EMU_TESTENV_HELPER"

// TestHelperMissingPrerequisite is the test the others run in a child
// process: it lacks a prerequisite. Run directly, it does nothing.
func TestHelperMissingPrerequisite(t *testing.T) {
	if os.Getenv(helperEnv) != "1" {
		return
	}
	testenv.Require(t, errors.New("no engine answers"), "container tests need a Docker engine")
	t.Log("went on past a missing prerequisite")
}

func runHelper(t *testing.T, env ...string) (string, error) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperMissingPrerequisite$", "-test.v", "-test.count=1")
	cmd.Env = append(os.Environ(), append(env, helperEnv+"=1")...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func TestRequire_Strict_MissingPrerequisiteFails(t *testing.T) {
	out, err := runHelper(t, testenv.StrictEnv+"=1")
	if err == nil || !strings.Contains(out, "--- FAIL") || !strings.Contains(out, "container tests need a Docker engine: no engine answers") {
		t.Fatalf("under %s=1 a missing prerequisite must fail the test: %v\n%s", testenv.StrictEnv, err, out)
	}
}

func TestRequire_Default_MissingPrerequisiteSkipsWithTheReason(t *testing.T) {
	out, err := runHelper(t, testenv.StrictEnv+"=")
	if err != nil || !strings.Contains(out, "--- SKIP") || !strings.Contains(out, "no engine answers") || strings.Contains(out, "went on") {
		t.Fatalf("by default a missing prerequisite skips: %v\n%s", err, out)
	}
}
