// Package emulator checks the addresses of the local API emulators the
// function can be pointed at (CONTAINER_EMULATOR_HOST,
// CLOUDBUILD_EMULATOR_HOST, PUBSUB_EMULATOR_HOST), and makes the client
// options that reach one.
//
// An emulator is reached without credentials over plaintext, and what it
// answers is trusted: the Container API emulator names the endpoint and CA to
// which the function then sends its real token. So an emulator must be on
// this machine: CheckHost accepts loopback addresses only, and every
// emulator setting goes through it.
package emulator

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"

	"google.golang.org/api/option"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// Errors CheckHost wraps. Both are configuration errors: no retry helps.
var (
	// ErrNotLoopback means the host is not this machine.
	ErrNotLoopback = errors.New("not a loopback address")
	// ErrMalformed means the value is not host:port.
	ErrMalformed = errors.New("not host:port")
)

// CheckHost returns nil when hostport is HOST:PORT with HOST a loopback IP
// address (127.0.0.0/8, ::1, written [::1]) or "localhost", and PORT a port
// number. Any other host, a missing port and anything unparsable are errors
// wrapping ErrNotLoopback or ErrMalformed.
func CheckHost(hostport string) error {
	host, port, err := net.SplitHostPort(hostport)
	if err != nil || host == "" {
		return fmt.Errorf("%w (e.g. 127.0.0.1:8085)", ErrMalformed)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 || strconv.Itoa(n) != port {
		return fmt.Errorf("%w: port %q is not a port number", ErrMalformed, port)
	}
	if strings.EqualFold(host, "localhost") {
		return nil
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsLoopback() {
		return nil
	}
	return fmt.Errorf("host %s is %w (127.0.0.0/8, ::1 or localhost): an emulator is reached without credentials over plaintext", host, ErrNotLoopback)
}

// ClientOptions are the options of a Google API client that reaches the
// emulator at hostport (checked by CheckHost) over plaintext gRPC, without
// credentials.
func ClientOptions(hostport string) ([]option.ClientOption, error) {
	if err := CheckHost(hostport); err != nil {
		return nil, err
	}
	return []option.ClientOption{
		option.WithEndpoint(hostport),
		option.WithoutAuthentication(),
		option.WithGRPCDialOption(grpc.WithTransportCredentials(insecure.NewCredentials())),
	}, nil
}
