// Package image parses container image references and picks, among the
// images a Cloud Build pushed, the one this function deploys.
//
// A reference has the shape [host[:port]/]path[:tag][@algorithm:hex]. The tag
// follows the last ':' after the last '/', so a registry port is never taken
// for a tag. The function deploys by digest only: the bytes the build tested
// are the bytes the cluster runs.
package image

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"cloud.google.com/go/cloudbuild/apiv1/v2/cloudbuildpb"
)

// Reference is a parsed image reference.
type Reference struct {
	// Repository is everything before the tag and digest, host included:
	// "us-docker.pkg.dev/p/r/web".
	Repository string
	// Tag is the tag without its ':' ("v1.2"), or empty.
	Tag string
	// Digest is "sha256:<64 hex>", or empty.
	Digest string
}

// ErrInvalid is wrapped by every parse error.
var ErrInvalid = errors.New("invalid image reference")

// ErrBadDigest means a matching image carries a digest that is not
// "sha256:" and 64 lower-case hex digits, the only digests registries give.
var ErrBadDigest = errors.New("digest is not sha256:<64 lower-case hex>")

// Parse parses s as an image reference. It rejects empty components and
// malformed tags and digests.
func Parse(s string) (Reference, error) {
	var ref Reference
	rest := s
	if i := strings.IndexByte(rest, '@'); i >= 0 {
		ref.Digest = rest[i+1:]
		rest = rest[:i]
		if !validDigest(ref.Digest) {
			return Reference{}, fmt.Errorf("%w %q: digest %q is not algorithm:hex", ErrInvalid, s, ref.Digest)
		}
	}
	if i := strings.LastIndexByte(rest, ':'); i > strings.LastIndexByte(rest, '/') {
		ref.Tag = rest[i+1:]
		rest = rest[:i]
		if !validTag(ref.Tag) {
			return Reference{}, fmt.Errorf("%w %q: tag %q", ErrInvalid, s, ref.Tag)
		}
	}
	if err := validateRepository(rest); err != nil {
		return Reference{}, fmt.Errorf("%w %q: %v", ErrInvalid, s, err)
	}
	ref.Repository = rest
	return ref, nil
}

func validateRepository(repo string) error {
	if repo == "" {
		return errors.New("empty repository")
	}
	parts := strings.Split(repo, "/")
	if len(parts) > 1 && looksLikeHost(parts[0]) {
		if !validHost(parts[0]) {
			return fmt.Errorf("registry host %q", parts[0])
		}
		parts = parts[1:]
	}
	for _, p := range parts {
		if !validComponent(p) {
			return fmt.Errorf("path component %q", p)
		}
	}
	return nil
}

// looksLikeHost reports whether the first component of a repository names a
// registry host, by the rule Docker uses: it has a '.' or a ':', or is
// "localhost".
func looksLikeHost(first string) bool {
	return strings.ContainsAny(first, ".:") || strings.EqualFold(first, "localhost")
}

// errUpperCase is why a repository with upper case in its path is refused.
var errUpperCase = errors.New("registries accept lower case only")

// canonical returns a valid repository as registries name it: the host in
// lower case (host names are case-insensitive). A path with upper case is an
// error wrapping errUpperCase: no registry holds such a repository.
func canonical(repo string) (string, error) {
	host, path := "", repo
	if first, rest, ok := strings.Cut(repo, "/"); ok && looksLikeHost(first) {
		host, path = strings.ToLower(first)+"/", rest
	}
	if path != strings.ToLower(path) {
		return "", fmt.Errorf("upper case in the repository path %q: %w", path, errUpperCase)
	}
	return host + path, nil
}

// String formats the reference: repository[:tag][@digest].
func (r Reference) String() string {
	s := r.Repository
	if r.Tag != "" {
		s += ":" + r.Tag
	}
	if r.Digest != "" {
		s += "@" + r.Digest
	}
	return s
}

// Pattern is the configured IMAGE: which repository this function deploys.
type Pattern struct {
	repository string
	bare       bool
}

