package dnswire

import "testing"

func TestAppendNameText(t *testing.T) {
	for _, c := range []struct {
		wire string
		want string
	}{
		{"\x00", "."},
		{"", "."},
		{"\x03www\x07example\x03com\x00", "www.example.com."},
		{"\x03a.b\x01\\\x02\x00z\x00", `a\.b.\\.\000z.`},
		{"\x05abc", "abc."},
	} {
		if got := string(AppendNameText(nil, []byte(c.wire))); got != c.want {
			t.Errorf("%q: got %q, want %q", c.wire, got, c.want)
		}
	}
}
