// Command sandbox shows onNewImage working end to end on this machine, with
// nothing outside loopback: a real Kubernetes control plane with RBAC, a GKE
// stand-in (Container API and token service), the Pub/Sub emulator, and the
// function run through the functions framework.
//
//	go run ./cmd/sandbox              # start everything, publish two builds, stay up
//	go run ./cmd/sandbox -blue-green  # the same with k8s/blue-green/, STRATEGY=blue-green and the release gates of k8s/gates/
//	go run ./cmd/sandbox -targets     # two targets from one file: staging from main, production from a tag
//	go run ./cmd/sandbox -canary      # k8s/canary/ and STRATEGY=canary: a release stepping 10% -> 50% -> promoted, one aborted
//	go run ./cmd/sandbox -canary -httproute  # the same with k8s/canary/httproute/ and HTTPROUTE=web: weights 90/10, 50/50, 100/0
//	go run ./cmd/sandbox publish      # publish a fresh build to a running sandbox
//
// The function publishes each result to the topic deploy-results, and a
// pull subscription prints them as they arrive.
//
// The first run builds the control plane's binaries from Go modules (several
// minutes on two cores) into a cache; later runs start in seconds.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"cloud.google.com/go/cloudbuild/apiv1/v2/cloudbuildpb"
	"cloud.google.com/go/pubsub/v2"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/timestamppb"
	appsv1 "k8s.io/api/apps/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/onnewimage/onnewimage/internal/rollout"
	"github.com/onnewimage/onnewimage/internal/testenv/sandbox"
)

func main() {
	flag.Usage = func() {
		fmt.Fprintf(os.Stderr, "usage: go run ./cmd/sandbox [-exit] | go run ./cmd/sandbox publish\n")
		flag.PrintDefaults()
	}
	exit := flag.Bool("exit", false, "stop after the demonstration instead of staying up")
	blueGreen := flag.Bool("blue-green", false, "lay the app out as k8s/blue-green/ and run the function with STRATEGY=blue-green SERVICE=web")
	targets := flag.Bool("targets", false, "serve two targets from a targets file: staging (rolling) from main, production (blue-green, namespace prod) from a release tag")
	canary := flag.Bool("canary", false, "lay the app out as k8s/canary/ and run the function with STRATEGY=canary CANARY_PAUSE=5s: a release stepping 10% -> 50% -> promoted, then one whose canary crashes")
	httpRoute := flag.Bool("httproute", false, "with -canary: split traffic with the HTTPRoute of k8s/canary/httproute/ (HTTPROUTE=web), its weights shown at each step")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	var err error
	switch flag.Arg(0) {
	case "":
		if *targets {
			err = runTargets(ctx, *exit)
		} else if *canary {
			err = runCanary(ctx, *exit, *httpRoute)
		} else {
			err = run(ctx, *exit, *blueGreen)
		}
	case "publish":
		err = publish(ctx)
	default:
		flag.Usage()
		os.Exit(2)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "sandbox:", err)
		os.Exit(1)
	}
}

// start starts a sandbox and says how long it took; stop stops every process
// it started and removes the programs it built.
func start(ctx context.Context, opts sandbox.Options, begin time.Time) (sb *sandbox.Sandbox, stop func(), err error) {
	sb, err = sandbox.Start(ctx, opts)
	if err != nil {
		sandbox.RemovePrograms()
		return nil, nil, err
	}
	fmt.Printf("sandbox up in %s\n", time.Since(begin).Round(time.Millisecond))
	return sb, func() {
		step("stopping every process the sandbox started")
		if err := sb.Stop(); err != nil {
			fmt.Println("stop:", err)
		}
		sandbox.RemovePrograms()
	}, nil
}

// followLog prints each function log line from now on with show, until
// ctx ends (Ctrl-C).
func followLog(ctx context.Context, sb *sandbox.Sandbox, show func(map[string]any)) {
	seen := len(sb.Function.Logs())
	for {
		line, err := sb.Function.WaitLog(ctx, seen, func(map[string]any) bool { return true })
		if err != nil {
			return
		}
		seen++
		show(line)
	}
}

func step(format string, args ...any) { fmt.Printf("\n==> "+format+"\n", args...) }

