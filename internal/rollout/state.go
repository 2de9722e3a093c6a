package rollout

import (
	"context"
	"fmt"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/onnewimage/onnewimage/internal/kube"
)

// State is what a target runs and what it remembers, as read from the
// annotations and labels the strategies write: the answer to "what is live
// here, from which build and commit, since when, and which build was kept
// out". Inspect and InspectBlueGreen read it with get requests only, the
// verbs the function's own Role grants.
type State struct {
	// Live is what takes traffic.
	Live Running `json:"live"`
	// Idle is the blue-green colour not taking traffic; nil with rolling.
	Idle *Running `json:"idle,omitempty"`
	// Deploying is the claim (AnnotationDeploying) of a release on its way
	// to the idle colour, as recorded: "BUILD to COLOUR at TIME".
	Deploying string `json:"deploying,omitempty"`
	// Weights are a canary's HTTPRoute's live weights:
	// "httproute/ROUTE: STABLE 90, CANARY 10".
	Weights string `json:"weights,omitempty"`
	// Records are the builds the target keeps out.
	Records Records `json:"records"`
	// Problems are the records that could not be read, one sentence each:
	// the function refuses to deploy here until they are corrected.
	Problems []string `json:"problems,omitempty"`
}

// Running is one Deployment's release, as it runs and as recorded.
type Running struct {
	// Deployment is its name; Colour its colour, with blue-green.
	Deployment string `json:"deployment"`
	Colour     Colour `json:"colour,omitempty"`
	// Image is the image the container runs.
	Image string `json:"image"`
	// Build is the release recorded (AnnotationBuildID and the others);
	// nil when none is (not deployed by onNewImage yet).
	Build *Build `json:"build,omitempty"`
	// DeployedAt is when onNewImage last changed what records the live
	// release (the Deployment with rolling, the router with blue-green),
	// from the object's managedFields: when it went live. Zero when
	// unknown (never changed by onNewImage, a claim pending on the router)
	// and for the idle colour.
	DeployedAt time.Time `json:"deployedAt,omitzero"`
	// Replicas is the Deployment's desired replica count.
	Replicas int32 `json:"replicas"`
	// Status is kubectl rollout status's sentence for the Deployment.
	Status string `json:"status"`
}

// Build is a build as an object records it.
type Build struct {
	ID         string    `json:"id"`
	CreateTime time.Time `json:"createTime,omitzero"`
	// Commit is the commit it was built from, when recorded.
	Commit string `json:"commit,omitempty"`
}

func (b *Build) release() Release { return Release{BuildID: b.ID, CreateTime: b.CreateTime} }

// Records are the builds a target keeps out, each as recorded; nil when
// there is none. A new kind of record is one more field.
type Records struct {
	// NewestBuild is the rolling high-water mark (LabelNewestBuild): the
	// newest build ever deployed; no build not newer than it is deployed.
	NewestBuild *Build `json:"newestBuild,omitempty"`
	// RolledBack is the build last taken out of traffic, and kept out:
	// the high-water mark when it is not the live build (rolling), or
	// AnnotationRolledBackBuildID (blue-green).
	RolledBack *Build `json:"rolledBack,omitempty"`
}

// Inspect reads t's Deployment: what runs, the release it records, and the
// high-water mark.
func Inspect(ctx context.Context, client kube.Interface, t Target) (State, error) {
	d, err := client.AppsV1().Deployments(t.Namespace).Get(ctx, t.Deployment, metav1.GetOptions{})
	if err != nil {
		return State{}, fmt.Errorf("getting deployment %s/%s: %w", t.Namespace, t.Deployment, err)
	}
	var s State
	if s.Live, err = running(d, t.Container, &s.Problems); err != nil {
		return State{}, err
	}
	liveRead := len(s.Problems) == 0
	s.Live.DeployedAt = changedAt(d)
	newest, err := labelRecord(d)
	if err != nil {
		s.Problems = append(s.Problems, err.Error())
	}
	if newest.ok {
		s.Records.NewestBuild = &Build{ID: newest.id, CreateTime: newest.at}
		if live := s.Live.Build; liveRead && (live == nil || newest.release().newerThan(live.ID, live.CreateTime)) {
			// The mark is above what runs: that build was rolled back.
			s.Records.RolledBack = s.Records.NewestBuild
		}
	}
	return s, nil
}

