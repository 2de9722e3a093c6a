package target

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// summary is a target in one line, for comparison.
func summary(t Target) string {
	return fmt.Sprintf("%s@%d image=%s bare=%t when=%s where=%s key=%s strategy=%s service=%s ingress=%s timeout=%s scaleDownOld=%t delay=%s budget=%s",
		t.Name, t.Line, t.Image, t.Image.Bare(), t.When, t.Where(), t.Cluster.Key(), t.Strategy, t.Service, t.Ingress, t.RolloutTimeout, t.ScaleDownOld, t.ScaleDownDelay, t.Budget())
}

func TestDecodeIssueExample(t *testing.T) {
	targets, err := ReadFile("testdata/issue.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, tg := range targets {
		got = append(got, summary(tg))
	}
	want := []string{
		"web-staging@3 image=us-docker.pkg.dev/acme/apps/web bare=false when=branch=^main$ where=acme/us-central1/staging/web/web:web key=projects/acme/locations/us-central1/clusters/staging@public strategy=rolling service= ingress= timeout=5m0s scaleDownOld=false delay=0s budget=1m0s",
		`web-prod@10 image=us-docker.pkg.dev/acme/apps/web bare=false when=tag=^v[0-9]+\.[0-9]+\.[0-9]+$ where=acme/us-central1/prod/default/web:web key=projects/acme/locations/us-central1/clusters/prod@public strategy=blue-green service=web ingress= timeout=4m0s scaleDownOld=false delay=0s budget=5m0s`,
		"worker-local@19 image=worker bare=true when=* where=kubeconfig(/path/to/kubeconfig)/default/worker:worker key=kubeconfig:/path/to/kubeconfig strategy=rolling service= ingress= timeout=5m0s scaleDownOld=false delay=0s budget=1m0s",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("targets (-want +got):\n%s", diff)
	}
}

func TestDecodeGood(t *testing.T) {
	tests := []struct {
		name, file string
		want       []string
	}{
		{"every key", `
targets:
  - name: web
    image: us-docker.pkg.dev/acme/apps/web
    when:
      repo: acme-web
      trigger: release-.*
      tag: v.*
      branch: main
    cluster:
      project: acme
      location: europe-west1
      name: prod
      endpoint: dns
    namespace: shop
    deployment: web
    container: app
    strategy: blue-green
    ingress: web.public
    rolloutTimeout: 90s
    scaleDownOld: true
    scaleDownDelay: 45s
`, []string{
			"web@2 image=us-docker.pkg.dev/acme/apps/web bare=false when=branch=main,tag=v.*,trigger=release-.*,repo=acme-web where=acme/europe-west1/prod(dns)/shop/web:app key=projects/acme/locations/europe-west1/clusters/prod@dns strategy=blue-green service= ingress=web.public timeout=1m30s scaleDownOld=true delay=45s budget=3m15s",
		}},
		{"a YAML anchor shared by two targets", `
targets:
  - name: a
    image: web
    cluster: &prod {project: acme, location: us-central1, name: prod, endpoint: private}
    deployment: a
    container: a
  - name: b
    image: web
    cluster: *prod
    deployment: b
    container: b
`, []string{
			"a@2 image=web bare=true when=* where=acme/us-central1/prod(private)/default/a:a key=projects/acme/locations/us-central1/clusters/prod@private strategy=rolling service= ingress= timeout=5m0s scaleDownOld=false delay=0s budget=1m0s",
			"b@7 image=web bare=true when=* where=acme/us-central1/prod(private)/default/b:b key=projects/acme/locations/us-central1/clusters/prod@private strategy=rolling service= ingress= timeout=5m0s scaleDownOld=false delay=0s budget=1m0s",
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			targets, err := Decode("targets.yaml", []byte(strings.TrimPrefix(tt.file, "\n")))
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, tg := range targets {
				got = append(got, summary(tg))
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("targets (-want +got):\n%s", diff)
			}
		})
	}
}

// good is a valid target's keys after its name, indented for a list item.
const good = `
    image: web
    cluster: {project: acme, location: us-central1, name: prod}
    deployment: web
    container: web`

