//go:build tools

// Package tools pins the control-plane programs that localcluster builds
// (etcd, kube-apiserver, kube-controller-manager, kube-scheduler), so that
// this module's go.mod and go.sum cover everything they need and a build
// makes no checksum-database lookup.
//
// k8s.io/kubernetes points its staging modules at ./staging, so go.mod
// replaces each of them by its published v0.32.4. To change a version, edit
// go.mod, run "GONOSUMDB=k8s.io,sigs.k8s.io,go.etcd.io go mod tidy" in this
// directory, and update the version constants in ../binaries.go, which also
// name the cache directory.
package tools

import (
	_ "go.etcd.io/etcd/server/v3"
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
)
