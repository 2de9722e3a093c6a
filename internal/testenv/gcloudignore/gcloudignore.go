// Package gcloudignore lists the files gcloud uploads from a directory (as
// `gcloud functions deploy --source=DIR` does): every file its .gcloudignore
// does not exclude.
//
// It follows gcloud's own reading of the file, which differs from git's: a
// pattern without a leading slash matches the last segments of a path at
// any depth, even when it has a slash inside (gcloud's `cmd/sandbox/` also
// excludes `x/cmd/sandbox/`; git's would not). A path is excluded when it,
// or any directory above it, matches a pattern.
//
// It reads only the part of the format this repository needs, and refuses
// the rest (negation, `**`, character classes, escapes, #!include
// directives), so that a rule it cannot read fails a test instead of being
// misread. Tests compare it with `gcloud meta list-files-for-upload`.
package gcloudignore

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
)

// FileName is the ignore file gcloud reads at the top of the uploaded directory.
const FileName = ".gcloudignore"

// Rules are the patterns of one ignore file.
type Rules struct {
	patterns []pattern
}

type pattern struct {
	// segments are globs, each matching one path segment.
	segments []string
	// anchored patterns (a leading /) match whole paths, from the top.
	anchored bool
	// dirOnly patterns (a trailing /) match directories only.
	dirOnly bool
}

// Parse reads an ignore file's text. Its error names every line it does not
// support.
func Parse(text string) (*Rules, error) {
	var r Rules
	var problems []error
	for i, line := range strings.Split(text, "\n") {
		p, ok, err := parseLine(line)
		if err != nil {
			problems = append(problems, fmt.Errorf("line %d %q: %w", i+1, line, err))
		} else if ok {
			r.patterns = append(r.patterns, p)
		}
	}
	return &r, errors.Join(problems...)
}

func parseLine(line string) (pattern, bool, error) {
	switch {
	case line == "":
		return pattern{}, false, nil
	case strings.HasPrefix(line, "#"):
		if strings.HasPrefix(strings.TrimSpace(line[1:]), "!include:") {
			return pattern{}, false, errors.New("#!include directives are not supported")
		}
		return pattern{}, false, nil
	case strings.HasPrefix(line, "!"):
		return pattern{}, false, errors.New("negation (!) is not supported")
	case strings.TrimRight(line, " \t\r") != line:
		return pattern{}, false, errors.New("trailing white space is not supported")
	case strings.ContainsAny(line, `\[]`):
		return pattern{}, false, errors.New(`escapes (\) and character classes ([]) are not supported`)
	case strings.Contains(line, "**"):
		return pattern{}, false, errors.New("** is not supported")
	}
	var p pattern
	line, p.dirOnly = strings.CutSuffix(line, "/")
	line, p.anchored = strings.CutPrefix(line, "/")
	p.segments = strings.Split(line, "/")
	for i, s := range p.segments {
		switch {
		case s == "":
			return pattern{}, false, errors.New("empty path segments are not supported")
		case s == "*" && i == 0:
			// gcloud gives a leading lone * a meaning of its own.
			return pattern{}, false, errors.New("a leading lone * is not supported")
		}
		if _, err := path.Match(s, ""); err != nil {
			return pattern{}, false, err
		}
	}
	return p, true, nil
}

// Excludes tells whether the slash-separated path, relative to the uploaded
// directory, is left out: itself or a directory above it matches a pattern.
// isDir tells whether path itself is a directory.
func (r *Rules) Excludes(name string, isDir bool) bool {
	segments := strings.Split(name, "/")
	for n := 1; n <= len(segments); n++ {
		dir := n < len(segments) || isDir
		for _, p := range r.patterns {
			if p.matches(segments[:n], dir) {
				return true
			}
		}
	}
	return false
}

// matches tells whether p matches the path made of segments.
func (p pattern) matches(segments []string, isDir bool) bool {
	if p.dirOnly && !isDir {
		return false
	}
	if len(p.segments) > len(segments) || (p.anchored && len(p.segments) != len(segments)) {
		return false
	}
	tail := segments[len(segments)-len(p.segments):]
	for i, glob := range p.segments {
		if ok, _ := path.Match(glob, tail[i]); !ok {
			return false
		}
	}
	return true
}

// Files lists, sorted and slash-separated, the files gcloud uploads from
// root: those root's .gcloudignore does not exclude. A symbolic link is an
// error (gcloud follows them; this package does not).
func Files(root string) ([]string, error) {
	text, err := os.ReadFile(filepath.Join(root, FileName))
	if err != nil {
		return nil, err
	}
	rules, err := Parse(string(text))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Join(root, FileName), err)
	}
	var files []string
	err = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p == root {
			return nil
		}
		rel, err := filepath.Rel(root, p)
		if err != nil {
			return err
		}
		rel = filepath.ToSlash(rel)
		switch {
		case d.Type()&fs.ModeSymlink != 0:
			return fmt.Errorf("%s is a symbolic link, which this package does not follow", rel)
		case rules.Excludes(rel, d.IsDir()):
			if d.IsDir() {
				return filepath.SkipDir
			}
		case d.Type().IsRegular():
			files = append(files, rel)
		}
		return nil
	})
	slices.Sort(files)
	return files, err
}
