// Command pause is PID 1 of a container node. The container exists only to
// hold a network namespace that emu wires from the host, so its init does
// nothing but reap orphans and wait for the signal that stops it. It is not
// `emu agent`: that needs a config, and the agent runs from the host inside
// the namespace, like the agent of any other node.
package main

import (
	"os"
	"os/signal"

	"golang.org/x/sys/unix"
)

func main() {
	sigs := make(chan os.Signal, 4)
	// PID 1 gets no default signal handling: without these, `docker stop`
	// would wait out its grace period and then kill.
	signal.Notify(sigs, unix.SIGTERM, unix.SIGINT, unix.SIGCHLD)
	for sig := range sigs {
		if sig != unix.SIGCHLD {
			return
		}
		// `docker exec` leaves its processes' orphans to PID 1.
		for {
			pid, err := unix.Wait4(-1, nil, unix.WNOHANG, nil)
			if pid <= 0 || err != nil {
				break
			}
		}
	}
}