func TestDecodeBad(t *testing.T) {
	tests := []struct {
		name, file string
		want       []string
	}{
		{"empty file", ``, []string{
			"targets.yaml:1: the file is empty: want a mapping with the key targets"}},
		{"syntax error", "targets:\n  - name: web\n   image: web\n", []string{
			"targets.yaml:1: did not find expected '-' indicator"}},
		{"not a mapping", "- name: web\n", []string{
			"targets.yaml:1: want a mapping with the key targets, got a list"}},
		{"unknown top-level key", "target:\n  - name: web\n", []string{
			"targets.yaml:1: target: unknown key (want targets)",
			"targets.yaml:1: targets: is required"}},
		{"no targets", "targets: []\n", []string{
			"targets.yaml:1: targets: is empty: list at least one target"}},
		{"targets not a list", "targets: {name: web}\n", []string{
			"targets.yaml:1: targets: want a list of targets, got a mapping"}},
		{"a target not a mapping", "targets:\n  - web\n", []string{
			"targets.yaml:2: target #1: want a mapping, got a string"}},
		{"unknown key", "targets:\n  - name: web" + good + "\n    replicas: 3\n", []string{
			"targets.yaml:7: target web: replicas: unknown key (want name, image, when, cluster, namespace, deployment, container, strategy, service, ingress, rolloutTimeout, scaleDownOld, scaleDownDelay, gates, gateTimeout, canarySteps, canaryPause, httpRoute)"}},
		{"unknown cluster key", "targets:\n  - name: web\n    image: web\n    cluster: {project: acme, location: us-central1, name: prod, zone: b}\n    deployment: web\n    container: web\n", []string{
			"targets.yaml:4: target web: cluster.zone: unknown key (want project, location, name, kubeconfig, endpoint)"}},
		{"duplicate key", "targets:\n  - name: web" + good + "\n    deployment: api\n", []string{
			"targets.yaml:7: target web: deployment: also set at line 5"}},
		{"duplicate names", "targets:\n  - name: web" + good + "\n  - name: web" + good + "\n", []string{
			`targets.yaml:7: target web: name: "web" is also the name of the target at line 2`}},
		{"missing name", "targets:\n  - image: web\n    cluster: {kubeconfig: k}\n    deployment: web\n    container: web\n", []string{
			"targets.yaml:2: target #1: name: is required (a DNS label, unique in the file)"}},
		{"name not a DNS label", "targets:\n  - name: Web_Prod" + good + "\n", []string{
			`targets.yaml:2: target Web_Prod: name: "Web_Prod": a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')`}},
		{"wrong types", "targets:\n  - name: web\n    image: web\n    cluster: prod\n    deployment: [web]\n    container: 42\n    scaleDownOld: \"true\"\n    rolloutTimeout: 5\n    strategy:\n", []string{
			"targets.yaml:4: target web: cluster: want a mapping, got a string",
			"targets.yaml:5: target web: deployment: is a list, want a string",
			`targets.yaml:6: target web: container: "42" is a number, want a string (quote it)`,
			`targets.yaml:7: target web: scaleDownOld: "true" is a string, want a boolean (true or false)`,
			`targets.yaml:8: target web: rolloutTimeout: "5" is a number, want a string (quote it)`,
			"targets.yaml:9: target web: strategy: is empty: give a value or leave the key out",
		}},
		{"empty strings", "targets:\n  - name: ''\n    image: web\n    cluster: {kubeconfig: k}\n    namespace: ' '\n    deployment: web\n    container: web\n    when: {branch: ''}\n", []string{
			"targets.yaml:2: target #1: name: is empty: give a value or leave the key out",
			"targets.yaml:5: target #1: namespace: is empty: give a value or leave the key out",
			"targets.yaml:8: target #1: when.branch: is empty: give a value or leave the key out"}},
		{"invalid rules", "targets:\n  - name: web" + good + "\n    when: {branch: '(main', ref: main}\n", []string{
			"targets.yaml:7: target web: when.branch: \"(main\" is not an RE2 regular expression: missing closing ): `(main`",
			`targets.yaml:7: target web: when.ref: unknown rule "ref" (want branch, tag, trigger or repo)`}},
		{"two routers", "targets:\n  - name: web" + good + "\n    strategy: blue-green\n    service: web\n    ingress: web\n", []string{
			"targets.yaml:9: target web: ingress: and service are both set: set only one router"}},
		{"router without blue-green", "targets:\n  - name: web" + good + "\n    service: web\n", []string{
			"targets.yaml:7: target web: service: is used only with the blue-green strategy (strategy is rolling)"}},
		{"blue-green without router", "targets:\n  - name: web" + good + "\n    strategy: blue-green\n", []string{
			`targets.yaml:7: target web: strategy: "blue-green": needs the router: set service or ingress`}},
		{"rollout timeout over the budget", "targets:\n  - name: web" + good + "\n    strategy: blue-green\n    service: web\n    rolloutTimeout: 9m\n", []string{
			`targets.yaml:9: target web: rolloutTimeout: "9m": is too long: an event may then take 10m0s (1m0s to connect and patch, plus rolloutTimeout), over 540s, the longest --timeout of an event-driven function; set at most 8m0s`}},
		{"scale-down delay without scaling down", "targets:\n  - name: web" + good + "\n    strategy: blue-green\n    service: web\n    scaleDownDelay: 1m\n", []string{
			"targets.yaml:9: target web: scaleDownDelay: is used only with scaleDownOld: true (nothing is scaled down otherwise)"}},
		{"scale-down delay over the budget", "targets:\n  - name: web" + good + "\n    strategy: blue-green\n    ingress: web\n    scaleDownOld: true\n    rolloutTimeout: 7m\n", []string{
			"targets.yaml:10: target web: rolloutTimeout: 7m0s plus scaleDownDelay 2m0s is too long: an event may then take 10m0s (1m0s to connect and patch, plus rolloutTimeout, plus scaleDownDelay), over 540s, the longest --timeout of an event-driven function; keep rolloutTimeout + scaleDownDelay at most 8m0s"}},
		{"GKE cluster incomplete", "targets:\n  - name: web\n    image: web\n    cluster: {name: prod}\n    deployment: web\n    container: web\n", []string{
			"targets.yaml:4: target web: cluster.project: is required with cluster.name",
			"targets.yaml:4: target web: cluster.location: is required with cluster.name"}},
		{"empty cluster", "targets:\n  - name: web\n    image: web\n    cluster: {}\n    deployment: web\n    container: web\n", []string{
			"targets.yaml:4: target web: cluster: is required: {project, location, name} of a GKE cluster, or {kubeconfig} of a local one"}},
		{"no cluster", "targets:\n  - name: web\n    image: web\n    deployment: web\n    container: web\n", []string{
			"targets.yaml:2: target web: cluster: is required: {project, location, name} of a GKE cluster, or {kubeconfig} of a local one"}},
		{"GKE cluster and kubeconfig", "targets:\n  - name: web" + good + "\n    cluster: {kubeconfig: k}\n", []string{
			"targets.yaml:7: target web: cluster: also set at line 4"}},
		{"cluster name and kubeconfig", "targets:\n  - name: web\n    image: web\n    cluster: {name: prod, project: p, location: l, kubeconfig: k}\n    deployment: web\n    container: web\n", []string{
			"targets.yaml:4: target web: cluster.kubeconfig: and cluster.name are both set: give a GKE cluster or a kubeconfig"}},
		{"endpoint", "targets:\n  - name: web\n    image: web\n    cluster: {name: prod, project: p, location: l, endpoint: internal}\n    deployment: web\n    container: web\n", []string{
			`targets.yaml:4: target web: cluster.endpoint: "internal": is not public, private or dns`}},
		{"endpoint with a kubeconfig", "targets:\n  - name: web\n    image: web\n    cluster: {kubeconfig: k, endpoint: dns}\n    deployment: web\n    container: web\n", []string{
			`targets.yaml:4: target web: cluster.endpoint: "dns": is used only with cluster.name (a kubeconfig names its own server)`}},
		{"every problem of two targets at once, in file order", `
targets:
  - name: web-staging
    image: us-docker.pkg.dev/acme/apps/web:latest
    cluster: {project: acme, location: us-central1, name: staging}
    namespace: Web
    deployment: web
    container: web
  - name: web-prod
    image: us-docker.pkg.dev/acme/apps/web
    when: {tag: 'v[0-9'}
    cluster: {project: acme, location: us-central1, name: prod}
    deployment: web
    strategy: trickle
    rolloutTimeout: soon
`, []string{
			`targets.yaml:3: target web-staging: image: image "us-docker.pkg.dev/acme/apps/web:latest": give the repository only, without tag or digest (the build decides the digest)`,
			`targets.yaml:5: target web-staging: namespace: "Web": a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')`,
			"targets.yaml:8: target web-prod: container: is required",
			"targets.yaml:10: target web-prod: when.tag: \"v[0-9\" is not an RE2 regular expression: missing closing ]: `[0-9`",
			`targets.yaml:13: target web-prod: strategy: "trickle": is not "rolling", "blue-green" or "canary"`,
			`targets.yaml:14: target web-prod: rolloutTimeout: "soon": is not a Go duration (e.g. 1h, 30m)`,
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			targets, err := Decode("targets.yaml", []byte(strings.TrimPrefix(tt.file, "\n")))
			var got Problems
			if !errors.As(err, &got) {
				t.Fatalf("Decode = %d targets, error %v; want Problems", len(targets), err)
			}
			if targets != nil {
				t.Errorf("Decode returned %d targets with its problems, want none", len(targets))
			}
			if diff := cmp.Diff(tt.want, []string(got)); diff != "" {
				t.Errorf("problems (-want +got):\n%s", diff)
			}
		})
	}
}

func TestReadFileMissing(t *testing.T) {
	_, err := ReadFile("testdata/none.yaml")
	want := "testdata/none.yaml: open testdata/none.yaml: no such file or directory"
	if err == nil || err.Error() != want {
		t.Errorf("ReadFile error = %v, want %q", err, want)
	}
	if _, statErr := os.Stat("testdata/none.yaml"); statErr == nil {
		t.Fatal("testdata/none.yaml exists")
	}
}

// FuzzDecode checks that Decode never panics, and returns either targets or
// problems, never both nor neither.
func FuzzDecode(f *testing.F) {
	raw, err := os.ReadFile("testdata/issue.yaml")
	if err != nil {
		f.Fatal(err)
	}
	f.Add(raw)
	f.Add([]byte("targets:\n  - name: web" + good + "\n    when: {branch: '(main'}\n    cluster: *x\n"))
	f.Add([]byte("targets: &a [*a]\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		targets, err := Decode("f.yaml", data)
		if (len(targets) > 0) == (err != nil) {
			t.Errorf("Decode = %d targets, error %v: want targets or an error", len(targets), err)
		}
	})
}