// blueGreenEnv is the function's configuration in -blue-green mode: the
// gates of k8s/gates/cronjobs.yaml run before each switch, and the waits
// fit the budget (a minute, ROLLOUT_TIMEOUT, GATE_TIMEOUT per gate).
var blueGreenEnv = map[string]string{"STRATEGY": "blue-green", "SERVICE": "web",
	"GATES": "web-migrate,web-smoke", "GATE_TIMEOUT": "1m", "ROLLOUT_TIMEOUT": "2m"}

func run(ctx context.Context, exitAfter, blueGreen bool) error {
	step("starting the sandbox (a first run builds the control plane from Go modules: several minutes)")
	begin := time.Now()
	opts := sandbox.Options{Log: os.Stdout, ResultTopic: resultTopic}
	if blueGreen {
		opts.Manifests = []string{"k8s/blue-green/deployments.yaml", "k8s/blue-green/service.yaml", "k8s/blue-green/rbac.yaml",
			"k8s/gates/cronjobs.yaml", "k8s/gates/rbac.yaml"}
		opts.FunctionEnv = blueGreenEnv
	}
	sb, stop, err := start(ctx, opts, begin)
	if err != nil {
		return err
	}
	defer stop()
	if err := subscribe(ctx, sb); err != nil {
		return err
	}

	deployments := []string{sandbox.Deployment}
	if blueGreen {
		deployments = []string{"web-blue", "web-green"}
	}
	for _, name := range deployments {
		d, err := sb.WaitRolledOut(ctx, name, nil)
		if err != nil {
			return err
		}
		fmt.Printf("deployment %s/%s is rolled out, running %s\n", sandbox.Namespace, name, image(d))
	}

	for _, file := range []string{"testdata/builds/web-1-success.json", "testdata/builds/web-2-success.json"} {
		b, err := sandbox.LoadBuild(file)
		if err != nil {
			return err
		}
		if blueGreen {
			step("build %s (commit %.7s) arrives on cloud-builds", b.GetId(), b.GetSubstitutions()["COMMIT_SHA"])
			err = deliver(ctx, sb, sandbox.WithStatus(b, cloudbuildpb.Build_QUEUED), sandbox.WithStatus(b, cloudbuildpb.Build_WORKING), b)
			if err == nil {
				err = showGates(ctx, sb, b.GetId())
			}
			if err == nil {
				err = showRouter(ctx, sb)
			}
		} else {
			err = release(ctx, sb, b)
		}
		if err != nil {
			return err
		}
	}

	step("the same build delivered again: Pub/Sub is at-least-once")
	b, _ := sandbox.LoadBuild("testdata/builds/web-2-success.json")
	if err := deliver(ctx, sb, b); err != nil {
		return err
	}
	step("an older build delivered late")
	b, _ = sandbox.LoadBuild("testdata/builds/web-1-success.json")
	if err := deliver(ctx, sb, b); err != nil {
		return err
	}
	step("a forged message: the live build's ID with a digest no build pushed, published by hand")
	forged, _ := sandbox.LoadBuild("testdata/builds/web-2-success.json")
	for _, img := range forged.GetResults().GetImages() {
		img.Digest = "sha256:" + strings.Repeat("e", 64)
	}
	forged.CreateTime = timestamppb.Now()
	if err := deliverWith(ctx, sb, sb.PublishForged, forged); err != nil {
		return err
	}

	kubeconfig, err := writeKubeconfig(sb)
	if err != nil {
		return err
	}
	rollback := fmt.Sprintf("KUBECONFIG=%s STRATEGY=blue-green SERVICE=web DEPLOYMENT=web CONTAINER=web go run ./cmd/onnewimage rollback", kubeconfig)
	if blueGreen {
		step("rollback: %s", rollback)
		out, err := sb.Run(ctx, "onnewimage", map[string]string{"KUBECONFIG": kubeconfig, "CLUSTER": "", "STRATEGY": "blue-green", "SERVICE": "web"}, "rollback")
		fmt.Printf("  %s", out)
		if err != nil {
			return err
		}
		if err := showRouter(ctx, sb); err != nil {
			return err
		}
	} else {
		step("kubectl rollout history deployment/%s", sandbox.Deployment)
		history(ctx, sb)
	}

	if blueGreen {
		if err := failSmokeTest(ctx, sb); err != nil {
			return err
		}
	}

	if exitAfter {
		return nil
	}
	step("the sandbox stays up until Ctrl-C")
	fmt.Printf("  kubectl --kubeconfig %s get deployments,services -o wide\n", kubeconfig)
	if blueGreen {
		fmt.Printf("  %s\n", rollback)
	}
	fmt.Printf("  PUBSUB_EMULATOR_HOST=%s CLOUDBUILD_EMULATOR_HOST=%s go run ./cmd/sandbox publish     # a new build goes live\n", sb.PubSub.Host, sb.CloudBuild.Addr)
	fmt.Printf("  function log: the JSON lines below, as Cloud Logging would show them; -> the results received\n")
	go results.follow(ctx)
	followLog(ctx, sb, printDecision)
	return nil
}

