package localcluster_test

import (
	"context"
	"fmt"
	"log"
	"os"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/onnewimage/onnewimage/internal/testenv/localcluster"
)

// A test starts a cluster whose apiserver accepts a token for a Google
// service account, and talks to it as that account.
func ExampleStart() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	c, err := localcluster.Start(ctx, localcluster.Options{
		Tokens: map[string]string{"secret-token": "deployer@my-project.iam.gserviceaccount.com"},
		Log:    os.Stderr,
	})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Stop()

	client, err := kubernetes.NewForConfig(c.TokenConfig("secret-token"))
	if err != nil {
		log.Fatal(err)
	}
	// The account has no role yet, so RBAC refuses.
	_, err = client.AppsV1().Deployments("default").List(ctx, metav1.ListOptions{})
	fmt.Println(err)
}
