package labtest

import (
	"os"
	"os/exec"
	"regexp"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

const privateRunEnv = "EMU_TEST_PRIVATE_RUN"

// InPrivateRun runs the calling top-level test again in a child process that
// has its own mount namespace (every mount private, so nothing propagates to
// the host) and a fresh, empty tmpfs on /run: the /run of a host that just
// booted, with no /run/netns yet, whatever this host's looks like. It returns
// true in the child, where the test goes on, and false in the parent once the
// child's verdict is in (its output is logged, its failure fails the test).
// Namespaces mounted only in the child's /run vanish with it, so a failing
// test leaks nothing.
func InPrivateRun(t *testing.T) bool {
	t.Helper()
	RequireRoot(t)
	if os.Getenv(privateRunEnv) == t.Name() {
		if err := unix.Mount("tmpfs", "/run", "tmpfs", 0, "mode=0755,size=16m"); err != nil {
			t.Fatalf("fresh /run: %v", err)
		}
		return true
	}
	cmd := exec.Command(os.Args[0], "-test.run=^"+regexp.QuoteMeta(t.Name())+"$", "-test.count=1", "-test.v")
	cmd.Env = append(os.Environ(), privateRunEnv+"="+t.Name())
	// Go makes / recursively private in the child before exec when it
	// unshares the mount namespace.
	cmd.SysProcAttr = &syscall.SysProcAttr{Unshareflags: syscall.CLONE_NEWNS}
	out, err := cmd.CombinedOutput()
	t.Logf("in a private mount namespace with a fresh /run:\n%s", out)
	if err != nil {
		t.Fatalf("the test failed there: %v", err)
	}
	return false
}
