package lab_test

import (
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/emu-lab/emu/internal/lab"
)

// racingWriterEnv makes this test binary a process that writes into the
// directory of its --config file as an agent writes its state, status and
// SA files, until it is stopped. Its value says how it meets SIGTERM:
// "restart" starts a writer like itself and exits (a supervisor restarting
// its worker while destroy runs), "ignore" keeps writing until SIGKILL
// (a worker slower to stop than destroy's grace), "exit" exits, and
// "supervisor" starts an "exit" writer as its worker and, at SIGTERM, says
// in the file "verdict" beside the lab directory whether its worker was
// still there for it to stop.
const racingWriterEnv = "EMU_TEST_RACING_WRITER"

func racingWriterMain() {
	mode := os.Getenv(racingWriterEnv)
	if mode == "" {
		return
	}
	cfg := os.Args[3] // agent --config FILE
	term := make(chan os.Signal, 1)
	signal.Notify(term, syscall.SIGTERM)
	var child *exec.Cmd
	if mode == "supervisor" {
		child, _ = startRacingWriter("exit", cfg)
	}
	for i := 0; ; i++ {
		select {
		case <-term:
			switch mode {
			case "supervisor":
				// As agent.supervise: stop the worker, unless it already
				// ended, which a supervisor takes for a crash to restart.
				time.Sleep(100 * time.Millisecond)
				verdict := "stopped its worker"
				var ws syscall.WaitStatus
				if pid, _ := syscall.Wait4(child.Process.Pid, &ws, syscall.WNOHANG, nil); pid == child.Process.Pid {
					verdict = "saw its worker end first"
				} else {
					child.Process.Signal(syscall.SIGTERM)
					child.Wait()
				}
				os.WriteFile(filepath.Join(filepath.Dir(filepath.Dir(cfg)), "verdict"), []byte(verdict), 0o644)
				os.Exit(0)
			case "restart":
				startRacingWriter("exit", cfg) // its pid is learnt by no one
				os.Exit(0)
			case "exit":
				os.Exit(0)
			}
		default:
		}
		os.WriteFile(filepath.Join(filepath.Dir(cfg), fmt.Sprintf("state-%d.json", i%50)), []byte("{}"), 0o644)
		time.Sleep(time.Millisecond)
	}
}

func startRacingWriter(mode, cfg string) (*exec.Cmd, error) {
	cmd := exec.Command(os.Args[0], "agent", "--config", cfg)
	cmd.Env = append(os.Environ(), racingWriterEnv+"="+mode)
	return cmd, cmd.Start()
}

// racingWriterIn starts a racing writer of mode as the agent of
// <temp>/emu-race/agents/vpngw.json, killed with whatever it started when
// the test ends, and returns that config path.
func racingWriterIn(t *testing.T, mode string) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "emu-race", "agents")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(dir, "vpngw.json")
	w, err := startRacingWriter(mode, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for _, pid := range must(lab.AgentPIDsForTest(cfg)) {
			syscall.Kill(pid, syscall.SIGKILL)
		}
		w.Process.Kill()
		w.Wait()
	})
	return cfg
}

// Destroy removes the lab directory right after it stopped the agents: it
// must return only once every process started with the agent's config is
// gone, a worker restarted meanwhile and one that ignores SIGTERM included,
// or the directory removal races their writes ("directory not empty").
func TestStopAgent_WritersRacingTheRemoval_AllGoneBeforeItReturns(t *testing.T) {
	for _, mode := range []string{"exit", "restart", "ignore"} {
		t.Run(mode, func(t *testing.T) {
			cfg := racingWriterIn(t, mode)
			dir := filepath.Dir(cfg)
			for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(time.Millisecond) {
				if entries, _ := os.ReadDir(dir); len(entries) > 0 {
					break
				}
				if time.Now().After(deadline) {
					t.Fatal("the writer never wrote")
				}
			}
			if err := lab.StopAgentForTest(cfg); err != nil {
				t.Fatal(err)
			}
			if left := must(lab.AgentPIDsForTest(cfg)); len(left) > 0 {
				t.Fatalf("stopAgent returned with pids %v still running with --config %s", left, cfg)
			}
			if err := os.RemoveAll(filepath.Dir(dir)); err != nil {
				t.Fatalf("remove the lab directory: %v", err)
			}
			time.Sleep(20 * time.Millisecond)
			if _, err := os.Stat(dir); !os.IsNotExist(err) {
				t.Fatalf("the lab directory is back after its removal: %v", err)
			}
		})
	}
}

// stopAgent stops the supervisor first and its worker only after, so the
// supervisor never sees its worker end before its own stop (and restarts
// it, as a worker ending on its own is restarted).
func TestStopAgent_SupervisorFirst_ItStopsItsWorkerItself(t *testing.T) {
	cfg := racingWriterIn(t, "supervisor")
	dir := filepath.Dir(cfg)
	for deadline := time.Now().Add(5 * time.Second); len(must(lab.AgentPIDsForTest(cfg))) < 2; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the supervisor's worker never started")
		}
	}
	if err := lab.StopAgentForTest(cfg); err != nil {
		t.Fatal(err)
	}
	verdict, err := os.ReadFile(filepath.Join(filepath.Dir(dir), "verdict"))
	if err != nil || string(verdict) != "stopped its worker" {
		t.Fatalf("the supervisor %q (%v); want it to have stopped its worker itself", verdict, err)
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}
