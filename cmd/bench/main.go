// Command bench measures onNewImage beside its floors, each pair in the same
// run, and prints one Markdown table of medians and their ratios (the
// README's Performance section is its output):
//
//   - the decision for each kind of message, against a plain protojson
//     decode of the same message's Build (go test -bench Decision);
//   - a warm rolling deploy, event received to answer (after the PATCH was
//     accepted), against a bare client-go GET + PATCH of the same Deployment
//     on the same local cluster, with the function's identity, and against
//     the same after a bare GetBuild (the function confirms each build);
//   - cold start, process start to the first answered event (a QUEUED
//     message, then a deploy), against an empty functions-framework
//     function built the same way, with binary size, peak RSS and the
//     package initialisers' cost (GODEBUG=inittrace=1);
//   - blue-green switch latency: from the watch event showing the idle
//     colour rolled out to the watch event showing the router switched.
//
// Usage, from the repository root (it starts the sandbox's local cluster
// and Pub/Sub emulator, see internal/testenv):
//
//	go run ./cmd/bench [-runs 7]
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"cloud.google.com/go/cloudbuild/apiv1/v2"
	"cloud.google.com/go/cloudbuild/apiv1/v2/cloudbuildpb"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"

	"github.com/onnewimage/onnewimage/internal/emulator"
	"github.com/onnewimage/onnewimage/internal/rollout"
	"github.com/onnewimage/onnewimage/internal/testenv/gkefake"
	"github.com/onnewimage/onnewimage/internal/testenv/sandbox"
)

func main() {
	runs := flag.Int("runs", 7, "runs of each measurement; the table shows medians")
	verbose := flag.Bool("v", false, "print the sandbox's progress")
	flag.Parse()
	log.SetFlags(0)
	ctx, cancel := context.WithTimeout(context.Background(), 45*time.Minute)
	defer cancel()
	b := &bench{runs: *runs, progress: io.Discard}
	if *verbose {
		b.progress = os.Stderr
	}
	if err := b.run(ctx); err != nil {
		log.Fatal(err)
	}
}

type bench struct {
	runs     int
	progress io.Writer
	rows     []row
	notes    []string
	seq      int // Builds made so far.
	// cloudBuild is the running sandbox's Cloud Build stand-in: each build
	// is registered there, as Cloud Build stores a build before it
	// announces it, so that the function confirms it (VERIFY_BUILD).
	cloudBuild *gkefake.CloudBuildServer
}

// row is one line of the table: a measure beside its floor.
type row struct {
	measure, ours, floor, ratio, target string
}

func (b *bench) add(measure string, ours, floor float64, unit, target string) {
	b.rows = append(b.rows, row{measure, format(ours, unit), format(floor, unit), fmt.Sprintf("%.2f", ours/floor), target})
}

func format(v float64, unit string) string {
	switch unit {
	case "ns":
		return fmt.Sprintf("%.1f µs", v/1e3)
	case "ms":
		return fmt.Sprintf("%.1f ms", v)
	case "MiB":
		return fmt.Sprintf("%.1f MiB", v)
	}
	return fmt.Sprintf("%.0f %s", v, unit)
}

func (b *bench) run(ctx context.Context) error {
	log.Printf("decision benchmarks (%d runs)...", b.runs)
	if err := b.decisions(ctx); err != nil {
		return err
	}
	log.Print("rolling sandbox: deploy overhead and cold start...")
	if err := b.withSandbox(ctx, sandbox.Options{}, []string{sandbox.Deployment}, func(sb *sandbox.Sandbox) error {
		if err := b.deployOverhead(ctx, sb); err != nil {
			return err
		}
		return b.coldStart(ctx, sb)
	}); err != nil {
		return err
	}
	log.Print("blue-green sandbox: switch latency...")
	bg := sandbox.Options{
		Manifests:   []string{"k8s/blue-green/deployments.yaml", "k8s/blue-green/service.yaml", "k8s/blue-green/rbac.yaml"},
		FunctionEnv: map[string]string{"STRATEGY": "blue-green", "SERVICE": "web", "ROLLOUT_TIMEOUT": "60s"},
	}
	if err := b.withSandbox(ctx, bg, []string{"web-blue", "web-green"}, func(sb *sandbox.Sandbox) error {
		return b.switchLatency(ctx, sb)
	}); err != nil {
		return err
	}
	fmt.Printf("| measure (median of %d) | onNewImage | floor | ratio | target |\n|---|---|---|---|---|\n", b.runs)
	for _, r := range b.rows {
		fmt.Printf("| %s | %s | %s | %s | %s |\n", r.measure, r.ours, r.floor, r.ratio, r.target)
	}
	fmt.Println()
	for _, n := range b.notes {
		fmt.Println(n)
	}
	return nil
}

