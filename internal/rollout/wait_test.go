package rollout

import (
	"errors"
	"testing"

	"github.com/google/go-cmp/cmp"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// TestStatus covers the cases of `kubectl rollout status` for a Deployment,
// in its order and with its wording.
func TestStatus(t *testing.T) {
	three, zero := int32(3), int32(0)
	deadline := []appsv1.DeploymentCondition{{Type: appsv1.DeploymentProgressing, Status: corev1.ConditionFalse, Reason: "ProgressDeadlineExceeded",
		Message: `ReplicaSet "web-5d8f" has timed out progressing.`}}
	progressing := []appsv1.DeploymentCondition{{Type: appsv1.DeploymentProgressing, Status: corev1.ConditionTrue, Reason: "NewReplicaSetAvailable"}}
	tests := []struct {
		name     string
		replicas *int32
		status   appsv1.DeploymentStatus
		message  string
		done     bool
		err      string
	}{
		{"new spec not yet observed", &three,
			appsv1.DeploymentStatus{ObservedGeneration: 1, Replicas: 3, UpdatedReplicas: 3, AvailableReplicas: 3},
			"Waiting for deployment spec update to be observed...", false, ""},
		{"a progress deadline reported for an older spec is not read", &three,
			appsv1.DeploymentStatus{ObservedGeneration: 1, Replicas: 3, UpdatedReplicas: 1, AvailableReplicas: 2, Conditions: deadline},
			"Waiting for deployment spec update to be observed...", false, ""},
		{"progress deadline exceeded comes first", &three,
			appsv1.DeploymentStatus{ObservedGeneration: 2, Replicas: 4, UpdatedReplicas: 1, AvailableReplicas: 2, Conditions: deadline},
			"", false, `deployment "web" exceeded its progress deadline`},
		{"not every replica updated", &three,
			appsv1.DeploymentStatus{ObservedGeneration: 2, Replicas: 4, UpdatedReplicas: 2, AvailableReplicas: 2, Conditions: progressing},
			`Waiting for deployment "web" rollout to finish: 2 out of 3 new replicas have been updated...`, false, ""},
		{"old replicas pending termination", &three,
			appsv1.DeploymentStatus{ObservedGeneration: 2, Replicas: 4, UpdatedReplicas: 3, AvailableReplicas: 2},
			`Waiting for deployment "web" rollout to finish: 1 old replicas are pending termination...`, false, ""},
		{"updated replicas not yet available", &three,
			appsv1.DeploymentStatus{ObservedGeneration: 2, Replicas: 3, UpdatedReplicas: 3, AvailableReplicas: 2},
			`Waiting for deployment "web" rollout to finish: 2 of 3 updated replicas are available...`, false, ""},
		{"rolled out", &three,
			appsv1.DeploymentStatus{ObservedGeneration: 2, Replicas: 3, UpdatedReplicas: 3, AvailableReplicas: 3, Conditions: progressing},
			`deployment "web" successfully rolled out`, true, ""},
		{"rolled out, observed generation ahead", &three,
			appsv1.DeploymentStatus{ObservedGeneration: 3, Replicas: 3, UpdatedReplicas: 3, AvailableReplicas: 3},
			`deployment "web" successfully rolled out`, true, ""},
		{"scaled to zero", &zero,
			appsv1.DeploymentStatus{ObservedGeneration: 2},
			`deployment "web" successfully rolled out`, true, ""},
		{"replicas unset: kubectl does not count updated replicas", nil,
			appsv1.DeploymentStatus{ObservedGeneration: 2, Replicas: 1, UpdatedReplicas: 1, AvailableReplicas: 0},
			`Waiting for deployment "web" rollout to finish: 0 of 1 updated replicas are available...`, false, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: "web", Generation: 2}, Spec: appsv1.DeploymentSpec{Replicas: tt.replicas}, Status: tt.status}
			message, done, err := Status(d)
			got := []any{message, done, ""}
			if err != nil {
				got[2] = err.Error()
				if !errors.Is(err, ErrProgressDeadline) {
					t.Errorf("error %v does not wrap ErrProgressDeadline", err)
				}
			}
			if diff := cmp.Diff([]any{tt.message, tt.done, tt.err}, got); diff != "" {
				t.Errorf("Status: message, done, error (-want +got):\n%s", diff)
			}
		})
	}
}
