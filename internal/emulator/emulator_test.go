package emulator

import (
	"errors"
	"testing"
)

func TestCheckHost(t *testing.T) {
	tests := []struct {
		hostport string
		want     error // nil: accepted; else the error it must wrap.
	}{
		{"127.0.0.1:8085", nil},
		{"127.0.0.53:1", nil},
		{"127.255.255.254:65535", nil},
		{"[::1]:8085", nil},
		{"localhost:8085", nil},
		{"LocalHost:8085", nil},
		{"[::ffff:127.0.0.1]:8085", nil}, // IPv4-mapped loopback is loopback.

		{"10.0.0.1:8085", ErrNotLoopback},
		{"0.0.0.0:8085", ErrNotLoopback},
		{"128.0.0.1:8085", ErrNotLoopback},
		{"[::]:8085", ErrNotLoopback},
		{"[fe80::1]:8085", ErrNotLoopback},
		{"container.googleapis.com:443", ErrNotLoopback},
		{"localhost.evil.example:8085", ErrNotLoopback},
		{"127.0.0.1.nip.io:8085", ErrNotLoopback},
		{"localhost.:8085", ErrNotLoopback},
		{"[::1%lo]:8085", ErrNotLoopback},

		{"", ErrMalformed},
		{"127.0.0.1", ErrMalformed},
		{"localhost", ErrMalformed},
		{"::1", ErrMalformed},
		{"127.0.0.1:", ErrMalformed},
		{":8085", ErrMalformed},
		{"127.0.0.1:0", ErrMalformed},
		{"127.0.0.1:65536", ErrMalformed},
		{"127.0.0.1:http", ErrMalformed},
		{"127.0.0.1:-1", ErrMalformed},
		{"http://127.0.0.1:8085", ErrMalformed},
		{"127.0.0.1:8085/path", ErrMalformed},
		{"not a host", ErrMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.hostport, func(t *testing.T) {
			err := CheckHost(tt.hostport)
			if tt.want == nil {
				if err != nil {
					t.Errorf("CheckHost(%q) = %v, want nil", tt.hostport, err)
				}
				return
			}
			if !errors.Is(err, tt.want) {
				t.Errorf("CheckHost(%q) = %v, want an error wrapping %v", tt.hostport, err, tt.want)
			}
		})
	}
}