func (b *bench) withSandbox(ctx context.Context, opts sandbox.Options, deployments []string, f func(*sandbox.Sandbox) error) error {
	opts.Log = b.progress
	sb, err := sandbox.Start(ctx, opts)
	if err != nil {
		return err
	}
	defer sandbox.RemovePrograms()
	defer sb.Stop()
	b.cloudBuild = sb.CloudBuild
	for _, d := range deployments {
		if _, err := sb.WaitRolledOut(ctx, d, nil); err != nil {
			return err
		}
	}
	return f(sb)
}

// decisions runs BenchmarkDecision runs times and adds each sample's median
// beside its protojson floor's.
func (b *bench) decisions(ctx context.Context) error {
	cmd := exec.CommandContext(ctx, "go", "test", "-run", "^$", "-bench", "^BenchmarkDecision$", "-benchmem",
		"-count", strconv.Itoa(b.runs), "./internal/trigger")
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		return fmt.Errorf("go test -bench: %w\n%s", err, out)
	}
	line := regexp.MustCompile(`^BenchmarkDecision/([^/]+)/(\S+?)(?:-\d+)?\s+\d+\s+([\d.]+) ns/op\s+\d+ B/op\s+(\d+) allocs/op`)
	ns := map[string][]float64{}
	allocs := map[string]float64{}
	var samples []string
	for _, l := range strings.Split(string(out), "\n") {
		m := line.FindStringSubmatch(l)
		if m == nil {
			continue
		}
		key := m[1] + "/" + m[2]
		v, _ := strconv.ParseFloat(m[3], 64)
		ns[key] = append(ns[key], v)
		allocs[key], _ = strconv.ParseFloat(m[4], 64)
		if !slices.Contains(samples, m[1]) {
			samples = append(samples, m[1])
		}
	}
	if len(samples) == 0 {
		return fmt.Errorf("no BenchmarkDecision results in:\n%s", out)
	}
	for _, s := range samples {
		target := ""
		if s == "queued" || s == "working" || s == "failure" {
			target = "≤ 0.10"
		}
		h, f := s+"/handler", s+"/protojson-floor"
		b.add("decision: "+s+" (handler vs protojson decode)", median(ns[h]), median(ns[f]), "ns", target)
		b.add("decision: "+s+", allocations", allocs[h], allocs[f], "allocs", "")
	}
	return nil
}

// build returns a new SUCCESS build of the sandbox's image, newer than every
// build made before, with a digest of its own.
func (b *bench) build() *cloudbuildpb.Build {
	b.seq++
	base, err := sandbox.LoadBuild("testdata/builds/web-1-success.json")
	if err != nil {
		log.Fatal(err)
	}
	nb := proto.Clone(base).(*cloudbuildpb.Build)
	nb.Id = fmt.Sprintf("be0c0000-0000-4000-8000-%012d", b.seq)
	nb.CreateTime = timestamppb.New(time.Now().Add(-time.Second))
	digest := fmt.Sprintf("sha256:%064x", time.Now().UnixNano())
	for _, img := range nb.GetResults().GetImages() {
		img.Digest = digest // One image, two tags.
	}
	if b.cloudBuild != nil {
		b.cloudBuild.Register(nb)
	}
	return nb
}

func pinned(b *cloudbuildpb.Build) string {
	img := b.GetResults().GetImages()[0]
	return img.GetName() + "@" + img.GetDigest()
}

// pushBody is b as a raw Pub/Sub push delivers it, with status.
func pushBody(b *cloudbuildpb.Build, status string) []byte {
	data, err := protojson.Marshal(b)
	if err != nil {
		log.Fatal(err)
	}
	now := time.Now().UTC().Format(time.RFC3339Nano)
	body, _ := json.Marshal(map[string]any{
		"message": map[string]any{
			"data":       base64.StdEncoding.EncodeToString(data),
			"attributes": map[string]string{"buildId": b.GetId(), "status": status},
			"messageId":  b.GetId() + status, "message_id": b.GetId() + status,
			"publishTime": now, "publish_time": now,
		},
		"subscription": "projects/" + sandbox.Project + "/subscriptions/bench",
	})
	return body
}

