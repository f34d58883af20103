package resolver

import (
	"context"
	"errors"
	"testing"
)

func TestHandlerFunc(t *testing.T) {
	errNone := errors.New("none")
	var h Handler = HandlerFunc(func(_ context.Context, r *Request, dst []byte) ([]byte, error) {
		if r.InPort == 0 {
			return dst, errNone
		}
		return append(dst, r.Msg...), nil
	})
	out, err := h.ServeDNS(context.Background(), &Request{Msg: []byte("answer"), InPort: 7}, []byte("> "))
	if err != nil || string(out) != "> answer" {
		t.Errorf("got %q, %v", out, err)
	}
	if _, err := h.ServeDNS(context.Background(), &Request{}, nil); !errors.Is(err, errNone) {
		t.Errorf("err %v", err)
	}
}