// InspectBlueGreen reads t's router and colours: which colour is live and
// what each runs and records, a pending claim, and the rolled-back build.
func InspectBlueGreen(ctx context.Context, client kube.Interface, t BlueGreenTarget) (State, error) {
	rt, err := getRouter(ctx, client, t)
	if err != nil {
		return State{}, err
	}
	live, err := rt.colour()
	if err != nil {
		return State{}, err
	}
	var s State
	for _, c := range []Colour{live, live.Other()} {
		name := t.DeploymentFor(c)
		d, err := client.AppsV1().Deployments(t.Namespace).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return State{}, fmt.Errorf("getting deployment %s/%s: %w", t.Namespace, name, err)
		}
		dep, err := running(d, t.Container, &s.Problems)
		if err != nil {
			return State{}, err
		}
		dep.Colour = c
		if c == live {
			s.Live = dep
		} else {
			s.Idle = &dep
		}
	}
	m := rt.meta()
	routerObj := fmt.Sprintf("%s %s/%s", t.RouterKind, m.GetNamespace(), m.GetName())
	// The router records the live release once a switch has happened;
	// before, the live colour does.
	// A router switched back by hand still records as live the build the
	// idle colour holds: that build was rolled back (see readRecords).
	var byHand *Build
	switched := false
	rec, err := annotationRecord(routerObj, m.GetAnnotations(), AnnotationBuildID, AnnotationBuildCreateTime)
	switch {
	case err != nil:
		s.Problems = append(s.Problems, err.Error())
	case !rec.ok:
	case s.Live.Build != nil && rec.id != s.Live.Build.ID && s.Idle.Build != nil && rec.id == s.Idle.Build.ID:
		byHand = &Build{ID: rec.id, CreateTime: rec.at}
	default:
		s.Live.Build = &Build{ID: rec.id, CreateTime: rec.at, Commit: m.GetAnnotations()[AnnotationCommit]}
		switched = true
	}
	s.Deploying = m.GetAnnotations()[AnnotationDeploying]
	if switched && s.Deploying == "" {
		// The router's last change by onNewImage was the switch.
		s.Live.DeployedAt = changedAt(m)
	}
	rec, err = annotationRecord(routerObj, m.GetAnnotations(), AnnotationRolledBackBuildID, AnnotationRolledBackCreateTime)
	switch {
	case err != nil:
		s.Problems = append(s.Problems, err.Error())
	case rec.ok:
		s.Records.RolledBack = &Build{ID: rec.id, CreateTime: rec.at}
	}
	if byHand != nil && (s.Records.RolledBack == nil || byHand.release().newerThan(s.Records.RolledBack.ID, s.Records.RolledBack.CreateTime)) {
		s.Records.RolledBack = byHand
	}
	return s, nil
}

// running reads d's container and recorded release; a record that cannot
// be read is added to problems.
func running(d *appsv1.Deployment, container string, problems *[]string) (Running, error) {
	c, _, err := targetContainer(d, container)
	if err != nil {
		return Running{}, err
	}
	out := Running{Deployment: d.Name, Image: c.Image, Replicas: replicas(d)}
	if status, _, err := Status(d); err != nil {
		out.Status = err.Error()
	} else {
		out.Status = status
	}
	rec, err := deploymentRecord(d)
	if err != nil {
		*problems = append(*problems, err.Error())
	} else if rec.ok {
		out.Build = &Build{ID: rec.id, CreateTime: rec.at, Commit: d.Annotations[AnnotationCommit]}
	}
	return out, nil
}

// changedAt is when FieldManager last changed obj (its managedFields entry
// of an update of the object itself, not a subresource); zero when never.
func changedAt(obj metav1.Object) time.Time {
	var at time.Time
	for _, f := range obj.GetManagedFields() {
		if f.Manager == FieldManager && f.Subresource == "" && f.Time != nil && f.Time.After(at) {
			at = f.Time.UTC()
		}
	}
	return at
}