// deliver posts body to the function at url, as a push subscription does,
// and returns how long the answer took.
func deliver(ctx context.Context, url string, body []byte) (time.Duration, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url+"projects/"+sandbox.Project+"/topics/"+sandbox.Topic, bytes.NewReader(body))
	if err != nil {
		return 0, err
	}
	req.Header.Set("Content-Type", "application/json")
	start := time.Now()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	took := time.Since(start)
	if resp.StatusCode != http.StatusOK {
		return took, fmt.Errorf("function answered %s", resp.Status)
	}
	return took, nil
}

// deployOverhead times warm rolling deploys through the function, event
// received to answer (the PATCH accepted), against two floors on the same
// cluster with the function's identity: a bare client-go GET + PATCH of the
// same Deployment, and the same after a bare GetBuild of the build, the
// Cloud Build call with which the function confirms each build. Each
// measurement starts once the previous rollout is done (else the PATCH
// races the controller). The three run in rounds whose order rotates, so
// that none always follows the same one, after two rounds that warm all
// three up; 3×runs rounds, as the differences are a millisecond or two.
func (b *bench) deployOverhead(ctx context.Context, sb *sandbox.Sandbox) error {
	client, err := kubernetes.NewForConfig(sb.FunctionIdentity())
	if err != nil {
		return err
	}
	opts, err := emulator.ClientOptions(sb.CloudBuild.Addr)
	if err != nil {
		return err
	}
	builds, err := cloudbuild.NewClient(ctx, opts...)
	if err != nil {
		return err
	}
	defer builds.Close()
	deployments := client.AppsV1().Deployments(sandbox.Namespace)
	getPatch := func(image string) error {
		d, err := deployments.Get(ctx, sandbox.Deployment, metav1.GetOptions{})
		if err != nil {
			return err
		}
		patch, _ := json.Marshal(map[string]any{
			"metadata": map[string]any{"resourceVersion": d.ResourceVersion},
			"spec": map[string]any{"template": map[string]any{"spec": map[string]any{
				"containers": []any{map[string]any{"name": "web", "image": image}}}}},
		})
		_, err = deployments.Patch(ctx, sandbox.Deployment, types.StrategicMergePatchType, patch, metav1.PatchOptions{FieldManager: "bench"})
		return err
	}
	bare := func() (time.Duration, error) {
		nb := b.build()
		start := time.Now()
		err := getPatch(pinned(nb))
		return time.Since(start), err
	}
	bareConfirmed := func() (time.Duration, error) {
		nb := b.build()
		sb.CloudBuild.Register(nb)
		start := time.Now()
		got, err := builds.GetBuild(ctx, &cloudbuildpb.GetBuildRequest{ProjectId: nb.GetProjectId(), Id: nb.GetId()})
		if err != nil {
			return 0, err
		}
		err = getPatch(pinned(got))
		return time.Since(start), err
	}
	viaFunction := func() (time.Duration, error) {
		nb := b.build()
		sb.CloudBuild.Register(nb) // As Cloud Build stores a build before it publishes it.
		seen := len(sb.Function.Logs())
		took, err := deliver(ctx, sb.Function.URL, pushBody(nb, "SUCCESS"))
		if err != nil {
			return 0, err
		}
		line, err := sb.Function.WaitLog(ctx, seen, func(l map[string]any) bool { return l["buildId"] == nb.GetId() })
		if err == nil && line["outcome"] != "deployed" {
			err = fmt.Errorf("build %s: %v", nb.GetId(), line)
		}
		return took, err
	}
	measures := []func() (time.Duration, error){viaFunction, bare, bareConfirmed}
	samples := make([][]float64, len(measures))
	const warmup = 2
	for r := -warmup; r < 3*b.runs; r++ {
		for k := range measures {
			i := (k + max(r, 0)) % len(measures)
			took, err := measures[i]()
			if err != nil {
				return err
			}
			if _, err := sb.WaitRolledOut(ctx, sandbox.Deployment, nil); err != nil {
				return err
			}
			if r >= 0 {
				samples[i] = append(samples[i], ms(took))
			}
		}
	}
	ours := median(samples[0])
	b.add("warm rolling deploy, event to answer (vs bare client-go GET + PATCH)", ours, median(samples[1]), "ms", "≤ 1.10")
	b.add("warm rolling deploy, event to answer (vs bare GetBuild, then GET + PATCH)", ours, median(samples[2]), "ms", "")
	b.notes = append(b.notes, fmt.Sprintf("warm rolling deploy: medians of %d rounds after %d warm-up rounds, the order of the three rotating; "+
		"the median of the ratios within a round is %.2f against GET + PATCH and %.2f against GetBuild, then GET + PATCH",
		len(samples[0]), warmup, median(ratios(samples[0], samples[1])), median(ratios(samples[0], samples[2]))))
	return nil
}

