package config

import (
	"testing"
)

func TestOpsOptions(t *testing.T) {
	runOptionCases(t, "[dns_forwarder]\n", []optionCase{
		{"set", "metrics_listen = [::1]:9100\ncontrol_socket = /tmp/odf.sock\nquery_log = true\nquery_log_sample_rate = 0.01\n", func(c *Config) {
			c.MetricsListen, c.ControlSocket, c.QueryLog, c.QueryLogSampleRate = "[::1]:9100", "/tmp/odf.sock", true, 0.01
		}, ""},
		{"disabled", "metrics_listen =\ncontrol_socket =\n", func(c *Config) { c.MetricsListen, c.ControlSocket = "", "" }, ""},
		{"bad listen", "metrics_listen = 9100\n", nil,
			`config file t.ini:2: invalid value "9100" for option [dns_forwarder] metrics_listen: want HOST:PORT ([ADDR]:PORT for IPv6), or empty to disable`},
		{"bad rate", "query_log_sample_rate = 0\n", nil,
			`config file t.ini:2: invalid value "0" for option [dns_forwarder] query_log_sample_rate: want a number above 0 and at most 1`},
	})
}
