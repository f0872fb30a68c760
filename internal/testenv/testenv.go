// Package testenv decides what a test does when the host lacks what it
// needs: root, the Docker engine, a witness tool. By default it skips, with
// the reason. `make test` (root, CI) sets EMU_REQUIRE_ROOT_TESTS=1, and then
// a missing prerequisite fails the test: a suite that silently skips half of
// itself proves nothing. `make unit` sets EMU_UNIT_ONLY=1 and runs only the
// tests that need none of it, as root or not.
package testenv

import (
	"os"
	"testing"
)

// Environment variables the Makefile sets.
const (
	StrictEnv = "EMU_REQUIRE_ROOT_TESTS" // "1": a missing prerequisite fails
	UnitEnv   = "EMU_UNIT_ONLY"          // "1": skip every test that needs root
)

// Strict reports whether missing prerequisites fail tests.
func Strict() bool { return os.Getenv(StrictEnv) == "1" }

// RequireRoot skips (or, when Strict, fails) a test that needs root; why
// says what it does with root, e.g. "creates network namespaces".
func RequireRoot(t testing.TB, why string) {
	t.Helper()
	if os.Getenv(UnitEnv) == "1" {
		t.Skip("needs root: " + why + " (make unit runs no root test)")
	}
	if os.Geteuid() != 0 {
		missing(t, "needs root: "+why)
	}
}

// Require skips (or, when Strict, fails) a test whose prerequisite is
// missing: err says what is missing, what the test cannot do without it.
func Require(t testing.TB, err error, what string) {
	t.Helper()
	if err != nil {
		missing(t, what+": "+err.Error())
	}
}

func missing(t testing.TB, reason string) {
	t.Helper()
	if Strict() {
		t.Fatal(reason + " (" + StrictEnv + "=1: under make test a skipped test is a failure)")
	}
	t.Skip(reason)
}