// ratios returns a[i]/b[i] for each i.
func ratios(a, b []float64) []float64 {
	out := make([]float64, len(a))
	for i := range a {
		out[i] = a[i] / b[i]
	}
	return out
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// coldStart starts the function (cmd/local) and an empty function, built
// the same way, runs times each, and times start to first answer.
func (b *bench) coldStart(ctx context.Context, sb *sandbox.Sandbox) error {
	dir, err := os.MkdirTemp("", "onnewimage-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	bins := map[string]string{"function": filepath.Join(dir, "function"), "hello": filepath.Join(dir, "hello")}
	for name, pkg := range map[string]string{"function": "./cmd/local", "hello": "./cmd/bench/testdata/hello"} {
		if out, err := exec.CommandContext(ctx, "go", "build", "-o", bins[name], pkg).CombinedOutput(); err != nil {
			return fmt.Errorf("building %s: %w\n%s", pkg, err, out)
		}
	}
	queued := func() []byte { return pushBody(b.build(), "QUEUED") }
	var fq, hq, fd, frss, hrss []float64
	for range b.runs {
		took, rss, err := firstAnswer(ctx, bins["function"], sb.FunctionEnv(nil), queued())
		if err != nil {
			return err
		}
		fq, frss = append(fq, ms(took)), append(frss, rss)
		if took, rss, err = firstAnswer(ctx, bins["hello"], sb.FunctionEnv(nil), queued()); err != nil {
			return err
		}
		hq, hrss = append(hq, ms(took)), append(hrss, rss)
		nb := b.build()
		sb.CloudBuild.Register(nb) // As Cloud Build stores a build before it publishes it.
		if took, _, err = firstAnswer(ctx, bins["function"], sb.FunctionEnv(nil), pushBody(nb, "SUCCESS")); err != nil {
			return err
		}
		fd = append(fd, ms(took))
		d, err := sb.WaitRolledOut(ctx, sandbox.Deployment, nil)
		if err != nil {
			return err
		}
		if got := d.Annotations[rollout.AnnotationImage]; got != pinned(nb) {
			return fmt.Errorf("cold deploy of %s left the deployment on %s", pinned(nb), got)
		}
	}
	b.add("cold start to a QUEUED message answered (vs empty function)", median(fq), median(hq), "ms", "≤ 1.50")
	b.add("cold start to a deploy answered (vs empty function's QUEUED)", median(fd), median(hq), "ms", "")
	b.add("peak RSS after the first answer", median(frss), median(hrss), "MiB", "")
	fs, _ := os.Stat(bins["function"])
	hs, _ := os.Stat(bins["hello"])
	b.add("binary size", float64(fs.Size())/(1<<20), float64(hs.Size())/(1<<20), "MiB", "")

	if err := b.burst(ctx, sb, bins["function"]); err != nil {
		return err
	}
	for _, name := range []string{"function", "hello"} {
		total, top, err := initTrace(ctx, bins[name], sb.FunctionEnv(nil))
		if err != nil {
			return err
		}
		b.notes = append(b.notes, fmt.Sprintf("init (GODEBUG=inittrace=1), %s: %.1f ms clock in package initialisers; most: %s", name, total, top))
	}
	return nil
}

// burst sends 1,000 messages in a busy topic's proportions (mostly QUEUED
// and WORKING, some failures and other images' builds, ten builds of ours
// each twice) to a fresh instance over HTTP, one at a time (the functions
// framework's receiver can strand a request when several are in flight,
// see TestBurst), and adds p50 and p99 per kind and the peak RSS.
func (b *bench) burst(ctx context.Context, sb *sandbox.Sandbox, bin string) error {
	other, err := sandbox.LoadBuild("testdata/builds/lookalike-web-evil-success.json")
	if err != nil {
		return err
	}
	type message struct {
		kind string
		body []byte
	}
	var msgs []message
	base := b.build()
	for i := range 980 {
		switch {
		case i%25 == 0:
			msgs = append(msgs, message{"FAILURE", pushBody(base, "FAILURE")})
		case i%25 == 1:
			msgs = append(msgs, message{"SUCCESS of another image", pushBody(other, "SUCCESS")})
		case i%2 == 0:
			msgs = append(msgs, message{"QUEUED, WORKING", pushBody(base, "QUEUED")})
		default:
			msgs = append(msgs, message{"QUEUED, WORKING", pushBody(base, "WORKING")})
		}
	}
	for i := range 10 {
		nb := b.build()
		sb.CloudBuild.Register(nb)
		body := pushBody(nb, "SUCCESS")
		at := 50 + i*95
		msgs = slices.Insert(msgs, at, message{"SUCCESS of ours, twice", body}, message{"SUCCESS of ours, twice", body})
	}
	cmd, url, out, err := start(ctx, bin, sb.FunctionEnv(nil))
	if err != nil {
		return err
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	took := map[string][]float64{}
	var kinds []string
	for _, m := range msgs {
		d, err := deliver(ctx, url, m.body)
		if err != nil && m.kind != "SUCCESS of ours, twice" { // Ours may conflict and ask for a retry.
			return fmt.Errorf("burst, %s: %w: %s", m.kind, err, out)
		}
		if !slices.Contains(kinds, m.kind) {
			kinds = append(kinds, m.kind)
		}
		took[m.kind] = append(took[m.kind], ms(d))
	}
	rss, err := peakRSS(cmd.Process.Pid)
	if err != nil {
		return err
	}
	for _, k := range kinds {
		b.rows = append(b.rows, row{fmt.Sprintf("burst of %d, %s (%d): p50 / p99", len(msgs), k, len(took[k])),
			format(percentile(took[k], 50), "ms") + " / " + format(percentile(took[k], 99), "ms"), "", "", ""})
	}
	b.rows = append(b.rows, row{"burst: peak RSS", format(rss, "MiB"), "", "", "< 64 MiB"})
	return nil
}

func percentile(v []float64, p int) float64 {
	s := slices.Sorted(slices.Values(v))
	return s[min(len(s)-1, len(s)*p/100)]
}

// start runs bin with env on a free loopback port and returns its URL once
// it accepts connections.
func start(ctx context.Context, bin string, env []string, extraEnv ...string) (*exec.Cmd, string, *bytes.Buffer, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, "", nil, err
	}
	addr := l.Addr().String()
	l.Close()
	_, port, _ := net.SplitHostPort(addr)
	cmd := exec.CommandContext(ctx, bin)
	cmd.Env = append(append(slices.Clone(env), "PORT="+port), extraEnv...)
	out := &bytes.Buffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		return nil, "", nil, err
	}
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(time.Millisecond) {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			return cmd, "http://" + addr + "/", out, nil
		}
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			cmd.Wait()
			return nil, "", nil, fmt.Errorf("%s did not listen on %s: %s", bin, addr, out)
		}
	}
}

