package image

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"cloud.google.com/go/cloudbuild/apiv1/v2/cloudbuildpb"
	"github.com/google/go-cmp/cmp"
)

const (
	d1 = "sha256:0c7566925d2cd9997a977887b43a9b751a83e7f14301584779f3986eb62c81c6"
	d2 = "sha256:55db666e6e12fd5d098fd9e80d28493520f3de26f77c62385d144d956477322f"
)

func TestParse(t *testing.T) {
	tests := []struct {
		in   string
		want Reference
	}{
		{"web", Reference{Repository: "web"}},
		{"web:v1", Reference{Repository: "web", Tag: "v1"}},
		{"gcr.io/p/web", Reference{Repository: "gcr.io/p/web"}},
		{"us-docker.pkg.dev/p/r/web:latest", Reference{Repository: "us-docker.pkg.dev/p/r/web", Tag: "latest"}},
		{"gcr.io/p/web@" + d1, Reference{Repository: "gcr.io/p/web", Digest: d1}},
		{"gcr.io/p/web:v1.2@" + d1, Reference{Repository: "gcr.io/p/web", Tag: "v1.2", Digest: d1}},
		{"localhost:5000/web", Reference{Repository: "localhost:5000/web"}},
		{"localhost:5000/web:5000", Reference{Repository: "localhost:5000/web", Tag: "5000"}},
		{"registry.local:443/team/web@" + d2, Reference{Repository: "registry.local:443/team/web", Digest: d2}},
		{"127.0.0.1:5000/a/b/c:x_y-z", Reference{Repository: "127.0.0.1:5000/a/b/c", Tag: "x_y-z"}},
		{"gcr.io/PROJECT_ID/quickstart-image", Reference{Repository: "gcr.io/PROJECT_ID/quickstart-image"}},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := Parse(tt.in)
			if err != nil {
				t.Fatalf("Parse(%q): %v", tt.in, err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("Parse(%q) (-want +got):\n%s", tt.in, diff)
			}
			if got.String() != tt.in {
				t.Errorf("Parse(%q).String() = %q, want the input back", tt.in, got.String())
			}
		})
	}
}

func TestParseRejects(t *testing.T) {
	for _, in := range []string{
		"", ":v1", "gcr.io/p/web:", "gcr.io/p/web@", "gcr.io/p/web@sha256:abc",
		"gcr.io/p/web@md5:" + strings.Repeat("a", 32), "gcr.io//web", "gcr.io/p/w#b",
		"gcr.io/p/web:bad tag", "gcr.io/p/web/", "/web", "gcr.io/p/web:-v1",
		"gcr.io/p/web@" + strings.ToUpper(d1),
	} {
		if got, err := Parse(in); !errors.Is(err, ErrInvalid) {
			t.Errorf("Parse(%q) = %+v, %v; want an error wrapping ErrInvalid", in, got, err)
		}
	}
}

func TestPatternMatch(t *testing.T) {
	tests := []struct {
		pattern string
		repo    string
		want    bool
	}{
		// A full repository matches exactly, never by prefix or suffix.
		{"gcr.io/p/web", "gcr.io/p/web", true},
		{"gcr.io/p/web", "gcr.io/p/web-evil", false},
		{"gcr.io/p/web", "gcr.io/p/web/evil", false},
		{"gcr.io/p/web", "gcr.io/evil/web", false},
		{"gcr.io/p/web", "evil.io/p/web", false},
		{"gcr.io/p/web", "us.gcr.io/p/web", false},
		{"gcr.io/p/web", "gcr.io/p/we", false},
		{"us-docker.pkg.dev/p/r/web", "us-docker.pkg.dev/p/r/web", true},
		{"us-docker.pkg.dev/p/r/web", "us-docker.pkg.dev/p/other/web", false},
		{"us-docker.pkg.dev/p/r/web", "eu-docker.pkg.dev/p/r/web", false},
		{"localhost:5000/web", "localhost:5000/web", true},
		{"localhost:5000/web", "localhost:5001/web", false},
		{"localhost:5000/web", "localhost/web", false},
		// A bare name matches the last path segment only.
		{"web", "gcr.io/p/web", true},
		{"web", "us-docker.pkg.dev/p/r/web", true},
		{"web", "web", true},
		{"web", "localhost:5000/web", true},
		{"web", "gcr.io/p/web-evil", false},
		{"web", "gcr.io/p/evil-web", false},
		{"web", "gcr.io/p/web/evil", false},
		{"web", "gcr.io/web/evil", false},
		{"web", "gcr.io/p/webb", false},
	}
	for _, tt := range tests {
		t.Run(tt.pattern+"~"+tt.repo, func(t *testing.T) {
			p, err := ParsePattern(tt.pattern)
			if err != nil {
				t.Fatal(err)
			}
			if got := p.Match(tt.repo); got != tt.want {
				t.Errorf("ParsePattern(%q).Match(%q) = %v, want %v", tt.pattern, tt.repo, got, tt.want)
			}
		})
	}
}

