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
// (a worker slower to stop than destroy's grace), "exit" exits.
const racingWriterEnv = "EMU_TEST_RACING_WRITER"

func racingWriterMain() {
	mode := os.Getenv(racingWriterEnv)
	if mode == "" {
		return
	}
	cfg := os.Args[3] // agent --config FILE
	term := make(chan os.Signal, 1)
	signal.Notify(term, syscall.SIGTERM)
	for i := 0; ; i++ {
		select {
		case <-term:
			switch mode {
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

// Destroy removes the lab directory right after it stopped the agents: it
// must return only once every process started with the agent's config is
// gone, a worker restarted meanwhile and one that ignores SIGTERM included,
// or the directory removal races their writes ("directory not empty").
func TestStopAgent_WritersRacingTheRemoval_AllGoneBeforeItReturns(t *testing.T) {
	for _, mode := range []string{"exit", "restart", "ignore"} {
		t.Run(mode, func(t *testing.T) {
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

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}
