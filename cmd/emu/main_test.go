package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/moby/moby/client"

	"github.com/emu-lab/emu/bench"
	"github.com/emu-lab/emu/internal/lab"
	"github.com/emu-lab/emu/internal/labtest"
	"github.com/emu-lab/emu/internal/netnsx"
	"github.com/emu-lab/emu/internal/testenv"
	"github.com/emu-lab/emu/topologies"
)

// The test binary doubles as emu, so CLI tests run the real command, exit
// codes and all, without a separate build; the agents deploy starts run it
// too, as `emu agent`.
func TestMain(m *testing.M) {
	if os.Getenv("EMU_TEST_AS_EMU") == "1" {
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

type result struct {
	stdout, stderr string
	code           int
}

func emuCmd(t *testing.T, stateDir string, args ...string) *exec.Cmd {
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append(os.Environ(), "EMU_TEST_AS_EMU=1", "EMU_STATE_DIR="+stateDir)
	return cmd
}

// deployCLI deploys a copy of a shipped topology under a fresh lab name with
// `emu deploy`, as root, and destroys it (asserting nothing is left) when
// the test ends. It returns the state directory, the lab name and the copy.
func deployCLI(t *testing.T, topology string) (state, name, topo string) {
	t.Helper()
	labtest.RequireRoot(t)
	state = t.TempDir()
	name = labtest.UniqueName()
	topo = labtest.Copy(t, topology, name)
	t.Cleanup(func() {
		runEmu(t, state, "destroy", "-t", topo, "--cleanup")
		labtest.AssertNothingLeft(t, name)
	})
	if r := runEmu(t, state, "deploy", "-t", topo); r.code != 0 {
		t.Fatalf("deploy: exit %d: %s", r.code, r.stderr)
	}
	return state, name, topo
}

func runEmu(t *testing.T, stateDir string, args ...string) result {
	t.Helper()
	cmd := emuCmd(t, stateDir, args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return result{out.String(), errb.String(), code}
}

const staticTopology = "static.yaml"

func TestCLI_DryRun_PrintsPlanAndChangesNothing(t *testing.T) {
	name := labtest.UniqueName()
	topo := labtest.Copy(t, staticTopology, name)
	r := runEmu(t, t.TempDir(), "deploy", "-t", topo, "--dry-run")
	if r.code != 0 {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	for _, want := range []string{"netns emu-" + name + "-client", "veth emu-" + name + "-onprem:eth2 <-> emu-" + name + "-vbr:eth1", "route 172.16.0.0/16 via 10.0.0.2 in emu-" + name + "-onprem", "nothing was changed"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("plan lacks %q:\n%s", want, r.stdout)
		}
	}
	labtest.AssertNothingLeft(t, name)
	if _, err := os.Stat(filepath.Join(filepath.Dir(topo), "emu-"+name)); !os.IsNotExist(err) {
		t.Error("--dry-run created the lab directory")
	}
}

func TestCLI_InvalidTopology_ExitCode2WithFileAndLine(t *testing.T) {
	topo := labtest.Write(t, "name: bad\ntopology:\n  nodes:\n    a: {kind: router}\n")
	r := runEmu(t, t.TempDir(), "deploy", "-t", topo)
	if r.code != exitInvalid {
		t.Fatalf("exit %d, want %d; stderr: %s", r.code, exitInvalid, r.stderr)
	}
	if want := topo + `:4: unknown kind "router"`; !strings.Contains(r.stderr, want) {
		t.Errorf("stderr lacks %q: %s", want, r.stderr)
	}
}

// The same input error exits 2 from every command that takes -t, with the
// file:line of the mistake, before the command does anything.
func TestCLI_TopologyInputError_Exit2FromEveryCommand(t *testing.T) {
	name := labtest.UniqueName() // no lab of this name is deployed
	type input struct{ name, topo, want string }
	file := func(what, body, at string) input {
		topo := labtest.Write(t, "name: "+name+"\n"+body)
		return input{what, topo, topo + at}
	}
	missing := filepath.Join(t.TempDir(), "nope.yaml")
	inputs := []input{
		file("unknown kind", "topology:\n  nodes:\n    a: {kind: router}\n", `:4: unknown kind "router"`),
		file("tab indentation", "topology:\n\tnodes: {}\n", ":3: a tab indents this line"),
		file("second YAML document", "topology:\n  nodes:\n    a: {kind: host}\n---\nname: other\n", ":5: a second YAML document starts here"),
		file("NUL byte", "topology:\x00\n", ":2: a NUL byte"),
		{"no such file", missing, "read topology: open " + missing},
	}
	commands := []struct {
		name       string
		args, rest []string // before and after -t FILE
	}{
		{"deploy", []string{"deploy"}, nil},
		{"deploy --dry-run", []string{"deploy"}, []string{"--dry-run"}},
		{"destroy", []string{"destroy"}, nil},
		{"check", []string{"check"}, nil},
		{"trace", []string{"trace"}, nil},
		{"graph", []string{"graph"}, nil},
		{"inspect -t", []string{"inspect"}, nil},
		{"fault", []string{"fault", "tunnel", "down"}, []string{"to-vpc"}},
		{"route", []string{"route", "show"}, []string{"onprem"}},
		{"capture", []string{"capture"}, []string{"vbr:eth1", "-c", "1"}},
		{"exec", []string{"exec"}, []string{"client", "--", "true"}},
	}
	state := t.TempDir()
	for _, in := range inputs {
		for _, cmd := range commands {
			t.Run(in.name+"/"+cmd.name, func(t *testing.T) {
				args := append(append(append([]string{}, cmd.args...), "-t", in.topo), cmd.rest...)
				r := runEmu(t, state, args...)
				if r.code != exitInvalid {
					t.Errorf("emu %s: exit %d, want %d; stderr: %s", strings.Join(args, " "), r.code, exitInvalid, r.stderr)
				}
				if !strings.Contains(r.stderr, in.want) {
					t.Errorf("emu %s: stderr lacks %q: %s", strings.Join(args, " "), in.want, r.stderr)
				}
			})
		}
	}
	labtest.AssertNothingLeft(t, name)
}

// Exit 2 on an input error must not strand a lab: a deployed lab is still
// destroyed after its file was edited into something invalid.
// Deploying a lab that is already deployed is refused (exit 2) before
// anything else is said: no "ipsec dataplane" probe result, no "deploying"
// line that reads as if it had started.
func TestCLI_DeployTwice_RefusedFirst_WithoutTheDeployingLine(t *testing.T) {
	state, name, topo := deployCLI(t, staticTopology)
	r := runEmu(t, state, "deploy", "-t", topo)
	want := fmt.Sprintf("emu: lab %q is already deployed from %s: use --reconfigure", name, topo)
	if r.code != exitInvalid || !strings.HasPrefix(r.stderr, want) || strings.Count(strings.TrimSpace(r.stderr), "\n") != 0 || r.stdout != "" {
		t.Errorf("second deploy: exit %d, want %d and stderr only %q...\nstderr: %s\nstdout: %s", r.code, exitInvalid, want, r.stderr, r.stdout)
	}
	if r := runEmu(t, state, "inspect", "-t", topo); r.code != 0 || !strings.Contains(r.stdout, "vpngw") {
		t.Errorf("the refused deploy harmed the lab: inspect exit %d: %s%s", r.code, r.stdout, r.stderr)
	}
}

func TestCLI_DeployedLabWhoseFileTurnedInvalid_StillDestroyed(t *testing.T) {
	state, name, topo := deployCLI(t, staticTopology)
	if err := os.WriteFile(topo, []byte("name: "+name+"\ntopology:\n\tnodes: {}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if r := runEmu(t, state, "graph", "-t", topo); r.code != exitInvalid {
		t.Fatalf("graph of the edited file: exit %d, want %d (the file is meant to be invalid)", r.code, exitInvalid)
	}
	r := runEmu(t, state, "destroy", "-t", topo, "--cleanup")
	if r.code != 0 || !strings.Contains(r.stdout, "destroyed lab") {
		t.Fatalf("destroy: exit %d: %s", r.code, r.stderr)
	}
	labtest.AssertNothingLeft(t, name)
}

func TestCLI_DeployInspectExecDestroy(t *testing.T) {
	labtest.RequireRoot(t)
	state := t.TempDir()
	name := labtest.UniqueName()
	topo := labtest.Copy(t, staticTopology, name)
	t.Cleanup(func() {
		runEmu(t, state, "destroy", "-t", topo, "--cleanup")
		labtest.AssertNothingLeft(t, name)
	})
	r := runEmu(t, state, "deploy", "-t", topo)
	if r.code != 0 {
		t.Fatalf("deploy exit %d: %s", r.code, r.stderr)
	}
	if !strings.Contains(r.stderr, "] routes") || !strings.Contains(r.stdout, "emu-"+name+"-vpngw") {
		t.Errorf("deploy output lacks progress or table:\n%s\n%s", r.stderr, r.stdout)
	}
	r = runEmu(t, state, "deploy", "-t", topo)
	if r.code != exitInvalid || !strings.Contains(r.stderr, "already deployed") {
		t.Errorf("second deploy: exit %d, stderr %s", r.code, r.stderr)
	}

	r = runEmu(t, state, "inspect", "-t", topo, "--format", "json")
	var nodes []nodeView
	if err := json.Unmarshal([]byte(r.stdout), &nodes); err != nil || len(nodes) != 7 {
		t.Fatalf("inspect json: %v, %d nodes: %s", err, len(nodes), r.stdout)
	}
	for _, n := range nodes {
		if n.Node == "vbr" && (len(n.Interfaces) != 2 || n.Interfaces[0].Addrs[0] != "10.0.0.2/30" || n.Interfaces[0].State != "up") {
			t.Errorf("inspect vbr: %+v", n)
		}
	}

	// The exit code of the command passes through, and it runs in the node.
	r = runEmu(t, state, "exec", "-t", topo, "vpngw", "--", "sh", "-c", "cat /proc/sys/net/ipv4/ip_forward; exit 7")
	if r.code != 7 || strings.TrimSpace(r.stdout) != "1" {
		t.Errorf("exec: exit %d stdout %q stderr %q", r.code, r.stdout, r.stderr)
	}
	// A node the lab lacks is a command-line mistake, named as given.
	for _, flag := range []string{"--from", "--to"} {
		r = runEmu(t, state, "trace", "-t", topo, flag, "nobody")
		if want := `trace: ` + flag + ` nobody: no node "nobody" in lab "` + name + `" (nodes: client, onprem,`; r.code != exitInvalid || !strings.Contains(r.stderr, want) {
			t.Errorf("trace %s nobody: exit %d, want %d and %q: %s", flag, r.code, exitInvalid, want, r.stderr)
		}
	}
	// /sys shows the node's own interfaces, not the host's.
	r = runEmu(t, state, "exec", "-t", topo, "vbr", "--", "ls", "/sys/class/net")
	if got := strings.Fields(r.stdout); r.code != 0 || strings.Join(got, " ") != "eth1 eth2 lo" {
		t.Errorf("exec ls /sys/class/net in vbr: exit %d stdout %q stderr %q, want eth1 eth2 lo", r.code, r.stdout, r.stderr)
	}
	r = runEmu(t, state, "exec", "-t", topo, "nosuchnode", "--", "true")
	if r.code != exitInvalid || !strings.Contains(r.stderr, "nosuchnode") {
		t.Errorf("exec in unknown node: exit %d, %s", r.code, r.stderr)
	}

	r = runEmu(t, state, "destroy", "-t", topo, "--cleanup")
	if r.code != 0 || !strings.Contains(r.stdout, "destroyed lab") {
		t.Fatalf("destroy: exit %d: %s", r.code, r.stderr)
	}
	labtest.AssertNothingLeft(t, name)
	if _, err := os.Stat(filepath.Join(filepath.Dir(topo), "emu-"+name)); !os.IsNotExist(err) {
		t.Error("destroy --cleanup left the lab directory")
	}
	r = runEmu(t, state, "destroy", "-t", topo)
	if r.code != 0 || !strings.Contains(r.stdout, "not deployed") {
		t.Errorf("second destroy: exit %d: %s", r.code, r.stderr)
	}
}

func TestCLI_DestroyAll_RemovesEveryRecordedLab(t *testing.T) {
	labtest.RequireRoot(t)
	state := t.TempDir()
	var names []string
	for range 2 {
		name := labtest.UniqueName()
		names = append(names, name)
		topo := labtest.Copy(t, staticTopology, name)
		t.Cleanup(func() { runEmu(t, state, "destroy", "-t", topo) })
		if r := runEmu(t, state, "deploy", "-t", topo); r.code != 0 {
			t.Fatalf("deploy: %s", r.stderr)
		}
	}
	r := runEmu(t, state, "destroy", "--all")
	if r.code != 0 {
		t.Fatalf("destroy --all: exit %d: %s", r.code, r.stderr)
	}
	for _, n := range names {
		labtest.AssertNothingLeft(t, n)
	}
}

func TestCLI_Kill9MidDeploy_DestroyRemovesEverything(t *testing.T) {
	labtest.RequireRoot(t)
	state := t.TempDir()
	name := labtest.UniqueName()
	topo := labtest.Write(t, string(bench.Chain(300).YAML(name)))
	t.Cleanup(func() { labtest.AssertNothingLeft(t, name) })
	cmd := emuCmd(t, state, "deploy", "-t", topo)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// Kill once the deploy is well under way: some namespaces exist.
	deadline := time.Now().Add(20 * time.Second)
	for countNamespaces(name) < 20 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	cmd.Process.Signal(syscall.SIGKILL)
	cmd.Wait()
	if countNamespaces(name) == 0 {
		t.Fatal("no namespace existed when deploy was killed: the test proves nothing")
	}
	r := runEmu(t, state, "destroy", "-t", topo, "--cleanup")
	if r.code != 0 || !strings.Contains(r.stdout, "destroyed lab") {
		t.Fatalf("destroy after kill -9: exit %d: %s", r.code, r.stderr)
	}
	if n := countNamespaces(name); n != 0 {
		t.Errorf("%d namespaces left after destroy", n)
	}
	if left, _ := os.ReadDir(state); len(left) != 0 {
		t.Errorf("records left: %v", left)
	}
}

func countNamespaces(lab string) int {
	entries, _ := os.ReadDir(netnsx.Dir)
	n := 0
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), "emu-"+lab+"-") {
			n++
		}
	}
	return n
}

func TestCLI_Capture_PcapDecryptsWithTheLabsESPSAFile(t *testing.T) {
	labtest.RequireRoot(t)
	tshark, err := exec.LookPath("tshark")
	testenv.Require(t, err, "tshark is the witness that Wireshark decrypts the capture (scripts/setup.sh installs it)")
	state := t.TempDir()
	name := labtest.UniqueName()
	topo := labtest.Copy(t, staticTopology, name)
	t.Cleanup(func() {
		runEmu(t, state, "destroy", "-t", topo, "--cleanup")
		labtest.AssertNothingLeft(t, name)
	})
	if r := runEmu(t, state, "deploy", "-t", topo, "--ipsec-dataplane", "userspace"); r.code != 0 {
		t.Fatalf("deploy: %s", r.stderr)
	}
	pcap := filepath.Join(t.TempDir(), "vbr.pcap")
	capCmd := emuCmd(t, state, "capture", "-t", topo, "vbr:eth1", "-d", "3s", "-w", pcap)
	var capErr bytes.Buffer
	capCmd.Stderr = &capErr
	if err := capCmd.Start(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond)
	if r := runEmu(t, state, "check", "-t", topo); r.code != 0 {
		t.Fatalf("check: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if err := capCmd.Wait(); err != nil {
		t.Fatalf("capture: %v: %s", err, capErr.String())
	}
	if !strings.Contains(capErr.String(), "esp_sa") {
		t.Errorf("capture does not point to the ESP keys: %s", capErr.String())
	}
	home := t.TempDir()
	os.MkdirAll(filepath.Join(home, "wireshark"), 0o700)
	keys, err := os.ReadFile(filepath.Join(filepath.Dir(topo), "emu-"+name, "esp_sa"))
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(home, "wireshark", "esp_sa"), keys, 0o600)
	fields := func(decrypt bool) string {
		cmd := exec.Command(tshark, "-r", pcap, "-o", fmt.Sprintf("esp.enable_encryption_decode:%v", decrypt),
			"-Y", "esp", "-T", "fields", "-e", "ip.src")
		cmd.Env = append(os.Environ(), "XDG_CONFIG_HOME="+home, "HOME="+home)
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("tshark: %v", err)
		}
		return string(out)
	}
	// ip.src lists the outer and, once decrypted, the inner source.
	if clear := fields(false); strings.Contains(clear, "10.1.0.10") {
		t.Fatalf("inner address visible without keys: the capture is not encrypted:\n%s", clear)
	}
	if dec := fields(true); !strings.Contains(dec, "10.0.0.1,10.1.0.10") || !strings.Contains(dec, "172.16.1.10,172.16.2.10") {
		t.Errorf("tshark with the lab's esp_sa did not reveal both inner flows:\n%s", dec)
	}
}