// release publishes a build's three messages, as Cloud Build does, shows
// each decision, and watches the Deployment roll to the build's digest.
func release(ctx context.Context, sb *sandbox.Sandbox, b *cloudbuildpb.Build) error {
	step("build %s (commit %.7s) arrives on cloud-builds", b.GetId(), b.GetSubstitutions()["COMMIT_SHA"])
	if err := deliver(ctx, sb, sandbox.WithStatus(b, cloudbuildpb.Build_QUEUED), sandbox.WithStatus(b, cloudbuildpb.Build_WORKING), b); err != nil {
		return err
	}
	want := sandbox.Image
	for _, img := range b.GetResults().GetImages() {
		want = img.GetDigest()
	}
	last := ""
	d, err := sb.WaitFor(ctx, sandbox.Deployment, func(d *appsv1.Deployment) bool {
		if !strings.HasSuffix(image(d), want) {
			return false
		}
		status, done, err := rollout.Status(d)
		if err != nil {
			status = err.Error()
		}
		if status != last {
			fmt.Println("  rollout: " + status)
			last = status
		}
		return done
	})
	if err != nil {
		return err
	}
	fmt.Printf("  live: %s\n", image(d))
	return nil
}

// deliver publishes builds one by one and prints the decision for each.
func deliver(ctx context.Context, sb *sandbox.Sandbox, builds ...*cloudbuildpb.Build) error {
	return deliverWith(ctx, sb, sb.Publish, builds...)
}

// deliverWith is deliver with another way to publish: sb.PublishForged
// publishes a message Cloud Build never sent.
func deliverWith(ctx context.Context, sb *sandbox.Sandbox, publish func(context.Context, *cloudbuildpb.Build) (string, error), builds ...*cloudbuildpb.Build) error {
	for _, b := range builds {
		seen := len(sb.Function.Logs())
		if _, err := publish(ctx, b); err != nil {
			return err
		}
		wait, cancel := context.WithTimeout(ctx, time.Minute)
		line, err := sb.Function.WaitLog(wait, seen, func(l map[string]any) bool { return l["buildId"] == b.GetId() })
		cancel()
		if err != nil {
			return err
		}
		printDecision(line)
		results.show(ctx, line)
	}
	return nil
}

// showRouter prints where the router Service sends traffic and what it
// records.
func showRouter(ctx context.Context, sb *sandbox.Sandbox) error {
	svc, err := sb.Admin.CoreV1().Services(sandbox.Namespace).Get(ctx, "web", metav1.GetOptions{})
	if err != nil {
		return err
	}
	fmt.Printf("  router: service web selects version=%s (build %s, previous colour %s)\n", svc.Spec.Selector["version"],
		svc.Annotations[rollout.AnnotationBuildID], svc.Annotations[rollout.AnnotationPreviousColour])
	return nil
}

func printDecision(l map[string]any) {
	fmt.Printf("  %-8v %-9v status=%-8v %v\n", l["severity"], l["outcome"], l["status"], l["reason"])
}

func image(d *appsv1.Deployment) string {
	for _, c := range d.Spec.Template.Spec.Containers {
		if c.Name == "web" {
			return c.Image
		}
	}
	return ""
}

