package config

import (
	"net"
	"strconv"
	"strings"
)

// Options for running the daemon: metrics, control socket, query log.
const (
	optMetricsListen = "metrics_listen"
	optControlSocket = "control_socket"
	optQueryLog      = "query_log"
	optQuerySample   = "query_log_sample_rate"
)

// Defaults of the operations options.
const (
	// DefaultMetricsListen serves /metrics, /healthz and /readyz on
	// loopback only.
	DefaultMetricsListen = "127.0.0.1:9553"
	// DefaultControlSocket is where `ovs-dns-forwarder status` and
	// `flush-cache` reach the daemon (the systemd unit's
	// RuntimeDirectory).
	DefaultControlSocket = "/run/ovs-dns-forwarder/control.sock"
)

// opsSteps returns the validation steps of the operations options.
func (s settings) opsSteps(c *Config) []func() error {
	return []func() error{
		func() error {
			v, ok := s.get(sectionDNS, optMetricsListen)
			if !ok {
				return nil
			}
			addr := strings.TrimSpace(v.value)
			if addr != "" {
				host, port, err := net.SplitHostPort(addr)
				if err != nil {
					return s.invalid(sectionDNS, optMetricsListen, "want HOST:PORT ([ADDR]:PORT for IPv6), or empty to disable")
				}
				if _, reason := parseInt(port, 1, 65535); reason != "" || host == "" {
					return s.invalid(sectionDNS, optMetricsListen, "want HOST:PORT with a port of 1 to 65535")
				}
			}
			c.MetricsListen = addr
			return nil
		},
		func() error {
			v, ok := s.get(sectionDNS, optControlSocket)
			if !ok {
				return nil
			}
			c.ControlSocket = strings.TrimSpace(v.value)
			return nil
		},
		func() error { return s.boolOption(sectionDNS, optQueryLog, &c.QueryLog) },
		func() error {
			v, ok := s.get(sectionDNS, optQuerySample)
			if !ok {
				return nil
			}
			f, err := strconv.ParseFloat(strings.TrimSpace(v.value), 64)
			if err != nil || !(f > 0 && f <= 1) {
				return s.invalid(sectionDNS, optQuerySample, "want a number above 0 and at most 1")
			}
			c.QueryLogSampleRate = f
			return nil
		},
	}
}