// The kernel probe makes a scratch network namespace (unshare CLONE_NEWNET);
// strace is the independent witness that --dry-run never does, and the
// message must not blame the kernel for what it did not look at.
func TestCLI_DryRun_CreatesNoNamespaceAndBlamesNoKernelOption(t *testing.T) {
	strace, err := exec.LookPath("strace")
	testenv.Require(t, err, "strace is the witness that --dry-run changes nothing (scripts/setup.sh installs it)")
	topo := labtest.Copy(t, "static-bgp.yaml", labtest.UniqueName())
	trace := filepath.Join(t.TempDir(), "strace.out")
	cmd := exec.Command(strace, "-f", "-qq", "-e", "trace=unshare,setns,mount,mkdir,mkdirat,openat", "-o", trace, os.Args[0], "deploy", "-t", topo, "--dry-run")
	cmd.Env = append(os.Environ(), "EMU_TEST_AS_EMU=1", "EMU_STATE_DIR="+filepath.Join(t.TempDir(), "state"))
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("deploy --dry-run under strace: %v\n%s", err, errb.String())
	}
	calls, err := os.ReadFile(trace)
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(calls), "\n") {
		switch {
		case strings.Contains(line, "unshare("), strings.Contains(line, "setns("), strings.Contains(line, "mount("), strings.Contains(line, "mkdir"):
			t.Errorf("--dry-run changed the host: %s", line)
		case strings.Contains(line, "openat(") && (strings.Contains(line, "O_CREAT") || strings.Contains(line, "O_WRONLY") || strings.Contains(line, "O_RDWR")) && !strings.Contains(line, "/dev/null"):
			t.Errorf("--dry-run opened a file for writing: %s", line)
		}
	}
	if strings.Contains(errb.String(), "CONFIG_INET_ESP") || !strings.Contains(errb.String(), "--dry-run does not") {
		t.Errorf("dry-run message: %q", errb.String())
	}
	if !strings.Contains(out.String(), "nothing was changed") {
		t.Errorf("plan: %s", out.String())
	}
}