func TestParsePatternRejectsTagAndDigest(t *testing.T) {
	for _, in := range []string{"", "gcr.io/p/web:latest", "gcr.io/p/web@" + d1, "web:v1", "gcr.io/p/w eb"} {
		if _, err := ParsePattern(in); err == nil {
			t.Errorf("ParsePattern(%q) succeeded, want an error", in)
		}
	}
}

// TestParsePatternCase checks IMAGE's case: a host is case-insensitive and
// normalised to lower case; a repository path is lower case in every
// registry, so upper case there is refused rather than never matching.
func TestParsePatternCase(t *testing.T) {
	tests := []struct {
		in, want string // want: the pattern, or the error.
	}{
		{"GCR.io/p/web", "gcr.io/p/web"},
		{"US-Docker.Pkg.Dev/p/r/web", "us-docker.pkg.dev/p/r/web"},
		{"LOCALHOST:5000/web", "localhost:5000/web"},
		{"Localhost/web", "localhost/web"},
		{"gcr.io/p/web", "gcr.io/p/web"},
		{"gcr.io/PROJECT_ID/quickstart-image", `error: image "gcr.io/PROJECT_ID/quickstart-image": upper case in the repository path "PROJECT_ID/quickstart-image": registries accept lower case only`},
		{"gcr.io/p/Web", `error: image "gcr.io/p/Web": upper case in the repository path "p/Web"`},
		{"Web", `error: image "Web": upper case in the repository path "Web"`},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			p, err := ParsePattern(tt.in)
			got := p.String()
			if err != nil {
				got = "error: " + err.Error()
			}
			if strings.HasPrefix(tt.want, "error: ") && strings.HasPrefix(got, tt.want) {
				return
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("ParsePattern(%q) (-want +got):\n%s", tt.in, diff)
			}
		})
	}
}

// TestSelectSaysWhyUpperCaseNeverMatches checks the reason given when the
// only candidates have upper case in their path: names no registry holds
// (such as the redacted PROJECT_ID in captured samples).
func TestSelectSaysWhyUpperCaseNeverMatches(t *testing.T) {
	p, err := ParsePattern("quickstart-image")
	if err != nil {
		t.Fatal(err)
	}
	_, err = Select(p, images("gcr.io/PROJECT_ID/quickstart-image", d1, "gcr.io/PROJECT_ID/quickstart-image:latest", d1, "gcr.io/p/other", d1))
	want := `no pushed image matches "quickstart-image"; ignored gcr.io/PROJECT_ID/quickstart-image: upper case in a repository path, which no registry accepts`
	if err == nil || err.Error() != want {
		t.Errorf("Select() error = %v\nwant %s", err, want)
	}
}

func TestSelectSaysWhichDigestsDisagree(t *testing.T) {
	p, err := ParsePattern("gcr.io/p/web")
	if err != nil {
		t.Fatal(err)
	}
	_, err = Select(p, images("gcr.io/p/web@"+d2, d1))
	want := "pushed name and digest disagree: gcr.io/p/web@" + d2 + " has digest " + d1 + "; neither is deployed"
	if err == nil || err.Error() != want {
		t.Errorf("Select() error = %v\nwant %s", err, want)
	}
}

func images(nameDigest ...string) []*cloudbuildpb.BuiltImage {
	var out []*cloudbuildpb.BuiltImage
	for i := 0; i < len(nameDigest); i += 2 {
		out = append(out, &cloudbuildpb.BuiltImage{Name: nameDigest[i], Digest: nameDigest[i+1]})
	}
	return out
}

