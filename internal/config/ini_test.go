package config

import (
	"errors"
	"reflect"
	"strings"
	"testing"
)

func TestParseINI(t *testing.T) {
	cases := []struct {
		name string
		text string
		want []assignment
	}{
		{"empty", "", nil},
		// The indented "f" line continues e's empty value.
		{"separators and spaces", "[s]\na=1\n  \nb : 2\nc= 3 = 4\nd: x=y\ne =\n  f   =   six  \n", []assignment{
			{section: "s", key: "a", value: "1", line: 2},
			{section: "s", key: "b", value: "2", line: 4},
			{section: "s", key: "c", value: "3 = 4", line: 5},
			{section: "s", key: "d", value: "x=y", line: 6},
			{section: "s", key: "e", value: "\nf   =   six", line: 7},
		}},
		{"section names", "[DEFAULT]\na = 1\n[default]\nb = 2\n[Default]\nc = 3\n[OVS]\nd = 4\n[Dns_Forwarder]\ne = 5\n[ ovs ]\nf = 6\n", []assignment{
			{section: "DEFAULT", key: "a", value: "1", line: 2},
			{section: "DEFAULT", key: "b", value: "2", line: 4},
			{section: "DEFAULT", key: "c", value: "3", line: 6},
			{section: "ovs", key: "d", value: "4", line: 8},
			{section: "dns_forwarder", key: "e", value: "5", line: 10},
			{section: " ovs ", key: "f", value: "6", line: 12},
		}},
		{"comments", "# top\n; top\n[s]\n#a = 1\n;b = 2\nc = 3 # not a comment\nd = 4 ; nor this\n", []assignment{
			{section: "s", key: "c", value: "3 # not a comment", line: 6},
			{section: "s", key: "d", value: "4 ; nor this", line: 7},
		}},
		{"continuation", "[s]\na = 1,\n  2,\n\t3\nb = x\n    # part of b\n\n[t]\nc = y\n", []assignment{
			{section: "s", key: "a", value: "1,\n2,\n3", line: 2},
			{section: "s", key: "b", value: "x\n# part of b", line: 5},
			{section: "t", key: "c", value: "y", line: 9},
		}},
		{"continuation of an empty value", "[s]\na =\n  1\n", []assignment{
			{section: "s", key: "a", value: "\n1", line: 2},
		}},
		{"quotes", "[s]\na = \"x y\"\nb = 'z'\nc = \"\nd = \"x'\ne = ''\n", []assignment{
			{section: "s", key: "a", value: "x y", line: 2},
			{section: "s", key: "b", value: "z", line: 3},
			{section: "s", key: "c", value: "", line: 4},
			{section: "s", key: "d", value: "\"x'", line: 5},
			{section: "s", key: "e", value: "", line: 6},
		}},
		{"CRLF and trailing space", "[s]\r\na = 1  \r\n\r\nb = 2\rc = 3", []assignment{
			{section: "s", key: "a", value: "1", line: 2},
			{section: "s", key: "b", value: "2", line: 4},
			{section: "s", key: "c", value: "3", line: 5},
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseINI("t.ini", []byte(tc.text))
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("got  %+v\nwant %+v", got, tc.want)
			}
		})
	}
}

func TestParseINIErrors(t *testing.T) {
	cases := []struct{ name, text, err string }{
		{"no section", "a = 1\n", `config file t.ini:1: option "a" before any [section]`},
		{"unclosed section", "[s]\n[ovs\n", `config file t.ini:2: section header "[ovs" lacks its closing ]`},
		{"empty section", "\n[]\n", `config file t.ini:2: empty section name`},
		{"no separator", "[s]\njust words\n", `config file t.ini:2: "just words" is neither [section], comment nor key = value`},
		{"empty key", "[s]\n= 1\n", `config file t.ini:2: empty option name in "= 1"`},
		{"continuation first", "  a = 1\n", `config file t.ini:1: unexpected continuation line "  a = 1" (no option above it)`},
		{"continuation after blank", "[s]\na = 1\n\n  2\n", `config file t.ini:4: unexpected continuation line "  2" (no option above it)`},
		{"continuation after comment", "[s]\na = 1\n# note\n  2\n", `config file t.ini:4: unexpected continuation line "  2" (no option above it)`},
		{"continuation after section", "[s]\n  a = 1\n", `config file t.ini:2: unexpected continuation line "  a = 1" (no option above it)`},
		{"not UTF-8", "[s]\na = \xff\n", `config file t.ini: not valid UTF-8`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parseINI("t.ini", []byte(tc.text))
			if err == nil || err.Error() != tc.err {
				t.Fatalf("got %v, want %s", err, tc.err)
			}
			var ce *Error
			if !errors.As(err, &ce) {
				t.Fatalf("error %T is not *Error", err)
			}
		})
	}
}

