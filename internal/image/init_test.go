package image

import (
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// TestInitIsCheap checks what this package's initialisation allocates, as
// GODEBUG=inittrace=1 reports it for this very test binary: every message
// and every cold start pays it, even a QUEUED message that never parses an
// image. Compiling the counted repetitions of the digest and tag patterns
// at start-up cost 2,500 allocations and about 0.3 ms.
func TestInitIsCheap(t *testing.T) {
	const maxAllocs = 10
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "GODEBUG=inittrace=1")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", os.Args[0], err, out)
	}
	if !regexp.MustCompile(`(?m)^init testing @`).Match(out) {
		t.Fatalf("no init trace in:\n%s", out)
	}
	allocs := 0 // A package with nothing to initialise has no line.
	if m := regexp.MustCompile(`(?m)^init github\.com/onnewimage/onnewimage/internal/image @.*, (\d+) allocs$`).FindSubmatch(out); m != nil {
		allocs, _ = strconv.Atoi(string(m[1]))
	}
	if allocs > maxAllocs {
		t.Errorf("initialising internal/image allocates %d times, want at most %d", allocs, maxAllocs)
	}
}

// FuzzChecksMatchPatterns checks that the hand-written checks accept
// exactly what the regular expressions they replace match. (The patterns
// are compiled here, not at package level: that would count in
// TestInitIsCheap.)
func FuzzChecksMatchPatterns(f *testing.F) {
	digestPattern := regexp.MustCompile(`^(sha256:[a-f0-9]{64}|sha512:[a-f0-9]{128})$`)
	sha256Pattern := regexp.MustCompile(`^sha256:[a-f0-9]{64}$`)
	tagPattern := regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$`)
	componentPattern := regexp.MustCompile(`^[a-zA-Z0-9]+(?:(?:[._]|__|-+)[a-zA-Z0-9]+)*$`)
	hostPattern := regexp.MustCompile(`^[A-Za-z0-9.-]+(?::[0-9]+)?$`)
	for _, s := range []string{
		"", "a", "A", "_", ".", "-", ":", "é", "a\x00",
		d1, d1[:70], d1 + "0", "sha256:" + strings.ToUpper(d1[7:]), "sha512:" + d1[7:] + d1[7:], "sha512:" + d1[7:], "md5:" + d1[7:],
		"v1.2", "latest", "_x", ".x", "-x", "x-", strings.Repeat("a", 128), strings.Repeat("a", 129),
		"web", "web-app", "web--app", "web__app", "web___app", "web._app", "web.", ".web", "a.b_c-d", "PROJECT_ID", "a-_b",
		"gcr.io", "localhost:5000", "host:", ":5000", "host:50a0", "host:1:2", "us-docker.pkg.dev",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		for _, c := range []struct {
			name string
			got  bool
			re   *regexp.Regexp
		}{
			{"validDigest", validDigest(s), digestPattern},
			{"hexDigest sha256", hexDigest(s, "sha256:", 64), sha256Pattern},
			{"validTag", validTag(s), tagPattern},
			{"validComponent", validComponent(s), componentPattern},
			{"validHost", validHost(s), hostPattern},
		} {
			if want := c.re.MatchString(s); c.got != want {
				t.Errorf("%s(%q) = %v, want %v (%s)", c.name, s, c.got, want, c.re)
			}
		}
	})
}
