package config

import (
	"errors"
	"fmt"
	"math"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"unicode"
)

// parseBool parses an oslo.config boolean: true, yes, on, 1, false, no,
// off, 0 in any case. It returns a reason when v is none of them.
func parseBool(v string) (bool, string) {
	switch strings.ToLower(strings.TrimSpace(v)) {
	case "true", "yes", "on", "1":
		return true, ""
	case "false", "no", "off", "0":
		return false, ""
	}
	return false, "not a boolean (want true/false, yes/no, on/off or 1/0)"
}

// parseInt parses a decimal integer in [lo, hi]. It returns a reason when
// v is no such integer.
func parseInt(v string, lo, hi int64) (int64, string) {
	s := strings.TrimSpace(v)
	if s == "" {
		return 0, "empty, not an integer (delete the line to get the default)"
	}
	n, err := strconv.ParseInt(s, 10, 64)
	switch {
	case errors.Is(err, strconv.ErrRange):
		return 0, rangeReason(lo, hi)
	case err != nil:
		return 0, "not an integer"
	case n < lo || n > hi:
		return 0, rangeReason(lo, hi)
	}
	return n, ""
}

// rangeReason is the reason for an integer outside [lo, hi].
func rangeReason(lo, hi int64) string {
	return fmt.Sprintf("out of range (want %d to %d)", lo, hi)
}

// parseCookie parses a flow cookie: decimal, or hexadecimal after "0x".
// 0 is refused because the daemon finds and removes its flows by cookie,
// all ones because OpenFlow reserves it.
func parseCookie(v string) (uint64, string) {
	s := strings.TrimSpace(v)
	var (
		n   uint64
		err error
	)
	if strings.HasPrefix(s, "0x") || strings.HasPrefix(s, "0X") {
		n, err = strconv.ParseUint(s[2:], 16, 64)
	} else {
		n, err = strconv.ParseUint(s, 10, 64)
	}
	switch {
	case errors.Is(err, strconv.ErrRange):
		return 0, "out of range (want at most 64 bits)"
	case err != nil:
		return 0, "not a number (want decimal or 0x-prefixed hex)"
	case n == 0:
		return 0, "must not be 0: the daemon finds and removes its flows by their cookie"
	case n == math.MaxUint64:
		return 0, "0xffffffffffffffff is reserved by OpenFlow"
	}
	return n, ""
}

// checkBridge returns why name is not a usable OVS bridge name, or "".
func checkBridge(name string) string {
	switch {
	case name == "":
		return "empty bridge name"
	case strings.Contains(name, "/"):
		return "a bridge name cannot contain /"
	case strings.ContainsFunc(name, func(r rune) bool { return unicode.IsSpace(r) || unicode.IsControl(r) }):
		return "a bridge name cannot contain whitespace or control characters"
	}
	return ""
}

// checkTarget returns why target is not "unix:PATH" or "tcp:HOST:PORT",
// or "".
func checkTarget(target string) string {
	const want = "want unix:PATH or tcp:HOST:PORT"
	if path, ok := strings.CutPrefix(target, "unix:"); ok {
		if path == "" {
			return "empty socket path (" + want + ")"
		}
		return ""
	}
	rest, ok := strings.CutPrefix(target, "tcp:")
	if !ok {
		return want
	}
	host, port, err := net.SplitHostPort(rest)
	switch {
	case err != nil:
		return want + " ([ADDR]:PORT for IPv6)"
	case host == "":
		return "empty host (" + want + ")"
	}
	if _, reason := parseInt(port, 1, 65535); reason != "" {
		return "port " + strconv.Quote(port) + ": " + reason
	}
	return ""
}

// splitList splits an oslo.config list value at commas and trims the
// items; a trailing comma adds no item and an empty value is no item.
func splitList(v string) []string {
	s := strings.TrimRight(strings.TrimSpace(v), ",")
	if s == "" {
		return nil
	}
	items := strings.Split(s, ",")
	for i, item := range items {
		items[i] = strings.TrimSpace(item)
	}
	return items
}

