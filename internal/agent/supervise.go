package agent

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log"
	"os"
	"os/exec"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// StopGrace is how long a supervisor told to stop waits for its worker to
// exit before it kills it; whoever stops the supervisor waits longer.
const StopGrace = 2 * time.Second

// Restart policy: a worker that dies is started again after a backoff that
// doubles up to maxBackoff and starts over once a worker ran for stableAfter;
// a worker with no heartbeat for hungAfter is killed and started again.
const (
	minBackoff  = 200 * time.Millisecond
	maxBackoff  = 5 * time.Second
	stableAfter = 30 * time.Second
	hungAfter   = 2 * StaleAfter
	workerReady = 10 * time.Second
)

// WorkerGOMAXPROCS is the worker's GOMAXPROCS unless the environment sets
// one (GOMAXPROCS=N emu deploy ...). One P keeps the dataplane's goroutines
// (TUN read and seal, transmit, receive and open) on one thread: handing
// each batch to another thread cost a futex wake and a context switch per
// batch, which on a virtual CPU is most of the agent's time. Measured on
// the 2-core CI machine, raw ESP aes-gcm-128 client → ECS with iperf3:
// 0.55–0.94 Gbit/s with the default (one P per CPU), 1.31–1.45 with one.
const WorkerGOMAXPROCS = "1"

// supervise is the agent's first process. It starts the worker (this binary
// again, marked by workerEnv), reports ready once the first worker serves,
// records both processes in StatusPath, and restarts the worker whenever it
// dies or hangs, so a lab does not silently rot after a crash or a kill -9.
// Only the supervisor's own stop (SIGTERM or SIGINT to it, which destroy
// sends) ends the agent: it then stops the worker and ends. A worker that
// ends on its own is restarted whatever its exit status or signal: a
// SIGTERM sent to the worker alone (`kill` of the pid `emu inspect` shows)
// makes it exit 0, and that is no reason for the lab to lose its tunnels.
func supervise(configPath string, ready func()) error {
	exe, err := os.Executable()
	if err != nil {
		return fmt.Errorf("find this binary to start the worker: %w", err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	logger := log.New(os.Stderr, fmt.Sprintf("supervisor %s[%d]: ", nodeOf(configPath), os.Getpid()), log.LstdFlags|log.Lmicroseconds)
	self, _ := procStart(os.Getpid())
	st := Status{SupervisorPID: os.Getpid(), SupervisorStart: self}
	backoff := minBackoff
	for first := true; ; first = false {
		w, err := startWorker(exe, configPath)
		if err != nil {
			if first {
				return err // deploy shows it and rolls back
			}
			logger.Printf("restart failed, next try in %s: %v", backoff, err)
			st.LastExit, st.LastExitAt = "failed restart: "+err.Error(), time.Now()
			writeJSON(StatusPath(configPath), st, 0o644)
		} else {
			if !first {
				st.Restarts++
				logger.Printf("worker restarted as pid %d (restart %d)", w.Process.Pid, st.Restarts)
			}
			st.WorkerPID, st.Since = w.Process.Pid, time.Now()
			st.WorkerStart, _ = procStart(w.Process.Pid)
			if err := writeJSON(StatusPath(configPath), st, 0o644); err != nil {
				logger.Printf("record status: %v", err)
			}
			if first {
				ready()
			}
			exit := watch(ctx, w, configPath)
			if ctx.Err() != nil {
				return nil
			}
			st.WorkerPID, st.LastExit, st.LastExitAt = 0, exit, time.Now()
			writeJSON(StatusPath(configPath), st, 0o644)
			if time.Since(st.Since) > stableAfter {
				backoff = minBackoff
			}
			// Destroy stops the supervisor before its worker, so a worker
			// that ends on its own is one to restart; a stop sent to both at
			// once (pkill) that reaches the worker first ends the wait below
			// at the supervisor's own stop, and a worker started meanwhile is
			// stopped with it.
			logger.Printf("worker pid %d %s; restarting in %s", w.Process.Pid, exit, backoff)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, maxBackoff)
	}
}

// startWorker starts the worker with its own ready pipe and waits until it
// serves.
func startWorker(exe, configPath string) (*exec.Cmd, error) {
	r, w, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	defer r.Close()
	cmd := exec.Command(exe, os.Args[1:]...)
	cmd.Env = workerEnviron(os.Environ())
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	cmd.ExtraFiles = []*os.File{w}
	err = cmd.Start()
	w.Close()
	if err != nil {
		return nil, fmt.Errorf("start worker: %w", err)
	}
	line, err := ReadLine(r, workerReady)
	if err == nil && line != Ready {
		err = errors.New(strings.TrimPrefix(line, "error: "))
	}
	if err != nil {
		cmd.Process.Kill()
		cmd.Wait()
		return nil, fmt.Errorf("worker pid %d: %w", cmd.Process.Pid, err)
	}
	return cmd, nil
}

// workerEnviron is the worker's environment: the supervisor's, marked as
// the worker's, with its ready pipe, and GOMAXPROCS=WorkerGOMAXPROCS unless
// the supervisor's sets GOMAXPROCS (to anything but the empty string).
func workerEnviron(environ []string) []string {
	env := append(slices.Clone(environ), workerEnv+"=1", fmt.Sprintf("%s=%d", ReadyEnv, ReadyFD))
	for _, kv := range environ {
		if v, ok := strings.CutPrefix(kv, "GOMAXPROCS="); ok && v != "" {
			return env
		}
	}
	return append(env, "GOMAXPROCS="+WorkerGOMAXPROCS)
}

// ReadLine reads the one line an agent writes on its ready pipe.
func ReadLine(f *os.File, timeout time.Duration) (string, error) {
	f.SetReadDeadline(time.Now().Add(timeout))
	line, err := bufio.NewReader(f).ReadString('\n')
	switch {
	case errors.Is(err, os.ErrDeadlineExceeded):
		return "", fmt.Errorf("no answer within %s", timeout)
	case err != nil && line == "":
		return "", errors.New("it exited before saying it was ready")
	}
	return strings.TrimSpace(line), nil
}

// watch waits until the worker exits, hangs (it is then killed) or ctx ends
// (it is then stopped), and describes how it ended.
func watch(ctx context.Context, w *exec.Cmd, configPath string) (exit string) {
	done := make(chan error, 1)
	go func() { done <- w.Wait() }()
	tick := time.NewTicker(PublishEvery)
	defer tick.Stop()
	started := time.Now()
	for {
		select {
		case err := <-done:
			return describe(w.ProcessState, err)
		case <-ctx.Done():
			w.Process.Signal(syscall.SIGTERM)
			select {
			case <-done:
			case <-time.After(StopGrace):
				w.Process.Kill()
				<-done
			}
			return "stopped"
		case <-tick.C:
			s, err := readState(configPath)
			last := started
			if err == nil && s.PID == w.Process.Pid {
				last = s.Updated
			}
			if silent := time.Since(last); silent > hungAfter {
				w.Process.Kill()
				<-done
				return fmt.Sprintf("hung (no heartbeat for %s), killed", silent.Round(100*time.Millisecond))
			}
		}
	}
}

func describe(ps *os.ProcessState, err error) string {
	if ps == nil {
		return fmt.Sprint(err)
	}
	if ws, ok := ps.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return fmt.Sprintf("killed by signal %d (%s)", int(ws.Signal()), unix.SignalName(ws.Signal()))
	}
	return fmt.Sprintf("exit status %d", ps.ExitCode())
}