// firstAnswer starts bin, delivers body as soon as it listens, and returns
// the time from start to answer and the peak RSS then, in MiB.
func firstAnswer(ctx context.Context, bin string, env []string, body []byte) (time.Duration, float64, error) {
	begin := time.Now()
	cmd, url, out, err := start(ctx, bin, env)
	if err != nil {
		return 0, 0, err
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	if _, err := deliver(ctx, url, body); err != nil {
		return 0, 0, fmt.Errorf("%s: %w: %s", bin, err, out)
	}
	took := time.Since(begin)
	rss, err := peakRSS(cmd.Process.Pid)
	return took, rss, err
}

// peakRSS reads VmHWM, the peak resident set size, in MiB.
func peakRSS(pid int) (float64, error) {
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, l := range strings.Split(string(status), "\n") {
		if v, ok := strings.CutPrefix(l, "VmHWM:"); ok {
			kb, err := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 64)
			return kb / 1024, err
		}
	}
	return 0, errors.New("no VmHWM in /proc/PID/status")
}

// initTrace starts bin with GODEBUG=inittrace=1 and sums the clock time of
// its package initialisers; top names the costliest three.
func initTrace(ctx context.Context, bin string, env []string) (float64, string, error) {
	cmd, _, out, err := start(ctx, bin, env, "GODEBUG=inittrace=1")
	if err != nil {
		return 0, "", err
	}
	cmd.Process.Kill()
	cmd.Wait()
	type cost struct {
		pkg string
		ms  float64
	}
	var costs []cost
	var total float64
	re := regexp.MustCompile(`^init (\S+) @[\d.]+ ms, ([\d.]+) ms clock`)
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		if m := re.FindStringSubmatch(sc.Text()); m != nil {
			v, _ := strconv.ParseFloat(m[2], 64)
			costs = append(costs, cost{m[1], v})
			total += v
		}
	}
	slices.SortFunc(costs, func(a, b cost) int {
		if a.ms > b.ms {
			return -1
		}
		if a.ms < b.ms {
			return 1
		}
		return 0
	})
	var top []string
	for _, c := range costs[:min(3, len(costs))] {
		top = append(top, fmt.Sprintf("%s %.2f ms", c.pkg, c.ms))
	}
	return total, strings.Join(top, ", "), nil
}

