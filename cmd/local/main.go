// Command local serves the onNewImage function on this machine, the way the
// Cloud Functions runtime does: through the functions framework, on PORT
// (default 8080), on loopback only unless HOST names another address
// (HOST=0.0.0.0 for every interface): it serves, unauthenticated, with your
// own credentials. LOCAL_ONLY=true is accepted, as the functions framework's
// convention.
//
// The function reads its configuration from the environment (see the
// README). With -event FILE, local also delivers one recorded HTTP request
// (such as testdata/cloudbuild/cloudevent-pubsub-binary-request.lowercase.http)
// to the function once it is listening, prints the answer, and exits: a
// one-command way to run the function on a sample event.
package main

import (
	"bufio"
	"bytes"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/GoogleCloudPlatform/functions-framework-go/funcframework"

	_ "github.com/onnewimage/onnewimage" // Registers onNewImage.
)

func main() {
	event := flag.String("event", "", "deliver this recorded HTTP request to the function, print the answer and exit")
	flag.Parse()

	if os.Getenv("FUNCTION_TARGET") == "" {
		os.Setenv("FUNCTION_TARGET", "onNewImage")
	}
	host, port, err := listenAddr(os.Getenv, *event != "")
	if err != nil {
		log.Fatal(err)
	}
	if *event == "" {
		log.Printf("serving onNewImage on http://%s:%s/", host, port)
		if err := funcframework.StartHostPort(host, port); err != nil {
			log.Fatalf("funcframework.StartHostPort: %v", err)
		}
		return
	}

	req, err := readRequest(*event)
	if err != nil {
		log.Fatal(err)
	}
	addr := host + ":" + port
	go func() { log.Fatal(funcframework.StartHostPort(host, port)) }()
	if err := waitListening(addr, 10*time.Second); err != nil {
		log.Fatal(err)
	}
	req.URL.Scheme, req.URL.Host, req.Host = "http", addr, addr
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		log.Fatalf("delivering %s: %v", *event, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	fmt.Fprintf(os.Stderr, "function answered %s %s\n", resp.Status, bytes.TrimSpace(body))
	if resp.StatusCode >= 300 {
		os.Exit(1)
	}
}

// readRequest reads an HTTP/1.1 request as recorded in a .http file.
func readRequest(path string) (*http.Request, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	// Recorded files end lines with \n; the parser accepts that, but the body
	// length must match what is there.
	head, body, ok := bytes.Cut(raw, []byte("\n\n"))
	if !ok {
		return nil, fmt.Errorf("%s: no blank line between headers and body", path)
	}
	req, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(append(head, "\n\n"...))))
	if err != nil {
		return nil, fmt.Errorf("parsing %s: %w", path, err)
	}
	req.RequestURI = ""
	req.Header.Del("Authorization") // Recorded tokens are placeholders.
	req.Body = io.NopCloser(bytes.NewReader(body))
	req.ContentLength = int64(len(body))
	return req, nil
}

func waitListening(addr string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			return c.Close()
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("function did not listen on %s within %s: %w", addr, timeout, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// listenAddr returns the host and port to serve on, the host bracketed when
// it is an IPv6 address (funcframework.StartHostPort joins them with ':').
//
// local serves with the developer's own credentials (KUBECONFIG, ADC) and
// without authentication, so it listens on loopback unless HOST names another
// address (HOST=0.0.0.0: every interface). LOCAL_ONLY=true, the functions
// framework's convention, is accepted and insists on loopback; since loopback
// is the default, any other LOCAL_ONLY value is an error rather than a way to
// open the port. With -event, local always listens on loopback.
func listenAddr(getenv func(string) string, event bool) (host, port string, err error) {
	port = getenv("PORT")
	if port == "" {
		port = "8080"
	}
	localOnly := getenv("LOCAL_ONLY")
	switch localOnly {
	case "", "true":
	default:
		return "", "", fmt.Errorf("LOCAL_ONLY=%q: local listens on loopback unless HOST names another address (HOST=0.0.0.0 for every interface)", localOnly)
	}
	host = getenv("HOST")
	switch {
	case host == "" || event:
		host = "127.0.0.1"
	case localOnly == "true" && !loopback(host):
		return "", "", fmt.Errorf("HOST=%q is not a loopback address, and LOCAL_ONLY=true: unset one", host)
	}
	if strings.Contains(host, ":") {
		host = "[" + host + "]"
	}
	return host, port, nil
}

// loopback reports whether host names this machine only.
func loopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
