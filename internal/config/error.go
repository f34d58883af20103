package config

import (
	"fmt"
	"strconv"
	"strings"
	"unicode"
)

// Error is every error Load returns. Its message is one line that names
// where the problem is and what it is, for example
//
//	config file /etc/neutron/plugins/ml2/openvswitch_agent.ini:12: invalid value "abc" for option [dns_forwarder] upstream_dns_port: not an integer
//	config file /etc/neutron/extra.conf: no such file
//	config dir /etc/neutron/conf.d: no such directory
type Error struct {
	// Dir is the --config-dir directory that could not be listed; empty
	// for every other error.
	Dir string
	// File is the configuration file at fault, or the one that set the
	// offending option; empty when a default value is at fault.
	File string
	// Line is the 1-based line in File of the offending line or option;
	// 0 when the error concerns the whole file.
	Line int
	// Section is the option's section as the daemon looks it up
	// ("DEFAULT", "ovs" or "dns_forwarder"); empty for file errors.
	Section string
	// Option is the option at fault; empty for file errors.
	Option string
	// Value is Option's value, continuation lines joined by newlines.
	Value string
	// Conflict, when not empty, is another option of Section that must
	// not be set together with Option: the two are the Neutron spec's and
	// Neutron master's spellings of one setting.
	Conflict string
	// Reason says what is wrong.
	Reason string
}

// Error returns the one-line message.
func (e *Error) Error() string {
	var b strings.Builder
	switch {
	case e.Dir != "":
		b.WriteString("config dir " + printable(e.Dir) + ": ")
	case e.File != "" && e.Line > 0:
		b.WriteString("config file " + printable(e.File) + ":" + strconv.Itoa(e.Line) + ": ")
	case e.File != "":
		b.WriteString("config file " + printable(e.File) + ": ")
	}
	switch {
	case e.Conflict != "":
		fmt.Fprintf(&b, "options [%s] %s and [%s] %s conflict: ", e.Section, e.Option, e.Section, e.Conflict)
	case e.Option != "":
		fmt.Fprintf(&b, "invalid value %q for option [%s] %s: ", e.Value, e.Section, e.Option)
	}
	b.WriteString(e.Reason)
	return b.String()
}

// printable returns path as it is, or quoted when it holds a control
// character (a newline would break the one-line message).
func printable(path string) string {
	if strings.ContainsFunc(path, unicode.IsControl) {
		return strconv.Quote(path)
	}
	return path
}
