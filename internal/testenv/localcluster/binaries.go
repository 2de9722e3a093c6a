package localcluster

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"
)

// Versions of the programs that make up a local cluster. They must match the
// requirements in tools/go.mod and tools/kwok/go.mod.
const (
	// KubernetesVersion is the version of kube-apiserver,
	// kube-controller-manager and kube-scheduler.
	KubernetesVersion = "v1.32.4"
	// EtcdVersion is the version of etcd.
	EtcdVersion = "v3.5.21"
	// KwokVersion is the version of kwok, which plays the kubelets.
	KwokVersion = "v0.8.0"
)

// versionDir names the cache subdirectory for one set of versions, so that a
// version bump never reuses stale binaries.
const versionDir = "kube-" + KubernetesVersion + "-etcd-" + EtcdVersion + "-kwok-" + KwokVersion

// binary describes one program built from a Go module.
type binary struct {
	name   string // file name in the bin directory
	pkg    string // main package to build
	module string // tools module directory, relative to the tools root
	ldflag string // extra -ldflags
}

// kubeVersionFlags stamps the version that the Kubernetes release scripts
// would have stamped, so /version reports v1.32.4 instead of v0.0.0-master.
const kubeVersionFlags = " -X k8s.io/component-base/version.gitVersion=" + KubernetesVersion +
	" -X k8s.io/component-base/version.gitMajor=1" +
	" -X k8s.io/component-base/version.gitMinor=32" +
	" -X k8s.io/component-base/version.gitTreeState=clean"

var binaries = []binary{
	{name: "etcd", pkg: "go.etcd.io/etcd/server/v3", module: "."},
	{name: "kube-apiserver", pkg: "k8s.io/kubernetes/cmd/kube-apiserver", module: ".", ldflag: kubeVersionFlags},
	{name: "kube-controller-manager", pkg: "k8s.io/kubernetes/cmd/kube-controller-manager", module: ".", ldflag: kubeVersionFlags},
	{name: "kube-scheduler", pkg: "k8s.io/kubernetes/cmd/kube-scheduler", module: ".", ldflag: kubeVersionFlags},
	{name: "kwok", pkg: "sigs.k8s.io/kwok/cmd/kwok", module: "kwok"},
}

// DefaultCacheDir returns the directory where binaries are cached when no
// other is given: $ONNEWIMAGE_CACHE if set, else onnewimage under the user's
// cache directory.
func DefaultCacheDir() (string, error) {
	if dir := os.Getenv("ONNEWIMAGE_CACHE"); dir != "" {
		return dir, nil
	}
	dir, err := os.UserCacheDir()
	if err != nil {
		return "", fmt.Errorf("finding user cache directory: %w", err)
	}
	return filepath.Join(dir, "onnewimage"), nil
}

// toolsDir returns the directory of the tools module, next to this file.
func toolsDir() (string, error) {
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		return "", errors.New("locating localcluster source: runtime.Caller failed")
	}
	dir := filepath.Join(filepath.Dir(file), "tools")
	if _, err := os.Stat(filepath.Join(dir, "go.mod")); err != nil {
		return "", fmt.Errorf("locating tools module (built with -trimpath?): %w", err)
	}
	return dir, nil
}

// AssetsEnv names the variable that points at a directory of prebuilt
// binaries (etcd, kube-apiserver, kube-controller-manager, kube-scheduler,
// kwok), as envtest's KUBEBUILDER_ASSETS does. When it is set, nothing is
// built.
const AssetsEnv = "ONNEWIMAGE_ASSETS"

// EnsureBinaries returns the directory holding etcd, kube-apiserver,
// kube-controller-manager, kube-scheduler and kwok. When $ONNEWIMAGE_ASSETS
// is set it is that directory, which must hold all five (nothing is built,
// and a missing one is an error). Otherwise they are built from Go modules
// into a versioned subdirectory of cacheDir, unless they are already there;
// an empty cacheDir means DefaultCacheDir. Progress goes to log, which may
// be nil.
//
// A file lock in the cache directory serialises builds across processes, and
// every binary is built under a temporary name and renamed into place, so
// concurrent callers never see a half-written file.
func EnsureBinaries(ctx context.Context, cacheDir string, log io.Writer) (binDir string, err error) {
	if log == nil {
		log = io.Discard
	}
	if dir := os.Getenv(AssetsEnv); dir != "" {
		return prebuilt(dir)
	}
	if cacheDir == "" {
		if cacheDir, err = DefaultCacheDir(); err != nil {
			return "", err
		}
	}
	root := filepath.Join(cacheDir, versionDir)
	binDir = filepath.Join(root, "bin")
	if len(missing(binDir)) == 0 {
		return binDir, nil
	}
	if err := os.MkdirAll(binDir, 0o755); err != nil {
		return "", fmt.Errorf("creating binary cache: %w", err)
	}

	unlock, err := lockFile(ctx, filepath.Join(root, "build.lock"), log)
	if err != nil {
		return "", err
	}
	defer unlock()

	todo := missing(binDir) // another process may have built some meanwhile
	if len(todo) == 0 {
		return binDir, nil
	}
	tools, err := toolsDir()
	if err != nil {
		return "", err
	}
	fmt.Fprintf(log, "localcluster: building %d binaries into %s (several minutes on first use)\n", len(todo), binDir)
	start := time.Now()
	for i, b := range todo {
		if err := build(ctx, b, tools, binDir, fmt.Sprintf("%d/%d", i+1, len(todo)), log); err != nil {
			return "", err
		}
	}
	fmt.Fprintf(log, "localcluster: built all binaries in %s\n", time.Since(start).Round(time.Second))
	return binDir, nil
}

