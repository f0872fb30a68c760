package routing

import (
	"fmt"
	"log"
	"maps"
	"slices"
	"strings"

	gobgplog "github.com/osrg/gobgp/v3/pkg/log"
)

// gobgpLogger sends GoBGP's structured log to the agent's logger, one line
// per event, so a node's log tells its whole story in one place. Debug is
// dropped: GoBGP logs every keepalive there.
type gobgpLogger struct{ l *log.Logger }

func (g gobgpLogger) line(level, msg string, fields gobgplog.Fields) string {
	var b strings.Builder
	fmt.Fprintf(&b, "bgp %s: %s", level, msg)
	for _, k := range slices.Sorted(maps.Keys(fields)) {
		if k == gobgplog.FieldFacility {
			continue
		}
		fmt.Fprintf(&b, " %s=%v", k, fields[k])
	}
	return b.String()
}

func (g gobgpLogger) Panic(msg string, f gobgplog.Fields) { g.l.Panic(g.line("panic", msg, f)) }

// Fatal exits like GoBGP's own (logrus) logger does; GoBGP calls it only
// when it cannot go on, e.g. the gRPC socket cannot be opened.
func (g gobgpLogger) Fatal(msg string, f gobgplog.Fields) { g.l.Fatal(g.line("fatal", msg, f)) }
func (g gobgpLogger) Error(msg string, f gobgplog.Fields) { g.l.Print(g.line("error", msg, f)) }
func (g gobgpLogger) Warn(msg string, f gobgplog.Fields)  { g.l.Print(g.line("warn", msg, f)) }
func (g gobgpLogger) Info(msg string, f gobgplog.Fields)  { g.l.Print(g.line("info", msg, f)) }
func (g gobgpLogger) Debug(string, gobgplog.Fields)       {}
func (g gobgpLogger) SetLevel(gobgplog.LogLevel)          {}
func (g gobgpLogger) GetLevel() gobgplog.LogLevel         { return gobgplog.InfoLevel }