// After a reboot emptied /run (no record) the lab directory with its keys is
// still beside the topology: destroy says so, and --cleanup removes it.
func TestCLI_DestroyCleanup_NoRecord_RemovesLabDirectoryAndSaysSo(t *testing.T) {
	labtest.RequireRoot(t)
	name := labtest.UniqueName()
	topo := labtest.Copy(t, staticTopology, name)
	labDir := filepath.Join(filepath.Dir(topo), "emu-"+name)
	if err := os.MkdirAll(filepath.Join(labDir, "agents"), 0o700); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"esp_sa", lab.MarkerFile} {
		if err := os.WriteFile(filepath.Join(labDir, f), []byte("keys"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	r := runEmu(t, t.TempDir(), "destroy", "-t", topo)
	if r.code != 0 || !strings.Contains(r.stdout, "not deployed") || !strings.Contains(r.stdout, "kept its lab directory "+labDir) {
		t.Fatalf("destroy: exit %d: %s", r.code, r.stderr)
	}
	r = runEmu(t, t.TempDir(), "destroy", "-t", topo, "--cleanup")
	if r.code != 0 || !strings.Contains(r.stdout, "removed its lab directory "+labDir) {
		t.Fatalf("destroy --cleanup: exit %d: %s", r.code, r.stderr)
	}
	if _, err := os.Lstat(labDir); !os.IsNotExist(err) {
		t.Errorf("%s still there: %v", labDir, err)
	}
}

// --cleanup without a record leaves a directory emu did not create (exit 1),
// the user's files in it untouched.
func TestCLI_DestroyCleanup_NoRecord_UserMadeDirectoryLeftWithExit1(t *testing.T) {
	labtest.RequireRoot(t)
	name := labtest.UniqueName()
	topo := labtest.Copy(t, staticTopology, name)
	notes := filepath.Join(filepath.Dir(topo), "emu-"+name, "sub", "myfile.txt")
	if err := os.MkdirAll(filepath.Dir(notes), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(notes, []byte("mine"), 0o644); err != nil {
		t.Fatal(err)
	}
	r := runEmu(t, t.TempDir(), "destroy", "-t", topo, "--cleanup")
	if r.code != exitFailed || !strings.Contains(r.stderr, "emu did not create it") {
		t.Fatalf("destroy --cleanup: exit %d, want %d: %s", r.code, exitFailed, r.stderr)
	}
	if _, err := os.Stat(notes); err != nil {
		t.Errorf("the user's file is gone: %v", err)
	}
}

// Two files naming the same lab: destroy with the other file refuses (exit
// 2) and names the file that deployed it.
func TestCLI_Destroy_SameNameOtherFile_RefusedWithExit2(t *testing.T) {
	labtest.RequireRoot(t)
	state := t.TempDir()
	name := labtest.UniqueName()
	a, b := labtest.Copy(t, staticTopology, name), labtest.Copy(t, staticTopology, name)
	t.Cleanup(func() {
		runEmu(t, state, "destroy", "-t", a, "--cleanup")
		labtest.AssertNothingLeft(t, name)
	})
	if r := runEmu(t, state, "deploy", "-t", a); r.code != 0 {
		t.Fatalf("deploy: %s", r.stderr)
	}
	r := runEmu(t, state, "destroy", "-t", b, "--cleanup")
	if r.code != exitInvalid || !strings.Contains(r.stderr, "deployed from "+a) {
		t.Fatalf("destroy -t %s: exit %d: %s", b, r.code, r.stderr)
	}
	// Deploying the other file is the same input mistake: exit 2 too,
	// with or without --reconfigure.
	for _, args := range [][]string{{"deploy", "-t", b}, {"deploy", "-t", b, "--reconfigure"}} {
		if r := runEmu(t, state, args...); r.code != exitInvalid || !strings.Contains(r.stderr, "deployed from "+a) {
			t.Errorf("emu %s: exit %d, want %d: %s", strings.Join(args, " "), r.code, exitInvalid, r.stderr)
		}
	}
	if _, err := os.Stat(filepath.Join(netnsx.Dir, "emu-"+name+"-client")); err != nil {
		t.Fatalf("the lab deployed from %s is gone: %v", a, err)
	}
	r = runEmu(t, state, "destroy", "-t", a, "--cleanup")
	if r.code != 0 || !strings.Contains(r.stdout, "destroyed lab \""+name+"\", deployed from "+a+"; removed its lab directory") {
		t.Fatalf("destroy -t %s: exit %d: %s", a, r.code, r.stderr)
	}
}

func TestCLI_NodeWithSoftware_ExecRunsInItsMountNamespace_InspectShowsDaemons(t *testing.T) {
	labtest.RequireRoot(t)
	labtest.RequireHostFiles(t)
	state := t.TempDir()
	name := labtest.UniqueName()
	topo := labtest.Write(t, labtest.Rename(`
name: lab
topology:
  nodes:
    R1:
      kind: linux
      env: {GREETING: hello}
      daemons:
        - {name: d, command: 'echo "$GREETING from R1" > /run/greeting; exec sleep 1000', wait-for: /run/greeting}
`, name))
	t.Cleanup(func() {
		runEmu(t, state, "destroy", "-t", topo, "--cleanup")
		labtest.AssertNothingLeft(t, name)
	})
	if r := runEmu(t, state, "deploy", "-t", topo); r.code != 0 || !strings.Contains(r.stderr, "] software") {
		t.Fatalf("deploy exit %d: %s", r.code, r.stderr)
	}
	// The node's private /run and its env: what its daemon wrote is there.
	r := runEmu(t, state, "exec", "-t", topo, "R1", "--", "sh", "-c", "cat /run/greeting; echo $GREETING")
	if r.code != 0 || r.stdout != "hello from R1\nhello\n" {
		t.Errorf("exec in R1: exit %d stdout %q stderr %q", r.code, r.stdout, r.stderr)
	}
	if _, err := os.Stat("/run/greeting"); err == nil {
		t.Error("the node's /run/greeting is on the host's /run")
	}
	r = runEmu(t, state, "inspect", "-t", topo, "--format", "json")
	var nodes []nodeView
	if err := json.Unmarshal([]byte(r.stdout), &nodes); err != nil || len(nodes) != 1 || len(nodes[0].Daemons) != 1 || nodes[0].Daemons[0].State != "running" {
		t.Errorf("inspect: %v: %s", err, r.stdout)
	}
}

// emu exec in a container node runs in the container, through the engine:
// its filesystem (what the node's exec wrote at its root), its env, and the
// command's exit code as emu's.
func TestCLI_ContainerNode_ExecRunsInTheContainer_ExitCodePassedThrough(t *testing.T) {
	image := labtest.ShellImage(t)
	state := t.TempDir()
	name := labtest.UniqueName()
	topo := labtest.Write(t, labtest.Rename(`
name: lab
topology:
  nodes:
    R1:
      kind: linux
      runtime: docker
      image: `+image+`
      env: {ROLE: first}
      exec: ['echo in the container > /marker']
`, name))
	t.Cleanup(func() {
		runEmu(t, state, "destroy", "-t", topo, "--cleanup")
		labtest.AssertNothingLeft(t, name)
	})
	if r := runEmu(t, state, "deploy", "-t", topo); r.code != 0 {
		t.Fatalf("deploy exit %d: %s", r.code, r.stderr)
	}
	r := runEmu(t, state, "exec", "-t", topo, "R1", "--", "sh", "-c", "cat /marker; echo $ROLE; exit 7")
	if r.code != 7 || r.stdout != "in the container\nfirst\n" || r.stderr != "" {
		t.Errorf("exec in R1: exit %d stdout %q stderr %q, want exit 7 with the container's /marker and env", r.code, r.stdout, r.stderr)
	}
	if _, err := os.Stat("/marker"); err == nil {
		t.Error("/marker is on the host")
	}
	// Ctrl-C reaches the command in the container, which dies of it.
	cmd := emuCmd(t, state, "exec", "-t", topo, "R1", "--", "sh", "-c", "echo started; exec sleep 1000")
	var errb bytes.Buffer
	cmd.Stderr = &errb
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	line, _ := bufio.NewReader(out).ReadString('\n')
	cmd.Process.Signal(os.Interrupt)
	err = cmd.Wait()
	if line != "started\n" || cmd.ProcessState.ExitCode() != 130 {
		t.Errorf("exec interrupted: read %q, %v (%s), want exit 130 (SIGINT)", line, err, errb.String())
	}
}

// The strongSwan scenario through the CLI: `emu ipsec` says who runs each
// end (charon the on-prem one, the VPN gateway's agent the other, with its
// negotiation), and `emu exec` reaches this node's charon through its own
// /run (swanctl's default VICI socket there).
func TestCLI_StrongSwanOnprem_IPsecSaysWhoRunsEachEnd_ExecReachesCharon(t *testing.T) {
	labtest.RequireRoot(t)
	labtest.RequireHostFiles(t)
	_, err := exec.LookPath("swanctl")
	testenv.Require(t, err, "strongSwan (scripts/setup.sh installs it)")
	state, dir, name := t.TempDir(), t.TempDir(), labtest.UniqueName()
	labtest.CopyTree(t, topologies.FS, "strongswan-onprem", dir)
	topo := filepath.Join(dir, "strongswan-onprem.yaml")
	if err := os.WriteFile(topo, []byte(labtest.Rename(labtest.Shipped(t, "strongswan-onprem.yaml"), name)), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		runEmu(t, state, "destroy", "-t", topo, "--cleanup")
		labtest.AssertNothingLeft(t, name)
	})
	if r := runEmu(t, state, "deploy", "-t", topo); r.code != 0 {
		t.Fatalf("deploy exit %d: %s", r.code, r.stderr)
	}
	type view struct {
		Node  string `json:"node"`
		RunBy []struct {
			Connection, Speaker, Peer string
		} `json:"run_by_software"`
		IKE []struct {
			Phase1, Phase2 string
		} `json:"ike"`
	}
	var views []view
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		r := runEmu(t, state, "ipsec", "-t", topo, "--format", "json")
		views = nil
		if err := json.Unmarshal([]byte(r.stdout), &views); err != nil {
			t.Fatalf("emu ipsec: %v: %s %s", err, r.stdout, r.stderr)
		}
		if len(views) == 2 && len(views[1].IKE) == 1 && views[1].IKE[0].Phase2 == "established" || time.Now().After(deadline) {
			break
		}
	}
	if len(views) != 2 || views[0].Node != "onprem" || len(views[0].RunBy) != 1 || views[0].RunBy[0].Speaker != "strongswan" || views[0].RunBy[0].Peer != "vpngw" ||
		views[1].Node != "vpngw" || len(views[1].IKE) != 1 || views[1].IKE[0].Phase1 != "established" || views[1].IKE[0].Phase2 != "established" {
		t.Fatalf("emu ipsec: %+v", views)
	}
	r := runEmu(t, state, "exec", "-t", topo, "onprem", "--", "swanctl", "--list-sas")
	if r.code != 0 || !strings.Contains(r.stdout, "to-vpc: #1, ESTABLISHED, IKEv2") || !strings.Contains(r.stdout, "INSTALLED, TUNNEL-in-UDP") {
		t.Errorf("swanctl --list-sas in onprem: exit %d: %s %s", r.code, r.stdout, r.stderr)
	}
}

// `emu deploy 2>&1 | head -3`: the reader quits after three lines; deploy
// must neither die of SIGPIPE mid-way (namespaces left, no rollback) nor
// fail because no one reads its progress.
func TestCLI_DeployIntoAPipeClosedByItsReader_FinishesTheLab(t *testing.T) {
	labtest.RequireRoot(t)
	state := t.TempDir()
	name := labtest.UniqueName()
	topo := labtest.Copy(t, staticTopology, name)
	t.Cleanup(func() {
		runEmu(t, state, "destroy", "-t", topo, "--cleanup")
		labtest.AssertNothingLeft(t, name)
	})
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	r.Close() // as head does once it has its lines
	cmd := emuCmd(t, state, "deploy", "-t", topo)
	cmd.Stdout, cmd.Stderr = w, w
	err = cmd.Run()
	w.Close()
	if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		t.Fatalf("deploy was killed by %v with its output closed", ws.Signal())
	}
	if err != nil {
		t.Fatalf("deploy with its output closed: %v", err)
	}
	if n := countNamespaces(name); n != 7 {
		t.Errorf("%d namespaces after deploy, want the lab's 7", n)
	}
	rec := runEmu(t, state, "inspect", "-t", topo, "--format", "json")
	if rec.code != 0 || strings.Contains(rec.stdout, "incomplete") {
		t.Errorf("inspect after deploy: exit %d\n%s%s", rec.code, rec.stdout, rec.stderr)
	}
}

