package config

import (
	"slices"
	"strconv"
	"strings"

	"github.com/onnewimage/onnewimage/internal/target"
)

// provenance reads VERIFY_BUILD and BUILD_PROJECTS. The build projects
// default to project (PROJECT), else to every cluster project of targets;
// with confirmation on, a configuration that deploys builds and names none
// is a problem.
func provenance(get func(string) string, project string, targets []target.Target, needImage bool, bad func(string, ...any)) (verify bool, projects []string) {
	verify = true
	if raw := get("VERIFY_BUILD"); raw != "" {
		b, err := strconv.ParseBool(raw)
		if err != nil {
			bad("VERIFY_BUILD=%q is not a boolean (true or false)", raw)
		}
		verify = b
	}
	if raw := get("BUILD_PROJECTS"); raw != "" {
		for _, p := range strings.Split(raw, ",") {
			p = strings.TrimSpace(p)
			if p == "" || strings.ContainsAny(p, "/ \t\r\n") {
				bad("BUILD_PROJECTS=%q: %q is not a project ID (a comma-separated list of project IDs)", raw, p)
				continue
			}
			if !slices.Contains(projects, p) {
				projects = append(projects, p)
			}
		}
		return verify, projects
	}
	switch {
	case project != "":
		projects = []string{project}
	default:
		for _, t := range targets {
			if p := t.Cluster.Project; p != "" && !slices.Contains(projects, p) {
				projects = append(projects, p)
			}
		}
	}
	// Without targets, the problems that left none say what to fix first.
	if verify && needImage && len(projects) == 0 && len(targets) > 0 {
		bad("BUILD_PROJECTS is not set, and neither PROJECT nor a GKE cluster of TARGETS names a project: set BUILD_PROJECTS to the projects whose builds may be deployed (or VERIFY_BUILD=false, unsafe)")
	}
	return verify, projects
}
