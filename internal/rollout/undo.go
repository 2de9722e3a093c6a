package rollout

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"strconv"

	appsv1 "k8s.io/api/apps/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"

	"github.com/onnewimage/onnewimage/internal/kube"
)

// The annotations and label the Deployment controller keeps on a Deployment
// and its ReplicaSets.
const (
	annotationRevision = "deployment.kubernetes.io/revision"
	labelTemplateHash  = appsv1.DefaultDeploymentUniqueLabelKey
)

// Undo rolls t's Deployment back to its previous revision, as `kubectl
// rollout undo` does: the pod template of the previous revision's
// ReplicaSet, and the release annotations it recorded. Unlike kubectl it
// keeps every other annotation, and it is a compare-and-set on the
// Deployment's resourceVersion: if the Deployment changed since it was
// read, nothing is rolled back and the error wraps Conflict.
//
// The high-water mark (LabelNewestBuild) stays, and is raised to the build
// rolled back if it was lower, so that delivering that build again does not
// deploy it again; only a newer build does.
//
// Undo lists ReplicaSets, which the function's identity may not: it is for
// operators.
func Undo(ctx context.Context, client kube.Interface, t Target, o Options) (Result, error) {
	d, err := client.AppsV1().Deployments(t.Namespace).Get(ctx, t.Deployment, metav1.GetOptions{})
	if err != nil {
		return Result{}, fmt.Errorf("getting deployment %s/%s: %w", t.Namespace, t.Deployment, err)
	}
	c, _, err := targetContainer(d, t.Container)
	if err != nil {
		return Result{}, err
	}
	res := Result{Outcome: Skipped, Previous: c.Image}
	live, err := deploymentRecord(d)
	if err != nil {
		return Result{}, err
	}
	newest, err := labelRecord(d)
	if err != nil {
		return Result{}, err
	}

	prev, err := previousRevision(ctx, client, d)
	if err != nil {
		return Result{}, err
	}
	template := prev.Spec.Template.DeepCopy()
	delete(template.Labels, labelTemplateHash)
	current := d.Spec.Template.DeepCopy()
	delete(current.Labels, labelTemplateHash)
	if apiequality.Semantic.DeepEqual(template, current) {
		res.Reason = fmt.Sprintf("%s already runs the pod template of revision %s", d.Name, prev.Annotations[annotationRevision])
		return res, nil
	}

	annotations := map[string]any{}
	for _, k := range []string{AnnotationBuildID, AnnotationBuildCreateTime, AnnotationImage, AnnotationCommit, AnnotationChangeCause} {
		annotations[k] = nilIfEmpty(prev.Annotations[k])
	}
	metadata := map[string]any{"resourceVersion": d.ResourceVersion, "annotations": annotations}
	if live.ok && (!newest.ok || live.release().newerThan(newest.id, newest.at)) {
		metadata["labels"] = markLabels(live.id, live.at)
	}
	// The template is replaced whole, as kubectl does: a merge would keep
	// containers, volumes or env the previous revision did not have.
	tmpl, err := runtime.DefaultUnstructuredConverter.ToUnstructured(template)
	if err != nil {
		return Result{}, err
	}
	tmpl["$patch"] = "replace"
	patch := mustJSON(map[string]any{"metadata": metadata, "spec": map[string]any{"template": tmpl}})
	if _, err := client.AppsV1().Deployments(d.Namespace).Patch(ctx, d.Name, types.StrategicMergePatchType, patch, patchOptions(o)); err != nil {
		return Result{}, fmt.Errorf("patching deployment %s/%s (nothing was rolled back; run rollback again if still needed): %w", d.Namespace, d.Name, err)
	}
	res.Patch = patch
	if o.DryRun {
		res.Reason = "dry run: the API server accepted the rollback patch; nothing was changed"
		return res, nil
	}
	from, to := "no recorded build", "no recorded build"
	if live.id != "" {
		from = "build " + live.id
	}
	if id := prev.Annotations[AnnotationBuildID]; id != "" {
		to = "build " + id
	}
	res.Outcome = Deployed
	res.Reason = fmt.Sprintf("rolled %s back from revision %s (%s) to revision %s (%s)",
		d.Name, d.Annotations[annotationRevision], from, prev.Annotations[annotationRevision], to)
	if c, _ := findContainer(&template.Spec, t.Container); c != nil {
		res.Reason += "; it runs " + c.Image
	}
	if newest.ok || live.ok {
		mark := newest
		if _, raised := metadata["labels"]; raised {
			mark = live
		}
		res.Reason += fmt.Sprintf("; only a build newer than %s is deployed again", mark.id)
	}
	return res, nil
}

// previousRevision finds the ReplicaSet of d's revision before the current
// one.
func previousRevision(ctx context.Context, client kube.Interface, d *appsv1.Deployment) (*appsv1.ReplicaSet, error) {
	sel, err := metav1.LabelSelectorAsSelector(d.Spec.Selector)
	if err != nil {
		return nil, fmt.Errorf("deployment %s/%s: %w", d.Namespace, d.Name, err)
	}
	list, err := client.AppsV1().ReplicaSets(d.Namespace).List(ctx, metav1.ListOptions{LabelSelector: sel.String()})
	if err != nil {
		return nil, fmt.Errorf("listing replicasets of deployment %s/%s: %w", d.Namespace, d.Name, err)
	}
	revision := func(rs *appsv1.ReplicaSet) int64 {
		n, _ := strconv.ParseInt(rs.Annotations[annotationRevision], 10, 64)
		return n
	}
	var owned []*appsv1.ReplicaSet
	for i := range list.Items {
		rs := &list.Items[i]
		if metav1.IsControlledBy(rs, d) && revision(rs) > 0 {
			owned = append(owned, rs)
		}
	}
	slices.SortFunc(owned, func(a, b *appsv1.ReplicaSet) int { return cmp.Compare(revision(b), revision(a)) })
	if len(owned) < 2 {
		return nil, fmt.Errorf("%w: deployment %s/%s has no revision before the current one", ErrNoPrevious, d.Namespace, d.Name)
	}
	return owned[1], nil
}