// The reviewer's repro: a copy of the deploying file with the same name and
// the ECS moved to .20 failed a healthy lab's checks and broke its tunnel.
// Every command that acts on the deployed lab refuses another file; the
// deploying file edited in place is judged by what was deployed, with a
// warning that it changed.
func TestCLI_DeployedLab_OtherFileRefusedWithExit2_EditedFileJudgedAsDeployed(t *testing.T) {
	labtest.RequireRoot(t)
	state := t.TempDir()
	name := labtest.UniqueName()
	a, b := labtest.Copy(t, staticTopology, name), labtest.Copy(t, staticTopology, name)
	moveECS := func(path string) {
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(strings.ReplaceAll(string(data), "172.16.2.10/24", "172.16.2.20/24")), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	moveECS(b)
	t.Cleanup(func() {
		runEmu(t, state, "destroy", "-t", a, "--cleanup")
		labtest.AssertNothingLeft(t, name)
	})
	if r := runEmu(t, state, "deploy", "-t", a); r.code != 0 {
		t.Fatalf("deploy: %s", r.stderr)
	}
	for _, args := range [][]string{
		{"check", "-t", b},
		{"trace", "-t", b},
		{"fault", "tunnel", "down", "-t", b, "to-vpc"},
		{"fault", "link", "down", "-t", b, "vbr:eth1"},
		{"route", "withdraw", "-t", b},
		{"route", "show", "-t", b},
		{"ipsec", "-t", b},
		{"capture", "-t", b, "vbr:eth1", "-c", "1", "-d", "1s"},
		{"exec", "-t", b, "client", "--", "true"},
		{"inspect", "-t", b},
	} {
		r := runEmu(t, state, args...)
		if r.code != exitInvalid || !strings.Contains(r.stderr, "was deployed from "+a+", not from "+b) {
			t.Errorf("emu %s: exit %d, want %d naming %s: %s", strings.Join(args, " "), r.code, exitInvalid, a, r.stderr)
		}
	}
	// Nothing of the above touched the lab: its checks all pass.
	r := runEmu(t, state, "check", "-t", a)
	if r.code != 0 || strings.Contains(r.stderr, "changed since") {
		t.Fatalf("check -t %s after the refused commands: exit %d\n%s%s", a, r.code, r.stdout, r.stderr)
	}
	moveECS(a)
	r = runEmu(t, state, "check", "-t", a)
	if r.code != 0 || !strings.Contains(r.stdout, "echo reply from 172.16.2.10") {
		t.Fatalf("check -t %s, edited after deploy: exit %d, want the lab judged as deployed (ECS at .10)\n%s%s", a, r.code, r.stdout, r.stderr)
	}
	if !strings.Contains(r.stderr, a+" changed since lab \""+name+"\" was deployed") || !strings.Contains(r.stderr, "deploy --reconfigure -t "+a) {
		t.Fatalf("check -t %s, edited after deploy: no warning that the file changed: %s", a, r.stderr)
	}
}

// A lab of generic nodes has no end systems or tunnels: the checks that
// need them are not applicable, not failed, and the lab passes with a note.
func TestCLI_Check_LinuxOnlyLab_ChecksThatDoNotApplyAreNotRun_Exit0(t *testing.T) {
	labtest.RequireRoot(t)
	state := t.TempDir()
	name := labtest.UniqueName()
	topo := labtest.Write(t, "name: "+name+`
topology:
  nodes:
    r1: {kind: linux, interfaces: {eth1: 192.0.2.1/30}}
    r2: {kind: linux, interfaces: {eth1: 192.0.2.2/30}}
  links:
    - endpoints: ["r1:eth1", "r2:eth1"]
`)
	t.Cleanup(func() {
		runEmu(t, state, "destroy", "-t", topo, "--cleanup")
		labtest.AssertNothingLeft(t, name)
	})
	if r := runEmu(t, state, "deploy", "-t", topo); r.code != 0 {
		t.Fatalf("deploy exit %d: %s", r.code, r.stderr)
	}
	r := runEmu(t, state, "check", "-t", topo)
	if r.code != 0 || strings.Contains(r.stdout, "FAIL") ||
		!strings.Contains(r.stdout, "not applicable: connectivity: needs two end systems (kind host) with an address, found 0") {
		t.Fatalf("check: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	t.Logf("check:\n%s", r.stdout)
}

// A container killed behind emu's back leaves its wired namespace behind, so
// traffic may still pass: the check asks the engine and names the node.
func TestCLI_Check_ContainerNodeKilled_FailsNamingTheDeadNode(t *testing.T) {
	image := labtest.ShellImage(t)
	state := t.TempDir()
	name := labtest.UniqueName()
	topo := labtest.Write(t, labtest.Rename(`
name: lab
topology:
  nodes:
    R1: {kind: linux, runtime: docker, image: `+image+`, interfaces: {eth1: 192.0.2.1/30}}
    R2: {kind: linux, interfaces: {eth1: 192.0.2.2/30}}
  links:
    - endpoints: ["R1:eth1", "R2:eth1"]
`, name))
	t.Cleanup(func() {
		runEmu(t, state, "destroy", "-t", topo, "--cleanup")
		labtest.AssertNothingLeft(t, name)
	})
	if r := runEmu(t, state, "deploy", "-t", topo); r.code != 0 {
		t.Fatalf("deploy exit %d: %s", r.code, r.stderr)
	}
	if r := runEmu(t, state, "check", "-t", topo); r.code != 0 || !strings.Contains(r.stdout, "node R1") {
		t.Fatalf("check of the live lab: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	cli, err := client.New(client.FromEnv)
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	if _, err := cli.ContainerKill(t.Context(), "emu-"+name+"-R1", client.ContainerKillOptions{Signal: "KILL"}); err != nil { // as `docker kill` would
		t.Fatal(err)
	}
	var r result
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if r = runEmu(t, state, "check", "-t", topo); r.code == exitChecksFailed {
			break
		}
	}
	if r.code != exitChecksFailed || !strings.Contains(r.stdout, "node R1 is down: container emu-"+name+"-R1 is exited") {
		t.Fatalf("check after docker kill: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
}

// A daemon that died fails the check, named with its node.
func TestCLI_Check_DaemonKilled_FailsNamingTheNodeAndDaemon(t *testing.T) {
	labtest.RequireRoot(t)
	labtest.RequireHostFiles(t)
	state := t.TempDir()
	name := labtest.UniqueName()
	topo := labtest.Write(t, labtest.Rename(`
name: lab
topology:
  nodes:
    R1:
      kind: linux
      daemons:
        - {name: d, command: 'sleep 1000'}
`, name))
	t.Cleanup(func() {
		runEmu(t, state, "destroy", "-t", topo, "--cleanup")
		labtest.AssertNothingLeft(t, name)
	})
	if r := runEmu(t, state, "deploy", "-t", topo); r.code != 0 {
		t.Fatalf("deploy exit %d: %s", r.code, r.stderr)
	}
	r := runEmu(t, state, "check", "-t", topo, "--format", "json")
	var rs []struct {
		Check, Evidence string
		Passed          bool
	}
	if err := json.Unmarshal([]byte(r.stdout), &rs); err != nil || r.code != 0 || len(rs) == 0 || rs[len(rs)-1].Check != "daemon R1 d" {
		t.Fatalf("check of the live lab: exit %d %v\n%s%s", r.code, err, r.stdout, r.stderr)
	}
	var pid int
	if _, err := fmt.Sscanf(rs[len(rs)-1].Evidence, "running, pid %d", &pid); err != nil {
		t.Fatalf("daemon row %q: %v", rs[len(rs)-1].Evidence, err)
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if r = runEmu(t, state, "check", "-t", topo); r.code == exitChecksFailed {
			break
		}
	}
	if r.code != exitChecksFailed || !strings.Contains(r.stdout, "daemon d of node R1 is dead") {
		t.Fatalf("check after the daemon was killed: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
}
