package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestRunExitStatus(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.ini")
	bad := filepath.Join(dir, "bad.conf")
	if err := os.WriteFile(good, []byte("[dns_forwarder]\nupstream_dns_server_ports = 127.0.0.1:5353\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bad, []byte("[DNS_FORWARDER]\nmax_udp_size = 100\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		args   []string
		code   int
		output string
	}{
		{[]string{"check-config", "--config-file", good}, exitOK, "configuration OK"},
		{[]string{"check-config", "--config-file", good, "--config-dir", dir}, exitUsage, "max_udp_size"},
		{[]string{"--config-file", bad}, exitUsage, `"100"`},
		{[]string{"check-config", "--config-file", filepath.Join(dir, "missing.ini")}, exitUsage, "missing.ini"},
		{[]string{"frobnicate", "--config-file", good}, exitUsage, "unknown command"},
		{[]string{"--no-such-flag"}, exitUsage, "no-such-flag"},
		{[]string{"check-config", "stray"}, exitUsage, "unexpected argument"},
	}
	for _, c := range cases {
		var stdout, stderr bytes.Buffer
		code := run(c.args, &stdout, &stderr)
		out := stdout.String() + stderr.String()
		if code != c.code || !strings.Contains(out, c.output) {
			t.Errorf("%v: exit %d, output %q; want %d and %q", c.args, code, out, c.code, c.output)
		}
	}
}
