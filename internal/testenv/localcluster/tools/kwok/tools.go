//go:build tools

// Package kwok pins the kwok program that localcluster builds. It is a module
// of its own because kwok v0.8.0 needs k8s.io libraries v0.36, while the
// parent tools module replaces them all by v0.32.4 for the control plane.
//
// To change the version, edit go.mod, run "GONOSUMDB=k8s.io,sigs.k8s.io go
// mod tidy" in this directory, and update KwokVersion in ../../binaries.go.
package kwok

import (
	_ "sigs.k8s.io/kwok/cmd/kwok"
)