// switchLatency releases builds to the blue-green sandbox and times, on its
// own watches, the idle colour's event showing it rolled out to the
// router's event showing the switch.
func (b *bench) switchLatency(ctx context.Context, sb *sandbox.Sandbox) error {
	type seen struct {
		at  time.Time
		obj any
	}
	var (
		mu     sync.Mutex
		events []seen
		more   = make(chan struct{}, 1)
	)
	watchCtx, stop := context.WithCancel(ctx)
	defer stop()
	for _, w := range []func() (watch.Interface, error){
		func() (watch.Interface, error) {
			return sb.Admin.AppsV1().Deployments(sandbox.Namespace).Watch(watchCtx, metav1.ListOptions{})
		},
		func() (watch.Interface, error) {
			return sb.Admin.CoreV1().Services(sandbox.Namespace).Watch(watchCtx, metav1.ListOptions{})
		},
	} {
		wi, err := w()
		if err != nil {
			return err
		}
		go func() {
			defer wi.Stop()
			for ev := range wi.ResultChan() {
				mu.Lock()
				events = append(events, seen{time.Now(), ev.Object})
				mu.Unlock()
				select {
				case more <- struct{}{}:
				default:
				}
			}
		}()
	}
	var lat []float64
	for range b.runs {
		nb := b.build()
		sb.CloudBuild.Register(nb)
		mu.Lock()
		from := len(events)
		mu.Unlock()
		if _, err := deliver(ctx, sb.Function.URL, pushBody(nb, "SUCCESS")); err != nil {
			return err
		}
		var ready time.Time
		colour := ""
		for done := false; !done; {
			mu.Lock()
			for _, e := range events[from:] {
				switch o := e.obj.(type) {
				case *appsv1.Deployment:
					_, ok, _ := rollout.Status(o)
					if ready.IsZero() && ok && image(o) == pinned(nb) {
						ready, colour = e.at, strings.TrimPrefix(o.Name, "web-")
					}
				case *corev1.Service:
					if !ready.IsZero() && o.Name == "web" && o.Spec.Selector["version"] == colour {
						lat, done = append(lat, ms(e.at.Sub(ready))), true
					}
				}
				if done {
					break
				}
			}
			mu.Unlock()
			if !done {
				select {
				case <-more:
				case <-time.After(time.Minute):
					return fmt.Errorf("build %s: no switch seen within a minute", nb.GetId())
				}
			}
		}
	}
	b.rows = append(b.rows, row{"blue-green switch: idle colour rolled out to router switched (watch to watch)", format(median(lat), "ms"), "", "", "< 100 ms"})
	return nil
}

func image(d *appsv1.Deployment) string {
	for _, c := range d.Spec.Template.Spec.Containers {
		if c.Name == "web" {
			return c.Image
		}
	}
	return ""
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Sorted(slices.Values(v))
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}
