package agent

import (
	"os"
	"runtime"
	"strconv"
	"testing"

	"golang.org/x/sys/unix"
)

// An agent started by hand has no ready pipe; whatever descriptor ReadyEnv
// or fd 3 names then may be the agent's own tunnel socket, opened later.
func TestReadyPipe_OnlyAPipeNamedByTheEnvironment_NeverAnotherDescriptor(t *testing.T) {
	f, err := os.CreateTemp(t.TempDir(), "not-a-pipe")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for name, env := range map[string]string{"unset": "", "garbage": "x", "stdout": "1", "a regular file": strconv.Itoa(int(f.Fd()))} {
		t.Setenv(ReadyEnv, env)
		if p := readyPipe(); p != nil {
			t.Errorf("%s: took %s as the ready pipe", name, p.Name())
		}
	}
	if _, err := unix.FcntlInt(f.Fd(), unix.F_GETFD, 0); err != nil {
		t.Errorf("the file's descriptor was closed: %v", err)
	}
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer runtime.KeepAlive(w) // w's finalizer would close the descriptor p took over
	t.Setenv(ReadyEnv, strconv.Itoa(int(w.Fd())))
	p := readyPipe()
	if p == nil {
		t.Fatal("a pipe named by the environment was not taken")
	}
	defer p.Close() // it owns w's descriptor now

	if os.Getenv(ReadyEnv) != "" {
		t.Error("the worker would inherit the supervisor's ready descriptor")
	}
}