// prebuilt checks that dir holds every binary, executable.
func prebuilt(dir string) (string, error) {
	var problems []string
	for _, b := range binaries {
		fi, err := os.Stat(filepath.Join(dir, b.name))
		switch {
		case err != nil:
			problems = append(problems, b.name+" is missing")
		case !fi.Mode().IsRegular() || fi.Mode().Perm()&0o111 == 0:
			problems = append(problems, b.name+" is not an executable file")
		}
	}
	if len(problems) > 0 {
		return "", fmt.Errorf("%s=%s: %s (it must hold etcd %s, kube-apiserver, kube-controller-manager and kube-scheduler %s, and kwok %s; unset it to build them from modules)",
			AssetsEnv, dir, strings.Join(problems, ", "), EtcdVersion, KubernetesVersion, KwokVersion)
	}
	return filepath.Abs(dir)
}

// missing returns the binaries not yet present in binDir.
func missing(binDir string) []binary {
	var out []binary
	for _, b := range binaries {
		if fi, err := os.Stat(filepath.Join(binDir, b.name)); err != nil || !fi.Mode().IsRegular() {
			out = append(out, b)
		}
	}
	return out
}

// lockFile takes an exclusive flock on path, waiting until ctx is done, and
// returns the function that releases it.
func lockFile(ctx context.Context, path string, log io.Writer) (unlock func(), err error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("opening build lock: %w", err)
	}
	waiting := false
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			break
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) && !errors.Is(err, syscall.EINTR) {
			f.Close()
			return nil, fmt.Errorf("locking %s: %w", path, err)
		}
		if !waiting {
			fmt.Fprintf(log, "localcluster: waiting for another process to finish building binaries\n")
			waiting = true
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, fmt.Errorf("waiting for build lock: %w", ctx.Err())
		case <-time.After(500 * time.Millisecond):
		}
	}
	return func() {
		syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
		f.Close()
	}, nil
}

// build runs go build for one binary in its tools module, printing progress
// every half minute, and renames the result into binDir.
func build(ctx context.Context, b binary, tools, binDir, step string, log io.Writer) error {
	tmp := filepath.Join(binDir, fmt.Sprintf(".%s.tmp-%d", b.name, os.Getpid()))
	defer os.Remove(tmp)

	cmd := exec.Command("go", "build", "-trimpath", "-ldflags=-s -w"+b.ldflag, "-o", tmp, b.pkg)
	cmd.Dir = filepath.Join(tools, b.module)
	cmd.Env = append(os.Environ(),
		// The tools modules' go.sum files are complete, so no lookup is made;
		// this only matters if someone edits them.
		"GONOSUMDB=k8s.io,sigs.k8s.io,go.etcd.io",
		// A go.work above the repository must not pull the tools modules in.
		"GOWORK=off",
	)
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}

	fmt.Fprintf(log, "localcluster: [%s] building %s\n", step, b.name)
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting go build for %s: %w", b.name, err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	tick := time.NewTicker(30 * time.Second)
	defer tick.Stop()
	for {
		select {
		case err := <-done:
			if err != nil {
				return fmt.Errorf("building %s: %w\n%s", b.name, err, tail(out.Bytes(), 40))
			}
			if err := os.Rename(tmp, filepath.Join(binDir, b.name)); err != nil {
				return fmt.Errorf("installing %s: %w", b.name, err)
			}
			fmt.Fprintf(log, "localcluster: [%s] built %s in %s\n", step, b.name, time.Since(start).Round(time.Second))
			return nil
		case <-tick.C:
			fmt.Fprintf(log, "localcluster: [%s] still building %s (%s)\n", step, b.name, time.Since(start).Round(time.Second))
		case <-ctx.Done():
			// Kill the whole group: go build leaves its compilers running otherwise.
			syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-done
			return fmt.Errorf("building %s: %w", b.name, ctx.Err())
		}
	}
}

// tail returns at most the last n lines of b.
func tail(b []byte, n int) string {
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