func TestSelect(t *testing.T) {
	tests := []struct {
		name    string
		pattern string
		images  []*cloudbuildpb.BuiltImage
		want    string
		wantErr error
	}{
		{"untagged and latest share a digest", "gcr.io/p/web", images("gcr.io/p/web", d1, "gcr.io/p/web:latest", d1), "gcr.io/p/web:latest@" + d1, nil},
		{"a tag other than latest is kept", "gcr.io/p/web", images("gcr.io/p/web:latest", d1, "gcr.io/p/web:7860c99", d1), "gcr.io/p/web:7860c99@" + d1, nil},
		{"tags sorted for a stable choice", "gcr.io/p/web", images("gcr.io/p/web:v2", d1, "gcr.io/p/web:b", d1), "gcr.io/p/web:b@" + d1, nil},
		{"untagged only", "gcr.io/p/web", images("gcr.io/p/web", d1), "gcr.io/p/web@" + d1, nil},
		{"bare name", "web", images("us-docker.pkg.dev/p/r/web:v1", d1), "us-docker.pkg.dev/p/r/web:v1@" + d1, nil},
		{"ignores other images", "gcr.io/p/web", images("gcr.io/p/web-evil", d2, "gcr.io/p/web:v1", d1, "gcr.io/p/web/evil", d2), "gcr.io/p/web:v1@" + d1, nil},
		{"registry port", "localhost:5000/web", images("localhost:5000/web:5000", d1), "localhost:5000/web:5000@" + d1, nil},
		{"no images", "gcr.io/p/web", nil, "", ErrNoMatch},
		{"lookalikes only", "gcr.io/p/web", images("gcr.io/p/web-evil", d1, "gcr.io/p/web/evil", d1, "gcr.io/evil/web", d1), "", ErrNoMatch},
		{"bare name lookalikes", "web", images("gcr.io/p/web-evil", d1, "gcr.io/p/web/evil", d1), "", ErrNoMatch},
		{"no digest", "gcr.io/p/web", images("gcr.io/p/web", ""), "", ErrNoDigest},
		{"two digests", "gcr.io/p/web", images("gcr.io/p/web:a", d1, "gcr.io/p/web:b", d2), "", ErrAmbiguous},
		{"bare name in two repositories", "web", images("gcr.io/p/web", d1, "gcr.io/q/web", d1), "", ErrAmbiguous},
		{"malformed digest", "gcr.io/p/web", images("gcr.io/p/web", "sha256:xyz"), "", ErrBadDigest},
		{"host case ignored", "gcr.io/p/web", images("GCR.IO/p/web:v1", d1), "gcr.io/p/web:v1@" + d1, nil},
		{"host case ignored, bare name", "web", images("GCR.IO/p/web:v1", d1), "gcr.io/p/web:v1@" + d1, nil},
		{"upper case path never matches", "gcr.io/project_id/quickstart-image",
			images("gcr.io/PROJECT_ID/quickstart-image", d1), "", ErrNoMatch},
		{"upper case path never matches a bare name", "quickstart-image",
			images("gcr.io/PROJECT_ID/quickstart-image", d1, "gcr.io/PROJECT_ID/quickstart-image:latest", d1), "", ErrNoMatch},
		{"upper case last segment", "web", images("gcr.io/p/WEB", d1), "", ErrNoMatch},
		{"name and digest agree", "gcr.io/p/web", images("gcr.io/p/web:v1@"+d1, d1), "gcr.io/p/web:v1@" + d1, nil},
		{"name and digest disagree", "gcr.io/p/web", images("gcr.io/p/web@"+d2, d1), "", ErrDigestMismatch},
		{"name and digest disagree beside a good entry", "gcr.io/p/web",
			images("gcr.io/p/web:latest", d1, "gcr.io/p/web:v1@"+d2, d1), "", ErrDigestMismatch},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := ParsePattern(tt.pattern)
			if err != nil {
				t.Fatal(err)
			}
			got, err := Select(p, tt.images)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("Select() error = %v, want %v", err, tt.wantErr)
			}
			if got.String() != tt.want {
				t.Errorf("Select() = %q, want %q", got, tt.want)
			}
			if err == nil && got.Digest == "" {
				t.Errorf("Select() returned %q without a digest", got)
			}
		})
	}
}

// FuzzParse checks that Parse never panics and that what it accepts prints
// back to itself.
func FuzzParse(f *testing.F) {
	for _, s := range []string{"gcr.io/p/web:v1@" + d1, "localhost:5000/web", "web", "a/b:c", "@", ":"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		ref, err := Parse(s)
		if err != nil {
			return
		}
		if ref.String() != s {
			t.Errorf("Parse(%q).String() = %q", s, ref.String())
		}
	})
}