// parseAddrs parses the spec spelling's list of IP addresses, giving each
// the port. client selects the checks of service addresses over those of
// upstreams. It returns a reason when the list is not valid.
func parseAddrs(v string, port uint16, client bool) ([]netip.AddrPort, string) {
	var (
		list []netip.AddrPort
		seen = map[netip.AddrPort]bool{}
	)
	for _, item := range splitList(v) {
		a, err := netip.ParseAddr(item)
		if err != nil {
			if _, e := netip.ParseAddrPort(item); e == nil {
				return nil, fmt.Sprintf("item %q: not an IP address (this option takes addresses; the port has an option of its own)", item)
			}
			return nil, itemReason(item, "not an IP address")
		}
		ap := netip.AddrPortFrom(a.Unmap(), port)
		if reason := checkItem(item, ap, seen, client); reason != "" {
			return nil, reason
		}
		seen[ap] = true
		list = append(list, ap)
	}
	return nonEmpty(list, client)
}

// parseAddrPorts parses Neutron master's list of "ip:port" and
// "[ipv6]:port" items. A bare address is refused, as Neutron refuses it:
// the port is required. client selects the checks of service addresses
// over those of upstreams. It returns a reason when the list is not valid.
func parseAddrPorts(v string, client bool) ([]netip.AddrPort, string) {
	var (
		list []netip.AddrPort
		seen = map[netip.AddrPort]bool{}
	)
	for _, item := range splitList(v) {
		ap, reason := parseAddrPort(item)
		if reason != "" {
			return nil, itemReason(item, reason)
		}
		if reason := checkItem(item, ap, seen, client); reason != "" {
			return nil, reason
		}
		seen[ap] = true
		list = append(list, ap)
	}
	return nonEmpty(list, client)
}

// parseAddrPort parses one "ip:port" or "[ipv6]:port" item, unmapping an
// IPv4-mapped address.
func parseAddrPort(item string) (netip.AddrPort, string) {
	host, port, err := net.SplitHostPort(item)
	if err != nil {
		if a, e := netip.ParseAddr(strings.TrimSuffix(strings.TrimPrefix(item, "["), "]")); e == nil {
			return netip.AddrPort{}, "missing port (write " + netip.AddrPortFrom(a, 53).String() + " for port 53)"
		}
		return netip.AddrPort{}, "not ip:port or [ipv6]:port"
	}
	a, err := netip.ParseAddr(host)
	if err != nil {
		return netip.AddrPort{}, "not an IP address: " + strconv.Quote(host)
	}
	p, reason := parseInt(port, 1, 65535)
	if reason != "" {
		return netip.AddrPort{}, "port " + strconv.Quote(port) + ": " + reason
	}
	return netip.AddrPortFrom(a.Unmap(), uint16(p)), ""
}

// checkItem returns why ap, parsed from item, cannot join a list that
// already holds the addresses in seen, or "".
func checkItem(item string, ap netip.AddrPort, seen map[netip.AddrPort]bool, client bool) string {
	a := ap.Addr()
	switch {
	case a.IsUnspecified():
		return itemReason(item, "unspecified address")
	case a.IsMulticast():
		return itemReason(item, "multicast address")
	case a == netip.AddrFrom4([4]byte{255, 255, 255, 255}):
		return itemReason(item, "broadcast address")
	case client && a.IsLoopback():
		return itemReason(item, "loopback address (no VM sends to it through the bridge)")
	case client && a.Zone() != "":
		return itemReason(item, "a service address cannot have a zone")
	case seen[ap]:
		return itemReason(item, "listed twice")
	}
	return ""
}

// itemReason is the reason for an invalid list item.
func itemReason(item, why string) string {
	if item == "" {
		return "empty item"
	}
	return "item " + strconv.Quote(item) + ": " + why
}

// nonEmpty returns list, or a reason when it is empty.
func nonEmpty(list []netip.AddrPort, client bool) ([]netip.AddrPort, string) {
	switch {
	case len(list) > 0:
		return list, ""
	case client:
		return nil, "empty list: no service address to answer on"
	}
	return nil, "empty list: the forwarder would have nowhere to send queries"
}
