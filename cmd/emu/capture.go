package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/urfave/cli/v2"

	"github.com/emu-lab/emu/internal/capture"
	"github.com/emu-lab/emu/internal/lab"
)

func captureCommand() *cli.Command {
	return &cli.Command{
		Name:      "capture",
		Usage:     "capture packets on a node's interface (like tcpdump, inside the lab)",
		ArgsUsage: "NODE:IF",
		UsageText: "emu capture -t FILE NODE:IF [-w FILE.pcap | -w -] [--count N] [--duration D]",
		Description: `Captures on one interface of a node with an AF_PACKET socket inside the node's
namespace. Without -w it prints one line per frame; with -w it writes a pcap file
(nanosecond timestamps), "-w -" writes pcap to stdout:
   emu capture -t topologies/static.yaml vbr:eth1 -w - | wireshark -k -i -
Deploy writes the lab's ESP keys as emu-<lab>/esp_sa (mode 0600) in Wireshark's format:
copy it to ~/.config/wireshark/esp_sa (or load it under Preferences → Protocols → ESP)
and Wireshark decrypts the tunnel. Stops on Ctrl-C, --count or --duration.
NODE:IF is a node of the topology and one of its interfaces (links: endpoints); a wrong
one is refused with the interfaces the node has.

Examples:
   emu capture -t topologies/static.yaml vbr:eth1 -c 10
   emu capture -t topologies/static.yaml cen:eth1 -d 10s -w cen.pcap`,
		Flags: []cli.Flag{
			topoFlag,
			&cli.StringFlag{Name: "write", Aliases: []string{"w"}, Usage: "write a pcap `FILE` (- for stdout)"},
			&cli.IntFlag{Name: "count", Aliases: []string{"c"}, Usage: "stop after `N` frames"},
			&cli.DurationFlag{Name: "duration", Aliases: []string{"d"}, Usage: "stop after `D` (e.g. 10s)"},
		},
		Action: func(c *cli.Context) error {
			if c.NArg() != 1 {
				return invalidInput{fmt.Errorf("give one NODE:IF to capture on: %s", c.Command.UsageText)}
			}
			node, ifname, err := nodeInterface(c.Args().First())
			if err != nil {
				return err
			}
			name, _, err := deployedName(c)
			if err != nil {
				return err
			}
			if err := requireRoot(rootToEnter); err != nil {
				return err
			}
			ns, err := nodeNamespaceInterface(name, node, ifname)
			if err != nil {
				return err
			}
			out, onPacket, closeOut, err := captureSink(c)
			if err != nil {
				return err
			}
			defer closeOut()
			count := 0
			opt := capture.Options{MaxPackets: c.Int("count"), Duration: c.Duration("duration"), OnPacket: func(p capture.Packet) error {
				count++
				return onPacket(p)
			}}
			cp, err := capture.Start(c.Context, ns, ifname, opt)
			if err != nil {
				return err
			}
			fmt.Fprintf(c.App.ErrWriter, "capturing on %s:%s (%s); Ctrl-C to stop\n", node, ifname, ns)
			if err := cp.Wait(); err != nil && !errors.Is(err, c.Context.Err()) {
				return err
			}
			fmt.Fprintf(c.App.ErrWriter, "%d frames captured, %d dropped by the kernel%s\n", count, cp.Dropped(), out)
			if rec, _ := deployer(c).Store.Get(name); rec != nil {
				if _, err := os.Stat(filepath.Join(rec.Dir, lab.ESPSAFile)); err == nil {
					fmt.Fprintf(c.App.ErrWriter, "ESP keys for Wireshark: %s\n", filepath.Join(rec.Dir, lab.ESPSAFile))
				}
			}
			return nil
		},
	}
}

// captureSink returns where frames go: a pcap file, pcap on stdout, or one
// summary line each.
func captureSink(c *cli.Context) (desc string, on func(capture.Packet) error, closeFn func(), err error) {
	path := c.String("write")
	if path == "" {
		w := c.App.Writer
		return "", func(p capture.Packet) error { return printFrame(w, p) }, func() {}, nil
	}
	var f io.WriteCloser = os.Stdout
	if path != "-" {
		file, err := os.Create(path)
		if err != nil {
			return "", nil, nil, fmt.Errorf("create %s: %w", path, err)
		}
		f = file
		desc = " into " + path
	}
	pw, err := capture.NewPcapWriter(f, capture.DefaultSnaplen)
	if err != nil {
		f.Close()
		return "", nil, nil, err
	}
	return desc, pw.Write, func() { f.Close() }, nil
}

func printFrame(w io.Writer, p capture.Packet) error {
	dir := "in "
	if p.Outgoing {
		dir = "out"
	}
	line := fmt.Sprintf("%s %s %s %d bytes", p.Time.Format("15:04:05.000000"), p.Interface, dir, p.Length)
	if h, err := p.Decode(); err == nil {
		line += fmt.Sprintf(" %s > %s %s", h.Src, h.Dst, h.Protocol)
		if h.ESP {
			line += fmt.Sprintf(" spi 0x%08x seq %d", h.SPI, h.Seq)
		}
	}
	_, err := fmt.Fprintln(w, line)
	return err
}
