package config

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func env(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

func valid() map[string]string {
	return map[string]string{
		"PROJECT": "demo", "LOCATION": "us-central1", "CLUSTER": "prod",
		"DEPLOYMENT": "web", "CONTAINER": "web", "IMAGE": "us-docker.pkg.dev/demo/apps/web",
	}
}

func TestLoad(t *testing.T) {
	c, err := Load(env(valid()))
	if err != nil {
		t.Fatal(err)
	}
	got := []any{c.ClusterName(), c.Target(), c.Image.String(), c.Image.Bare(), c.MaxEventAge, c.DryRun}
	want := []any{"projects/demo/locations/us-central1/clusters/prod", "default/web:web", "us-docker.pkg.dev/demo/apps/web", false, time.Hour, false}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Load (-want +got):\n%s", diff)
	}
}

func TestLoadOptions(t *testing.T) {
	e := valid()
	delete(e, "LOCATION")
	e["ZONE"] = "us-central1-a" // The seed article's name.
	e["NAMESPACE"] = "prod"
	e["MAX_EVENT_AGE"] = "15m"
	e["DRY_RUN"] = "true"
	e["IMAGE"] = "web"
	e["CONTAINER_EMULATOR_HOST"] = "127.0.0.1:9999"
	c, err := Load(env(e))
	if err != nil {
		t.Fatal(err)
	}
	got := []any{c.Location, c.Namespace, c.MaxEventAge, c.DryRun, c.Image.Bare(), c.ContainerEmulatorHost}
	want := []any{"us-central1-a", "prod", 15 * time.Minute, true, true, "127.0.0.1:9999"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Load (-want +got):\n%s", diff)
	}
}

func TestLoadKubeconfigInsteadOfCluster(t *testing.T) {
	e := valid()
	delete(e, "CLUSTER")
	delete(e, "PROJECT")
	e["KUBECONFIG"] = "/tmp/kubeconfig"
	if _, err := Load(env(e)); err != nil {
		t.Fatalf("Load with KUBECONFIG and no CLUSTER: %v", err)
	}
}

func TestLoadNamesEveryProblem(t *testing.T) {
	_, err := Load(env(map[string]string{
		"IMAGE": "gcr.io/p/web:latest", "MAX_EVENT_AGE": "soon", "DRY_RUN": "maybe",
		"CONTAINER": "Web_1", "LOCATION": "a", "ZONE": "b",
	}))
	if !errors.Is(err, ErrInvalid) {
		t.Fatalf("error = %v, want ErrInvalid", err)
	}
	for _, want := range []string{
		"CLUSTER is required", "DEPLOYMENT is required", `CONTAINER="Web_1"`, "IMAGE:", "without tag or digest",
		`MAX_EVENT_AGE="soon"`, `DRY_RUN="maybe"`, `LOCATION="a" and ZONE="b" disagree`,
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
}

func TestLoadRequiresProjectAndLocationWithCluster(t *testing.T) {
	e := valid()
	delete(e, "PROJECT")
	delete(e, "LOCATION")
	_, err := Load(env(e))
	if err == nil || !strings.Contains(err.Error(), "PROJECT is required") || !strings.Contains(err.Error(), "LOCATION (or ZONE) is required") {
		t.Errorf("error = %v", err)
	}
}