// history shows the rollout history: with kubectl when it is installed,
// else from the ReplicaSets, the way kubectl computes it.
func history(ctx context.Context, sb *sandbox.Sandbox) {
	if kubectl, err := exec.LookPath("kubectl"); err == nil {
		cmd := exec.CommandContext(ctx, kubectl, "--kubeconfig", sb.Cluster.AdminKubeconfig, "rollout", "history", "deployment/"+sandbox.Deployment)
		cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
		if cmd.Run() == nil {
			return
		}
	}
	rss, err := sb.Admin.AppsV1().ReplicaSets(sandbox.Namespace).List(ctx, metav1.ListOptions{LabelSelector: "app=web"})
	if err != nil {
		fmt.Println("  ", err)
		return
	}
	sort.Slice(rss.Items, func(i, j int) bool {
		a, _ := strconv.Atoi(rss.Items[i].Annotations["deployment.kubernetes.io/revision"])
		b, _ := strconv.Atoi(rss.Items[j].Annotations["deployment.kubernetes.io/revision"])
		return a < b
	})
	fmt.Println("REVISION  CHANGE-CAUSE")
	for _, rs := range rss.Items {
		fmt.Printf("%-9s %s\n", rs.Annotations["deployment.kubernetes.io/revision"], rs.Annotations[rollout.AnnotationChangeCause])
	}
}

// writeKubeconfig writes the cluster's admin kubeconfig where the demos
// tell people to find it, and returns that path.
func writeKubeconfig(sb *sandbox.Sandbox) (string, error) {
	path := filepath.Join(os.TempDir(), "onnewimage-sandbox.kubeconfig")
	return path, os.WriteFile(path, mustRead(sb.Cluster.AdminKubeconfig), 0o600)
}

func mustRead(path string) []byte {
	b, err := os.ReadFile(path)
	if err != nil {
		panic(err)
	}
	return b
}

// publish sends a fresh build of the sample app (QUEUED, WORKING, SUCCESS)
// to the running sandbox's emulator, named by PUBSUB_EMULATOR_HOST, with the
// real Pub/Sub client, as Cloud Build does: each state is stored with the
// sandbox's Cloud Build API stand-in, named by CLOUDBUILD_EMULATOR_HOST,
// before it is announced, so that the function can confirm it.
func publish(ctx context.Context) error {
	if os.Getenv("PUBSUB_EMULATOR_HOST") == "" || os.Getenv("CLOUDBUILD_EMULATOR_HOST") == "" {
		return fmt.Errorf("set PUBSUB_EMULATOR_HOST and CLOUDBUILD_EMULATOR_HOST to the addresses the running sandbox printed")
	}
	conn, err := grpc.NewClient(os.Getenv("CLOUDBUILD_EMULATOR_HOST"), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer conn.Close()
	builds := cloudbuildpb.NewCloudBuildClient(conn)
	tmpl, err := sandbox.LoadBuild("testdata/builds/web-3-success.json")
	if err != nil {
		return err
	}
	b := sandbox.FreshBuild(tmpl)
	client, err := pubsub.NewClient(ctx, sandbox.Project)
	if err != nil {
		return err
	}
	defer client.Close()
	pub := client.Publisher(sandbox.Topic)
	defer pub.Stop()
	for _, m := range []*cloudbuildpb.Build{sandbox.WithStatus(b, cloudbuildpb.Build_QUEUED), sandbox.WithStatus(b, cloudbuildpb.Build_WORKING), b} {
		if _, err := builds.CreateBuild(ctx, &cloudbuildpb.CreateBuildRequest{ProjectId: m.GetProjectId(), Build: m}); err != nil {
			return fmt.Errorf("registering build %s with the cloud build api stand-in: %w", m.GetId(), err)
		}
		data, err := protojson.Marshal(m)
		if err != nil {
			return err
		}
		id, err := pub.Publish(ctx, &pubsub.Message{Data: data, Attributes: map[string]string{"buildId": m.GetId(), "status": m.GetStatus().String()}}).Get(ctx)
		if err != nil {
			return err
		}
		fmt.Printf("published %s build %s as message %s\n", m.GetStatus(), m.GetId(), id)
	}
	fmt.Printf("the sandbox should now roll web to %s\n", b.GetResults().GetImages()[0].GetName()+"@"+b.GetResults().GetImages()[0].GetDigest())
	return nil
}