// TestSyntaxToConfig checks the INI rules through to the Config.
func TestSyntaxToConfig(t *testing.T) {
	c, err := parse(`# leading comment
[dEfAuLt]
debug = yes
[OVS]
integration_bridge=br-x
[Dns_Forwarder]
; a comment
client_dns_servers = 169.254.169.254,
    fd00::254,
upstream_dns_servers: "192.0.2.53"
mtu    =   1400  
`)
	if err != nil {
		t.Fatal(err)
	}
	want := Defaults()
	want.Debug = true
	want.IntegrationBridge = "br-x"
	want.OpenFlowConnection = "unix:/var/run/openvswitch/br-x.mgmt"
	want.ClientServers = aps(t, "169.254.169.254:53", "[fd00::254]:53")
	want.UpstreamServers = aps(t, "192.0.2.53:53")
	want.MTU = 1400
	if !reflect.DeepEqual(c, want) {
		t.Fatalf("got  %+v\nwant %+v", c, want)
	}

	// An indented line continues the option above it, as oslo reads it:
	// here mtu becomes part of upstream_dns_servers.
	_, err = parse("[dns_forwarder]\nupstream_dns_servers = 192.0.2.53\n  mtu = 1400\n")
	want2 := `config file t.ini:2: invalid value "192.0.2.53\nmtu = 1400" for option [dns_forwarder] upstream_dns_servers: item "192.0.2.53\nmtu = 1400": not an IP address`
	if err == nil || err.Error() != want2 {
		t.Fatalf("indented line: got %v, want %s", err, want2)
	}
	// A continuation line without a comma does not start a new item.
	_, err = parse("[dns_forwarder]\nupstream_dns_servers = 192.0.2.53\n  192.0.2.54\n")
	if err == nil || !strings.Contains(err.Error(), `item "192.0.2.53\n192.0.2.54": not an IP address`) {
		t.Fatalf("continuation without comma: %v", err)
	}
}

// FuzzParse: the parser and the validation never panic, and every error is
// a one-line *Error.
func FuzzParse(f *testing.F) {
	f.Add([]byte(agentIni))
	f.Add([]byte("[s]\na = \"\n  'x\n\n[\n"))
	f.Add([]byte("[dns_forwarder]\nupstream_dns_server_ports = [::ffff:192.0.2.1]:53, 192.0.2.1:0\nflow_cookie = 0x\n"))
	f.Add([]byte("[DEFAULT]\ndebug: on\r\n[ovs]\rintegration_bridge = \x00\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		as, err := parseINI("f.ini", data)
		if err == nil {
			for _, a := range as {
				if a.key == "" || a.section == "" || a.line < 1 {
					t.Fatalf("bad assignment %+v", a)
				}
			}
		}
		c, err := build([]source{{name: "f.ini", data: data}})
		if err != nil {
			var ce *Error
			if !errors.As(err, &ce) {
				t.Fatalf("error %T is not *Error", err)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Fatalf("error on more than one line: %q", err.Error())
			}
			return
		}
		if len(c.UpstreamServers) == 0 || len(c.ClientServers) == 0 || c.FlowCookie == 0 || c.ControllerID == 0 || c.MTU < 1280 {
			t.Fatalf("invalid config accepted: %+v", c)
		}
	})
}