// ParsePattern parses the IMAGE setting. With a '/' it is a full repository,
// matched exactly; without one it is a bare name matched against a
// repository's last path segment. A tag or digest in the setting is an error:
// the build decides the digest. The host is lower-cased; upper case in the
// path is an error, since it could never match a pushed image.
func ParsePattern(s string) (Pattern, error) {
	if s == "" {
		return Pattern{}, errors.New("empty image pattern")
	}
	ref, err := Parse(s)
	if err != nil {
		return Pattern{}, err
	}
	if ref.Tag != "" || ref.Digest != "" {
		return Pattern{}, fmt.Errorf("image %q: give the repository only, without tag or digest (the build decides the digest)", s)
	}
	repo, err := canonical(ref.Repository)
	if err != nil {
		return Pattern{}, fmt.Errorf("image %q: %w", s, err)
	}
	return Pattern{repository: repo, bare: !strings.Contains(s, "/")}, nil
}

// String returns the pattern as configured.
func (p Pattern) String() string { return p.repository }

// Bare reports whether the pattern is a bare name (matched on the last path
// segment only).
func (p Pattern) Bare() bool { return p.bare }

// Match reports whether repository (no tag, no digest) is the one the pattern
// names. The host's case is ignored; a path with upper case never matches.
func (p Pattern) Match(repository string) bool {
	repository, err := canonical(repository)
	return err == nil && p.matchCanonical(repository)
}

// matchCanonical is Match for a repository canonical has already returned.
func (p Pattern) matchCanonical(repository string) bool {
	if !p.bare {
		return repository == p.repository
	}
	last := repository[strings.LastIndexByte(repository, '/')+1:]
	return last == p.repository
}

// Selection errors: the build is not for us, or is unsafe to deploy.
var (
	// ErrNoMatch means no pushed image is in the configured repository.
	ErrNoMatch = errors.New("no pushed image matches")
	// ErrNoDigest means a matching image was pushed without a digest.
	ErrNoDigest = errors.New("matching image has no digest")
	// ErrAmbiguous means matching images carry different digests.
	ErrAmbiguous = errors.New("matching images have different digests")
	// ErrDigestMismatch means a matching image's name pins one digest and its
	// digest field says another: neither can be trusted.
	ErrDigestMismatch = errors.New("pushed name and digest disagree")
)

// Select returns the reference to deploy among a build's pushed images: the
// matching repository (host in lower case) pinned by its digest, keeping a
// tag for readability (the first tag other than "latest" in sort order, else
// "latest"). A pushed name with upper case in its path never matches: no
// registry holds it. It fails with ErrNoMatch, ErrNoDigest, ErrAmbiguous,
// ErrDigestMismatch (a name pinning another digest than its digest field) or
// ErrBadDigest (a matching digest other than sha256:<64 lower-case hex>); it
// never returns an image without a digest.
func Select(p Pattern, images []*cloudbuildpb.BuiltImage) (Reference, error) {
	// One pass, with sets beside the lists: a build may push thousands.
	var digests, tags, upper []string // upper: repositories never pushed, upper case in the path.
	seenDigest, seenUpper := map[string]bool{}, map[string]bool{}
	var repo string
	matched := 0
	for _, img := range images {
		ref, err := Parse(img.GetName())
		if err != nil {
			continue
		}
		canon, err := canonical(ref.Repository)
		if err != nil {
			if !seenUpper[ref.Repository] {
				seenUpper[ref.Repository] = true
				upper = append(upper, ref.Repository)
			}
			continue
		}
		if !p.matchCanonical(canon) {
			continue
		}
		ref.Repository = canon
		if repo != "" && ref.Repository != repo {
			// A bare pattern can match two repositories: refuse to guess.
			return Reference{}, fmt.Errorf("%w: %s and %s both match %q", ErrAmbiguous, repo, ref.Repository, p.repository)
		}
		repo = ref.Repository
		matched++
		d := img.GetDigest()
		if d == "" {
			continue
		}
		if !hexDigest(d, "sha256:", 64) {
			return Reference{}, fmt.Errorf("%w: %s has digest %q", ErrBadDigest, img.GetName(), d)
		}
		if ref.Digest != "" && ref.Digest != d {
			return Reference{}, fmt.Errorf("%w: %s has digest %s; neither is deployed", ErrDigestMismatch, img.GetName(), d)
		}
		if !seenDigest[d] {
			seenDigest[d] = true
			digests = append(digests, d)
		}
		if ref.Tag != "" {
			tags = append(tags, ref.Tag)
		}
	}
	switch {
	case matched == 0 && len(upper) > 0:
		return Reference{}, fmt.Errorf("%w %q; ignored %s: upper case in a repository path, which no registry accepts",
			ErrNoMatch, p.repository, list(upper))
	case matched == 0:
		return Reference{}, fmt.Errorf("%w %q", ErrNoMatch, p.repository)
	case len(digests) == 0:
		return Reference{}, fmt.Errorf("%w: %s", ErrNoDigest, repo)
	case len(digests) > 1:
		return Reference{}, fmt.Errorf("%w: %s has %s", ErrAmbiguous, repo, list(digests))
	}
	return Reference{Repository: repo, Tag: pickTag(tags), Digest: digests[0]}, nil
}