// TestSelectRefusesHostileImages feeds Select the names and digests a
// hostile or broken build could carry beside (or instead of) the real one:
// none is ever selected, and a lookalike never hides the real image.
func TestSelectRefusesHostileImages(t *testing.T) {
	const repo = "us-docker.pkg.dev/demo-project/apps/web"
	hex := strings.Repeat("ab", 32)
	tests := []struct {
		name    string
		images  []*cloudbuildpb.BuiltImage
		wantErr error
	}{
		{"a quote", images(repo+`"`, d1), ErrNoMatch},
		{"a quote in a tag", images(repo+`:v1"`, d1), ErrNoMatch},
		{"a newline", images(repo+"\n", d1), ErrNoMatch},
		{"a forged log line", images(repo+":v1\n{\"severity\":\"NOTICE\"}", d1), ErrNoMatch},
		{"a space", images(repo+" ", d1), ErrNoMatch},
		{"a space inside", images("us-docker.pkg.dev/demo-project/apps/ web", d1), ErrNoMatch},
		{"dot dot", images("us-docker.pkg.dev/demo-project/apps/../apps/web", d1), ErrNoMatch},
		{"dot dot in another repository", images("us-docker.pkg.dev/demo-project/evil/../apps/web", d1), ErrNoMatch},
		{"upper case", images("us-docker.pkg.dev/demo-project/apps/Web", d1), ErrNoMatch},
		{"Cyrillic e", images("us-docker.pkg.dev/demo-project/apps/w\u0435b", d1), ErrNoMatch},
		{"fullwidth letters", images("us-docker.pkg.dev/demo-project/apps/\uff57\uff45\uff42", d1), ErrNoMatch},
		{"Cyrillic e in the host", images("us-dock\u0435r.pkg.dev/demo-project/apps/web", d1), ErrNoMatch},
		{"zero-width space", images("us-docker.pkg.dev/demo-project/apps/web\u200b", d1), ErrNoMatch},
		{"trailing slash", images(repo+"/", d1), ErrNoMatch},
		{"web-evil", images("us-docker.pkg.dev/demo-project/apps/web-evil", d1), ErrNoMatch},
		{"web/evil", images("us-docker.pkg.dev/demo-project/apps/web/evil", d1), ErrNoMatch},
		{"another project's web", images("us-docker.pkg.dev/evil-project/apps/web", d1), ErrNoMatch},
		{"another registry host", images("europe-docker.pkg.dev/demo-project/apps/web", d1), ErrNoMatch},
		{"a host under another domain", images("us-docker.pkg.dev.evil.example/demo-project/apps/web", d1), ErrNoMatch},
		{"a port", images("us-docker.pkg.dev:443/demo-project/apps/web", d1), ErrNoMatch},
		{"no digest", images(repo, ""), ErrNoDigest},
		{"digest of 63 hex", images(repo, "sha256:"+hex[:63]), ErrBadDigest},
		{"digest of 65 hex", images(repo, "sha256:"+hex+"a"), ErrBadDigest},
		{"upper-case hex", images(repo, "sha256:"+strings.ToUpper(hex)), ErrBadDigest},
		{"sha512", images(repo, "sha512:"+hex+hex), ErrBadDigest},
		{"no algorithm", images(repo, hex), ErrBadDigest},
		{"another algorithm", images(repo, "md5:"+hex), ErrBadDigest},
		{"a trailing newline", images(repo, "sha256:"+hex+"\n"), ErrBadDigest},
		{"a leading space", images(repo, " sha256:"+hex), ErrBadDigest},
		{"Unicode digits", images(repo, "sha256:"+strings.Repeat("\u0661", 64)), ErrBadDigest},
	}
	p, err := ParsePattern(repo)
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Select(p, tt.images)
			if !errors.Is(err, tt.wantErr) || got != (Reference{}) {
				t.Errorf("Select() = %q, %v; want nothing and %v", got, err, tt.wantErr)
			}
			if tt.wantErr != ErrNoMatch {
				return
			}
			// Beside the real image, the lookalike changes nothing.
			real := images(repo+":v1", d1)[0]
			got, err = Select(p, append(tt.images, real))
			if err != nil || got.String() != repo+":v1@"+d1 {
				t.Errorf("with the real image too: Select() = %q, %v; want %s:v1@%s", got, err, repo, d1)
			}
		})
	}
}

// TestSelectTenThousandImages: a build pushing 10,000 images is decided in
// one pass, and the error naming what it saw stays short.
func TestSelectTenThousandImages(t *testing.T) {
	const n = 10000
	p, err := ParsePattern("gcr.io/p/web")
	if err != nil {
		t.Fatal(err)
	}
	distinct := make([]*cloudbuildpb.BuiltImage, n)
	upper := make([]*cloudbuildpb.BuiltImage, n)
	for i := range distinct {
		distinct[i] = &cloudbuildpb.BuiltImage{Name: fmt.Sprintf("gcr.io/p/web:t%d", i), Digest: fmt.Sprintf("sha256:%064x", i)}
		upper[i] = &cloudbuildpb.BuiltImage{Name: fmt.Sprintf("gcr.io/P%d/web", i), Digest: d1}
	}
	for name, tt := range map[string]struct {
		images  []*cloudbuildpb.BuiltImage
		wantErr error
	}{
		"10,000 digests of the repository": {distinct, ErrAmbiguous},
		"10,000 upper-case repositories":   {upper, ErrNoMatch},
	} {
		t.Run(name, func(t *testing.T) {
			start := time.Now()
			_, err := Select(p, tt.images)
			t.Logf("Select of %d images: %v", n, time.Since(start))
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("Select() error = %v, want %v", err, tt.wantErr)
			}
			if len(err.Error()) > 1024 {
				t.Errorf("error is %d bytes long, want at most 1024 (it reaches a log line): %.200s...", len(err.Error()), err)
			}
		})
	}
}