// validDigest reports whether d is sha256:<64 hex> or sha512:<128 hex>, in
// lower case. Checked by hand, not by a regular expression: compiling the
// counted repetitions cost every cold start 2,500 allocations.
func validDigest(d string) bool {
	return hexDigest(d, "sha256:", 64) || hexDigest(d, "sha512:", 128)
}

// hexDigest reports whether d is algorithm (with its ':') followed by n
// lower-case hex digits. sha256 is the only digest Select deploys:
// registries name pushed images by it.
func hexDigest(d, algorithm string, n int) bool {
	hex, ok := strings.CutPrefix(d, algorithm)
	return ok && len(hex) == n && strings.Trim(hex, "0123456789abcdef") == ""
}

// validComponent reports whether p is a path component per the
// distribution spec, but for case: runs of letters and digits joined by
// '.', '_', "__" or any number of '-'. Parse reads any name (captured
// builds carry redacted names such as PROJECT_ID); ParsePattern and Select
// refuse upper case, which no registry holds.
func validComponent(p string) bool {
	for i := 0; i < len(p); {
		j := i
		for j < len(p) && alnum(p[j]) {
			j++
		}
		if j == i {
			return false // Empty, or a separator first or doubled.
		}
		if j == len(p) {
			return true
		}
		k := j
		for k < len(p) && !alnum(p[k]) {
			k++
		}
		if sep := p[j:k]; sep != "." && sep != "_" && sep != "__" && strings.Trim(sep, "-") != "" {
			return false
		}
		i = k
	}
	return false // Empty, or a separator last.
}

// validHost reports whether h is letters, digits, '.' and '-', with an
// optional :port.
func validHost(h string) bool {
	name, port, hasPort := strings.Cut(h, ":")
	if name == "" || strings.TrimFunc(name, func(r rune) bool { return r < 0x80 && (alnum(byte(r)) || r == '.' || r == '-') }) != "" {
		return false
	}
	return !hasPort || port != "" && strings.Trim(port, "0123456789") == ""
}

func alnum(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9'
}

// validTag reports whether tag is a tag per the distribution spec: up to
// 128 letters, digits, '_', '.' and '-', not starting with '.' or '-'.
func validTag(tag string) bool {
	if tag == "" || len(tag) > 128 || tag[0] == '.' || tag[0] == '-' {
		return false
	}
	for i := 0; i < len(tag); i++ {
		c := tag[i]
		if !alnum(c) && c != '_' && c != '.' && c != '-' {
			return false
		}
	}
	return true
}

// listMax is how many names list spells out.
const listMax = 5

// list joins names with ", " for a message, naming at most five and
// counting the rest, so that a build pushing thousands of images still
// makes a short log line.
func list(names []string) string {
	if len(names) <= listMax {
		return strings.Join(names, ", ")
	}
	return fmt.Sprintf("%s and %d more", strings.Join(names[:listMax], ", "), len(names)-listMax)
}

func pickTag(tags []string) string {
	slices.Sort(tags)
	for _, t := range tags {
		if t != "latest" {
			return t
		}
	}
	if len(tags) > 0 {
		return tags[0]
	}
	return ""
}
